"""A cut's direction at the edge of a node (zmqfail/node/faults.py, links.py), without
sockets: `Faults` alone, and the reading and sending paths of `Channels`
over fake sockets that record what was sent and hand out what was queued.

A cut `in` must lose everything the node would hear on that channel and
nothing it sends; a cut `out` the reverse; both (the default) everything.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any, cast

import pytest
import zmq

from zmqfail.chaos import Direction
from zmqfail.core.ports import Outbox
from zmqfail.errors import ProtocolError
from zmqfail.node.control import Control
from zmqfail.node.faults import Faults
from zmqfail.node.links import BEAT_HWM, CLIENTS, RECORDS_BUDGET, Channels

LINKS = ("main", "failsafe")


class FakeSock:
    """What Channels uses of a zmq socket: non-blocking reads of a queue, and
    sends appended to `sent`."""

    def __init__(self, inbox: Iterable[bytes] = ()) -> None:
        self.inbox: deque[bytes] = deque(inbox)
        self.sent: list[bytes] = []

    def recv(self, flags: int = 0) -> bytes:
        if not self.inbox:
            raise zmq.Again()
        return self.inbox.popleft()

    def recv_multipart(self, flags: int = 0) -> list[bytes]:
        return [self.recv(flags)]

    def getsockopt(self, opt: int) -> int:
        if opt == zmq.EVENTS:
            return zmq.POLLIN if self.inbox else 0
        return 0

    def send(self, data: bytes, flags: int = 0) -> None:
        if not flags & zmq.SNDMORE:
            self.sent.append(data)


def channels(**inbox: list[bytes]) -> tuple[Channels, dict[str, FakeSock]]:
    """A node's channels over fake sockets; `inbox` queues frames per socket
    name (pull-main, rep-failsafe, sub-main, frontend...)."""
    ch = Channels.__new__(Channels)
    socks = {
        f"{kind}-{lk}": FakeSock(inbox.get(f"{kind}_{lk}", []))
        for kind in ("pull", "rep", "pub", "sub", "push", "req")
        for lk in LINKS
    }
    socks["frontend"] = FakeSock(inbox.get("frontend", []))
    ch.faults = Faults()
    ch.owed, ch.last_answer, ch.delayed = set(), {}, deque()
    ch.undeliverable = ch.bad_framing = 0
    ch.witness, ch.probe, ch._probe_frame = None, {}, b"probe"
    ch._gap_ack = lambda: b"gap"
    ch.frontend = cast(Any, socks["frontend"])
    for kind in ("pull", "rep", "pub", "sub"):
        setattr(ch, kind, {lk: socks[f"{kind}-{lk}"] for lk in LINKS})
    ch.push = cast(Any, {("b", lk): socks[f"push-{lk}"] for lk in LINKS})
    ch.req = cast(Any, {("b", lk): socks[f"req-{lk}"] for lk in LINKS})
    ch.owner = cast(Any, {socks[f"req-{lk}"]: ("b", lk) for lk in LINKS})
    return ch, socks


def outbox() -> Outbox:
    out = Outbox()
    for lk in LINKS:
        out.beat.append((lk, f"beat-{lk}".encode()))
        out.push.append(("b", lk, f"rec-{lk}".encode()))
        out.commit.append(("b", lk, f"commit-{lk}".encode()))
    out.client.append((b"id", b"reply"))
    return out


# ---------------------------------------------------------------- Faults
def test_a_cut_in_one_direction_is_deaf_or_mute_only() -> None:
    f = Faults()
    f.cut_link("main", None, 0.0, Direction.IN)
    assert (f.deaf, f.mute, f.cut, f.one_way()) == ({"main"}, set(), {"main"}, {"main": "in"})
    f.cut_link("main", None, 0.0, Direction.OUT)  # a new cut replaces the direction
    assert (f.deaf, f.mute, f.one_way()) == (set(), {"main"}, {"main": "out"})
    f.cut_link("main", None, 0.0)  # default: both ways, not reported as one-way
    assert (f.deaf, f.mute, f.one_way()) == ({"main"}, {"main"}, {})
    f.heal("main")
    assert (f.deaf, f.mute, f.cut) == (set(), set(), set())


def test_a_one_way_cut_heals_by_itself() -> None:
    f = Faults()
    f.cut_link("failsafe", 2.0, 10.0, Direction.OUT)
    f.cut_link("clients", None, 10.0, Direction.IN)
    assert f.next_deadline() == 12.0
    f.due(11.9)
    assert f.mute == {"failsafe"}
    f.due(12.0)
    assert (f.mute, f.deaf, f.next_deadline()) == (set(), {"clients"}, None)


def test_bad_links_and_directions_are_refused() -> None:
    f = Faults()
    with pytest.raises(ProtocolError, match="link must be one of"):
        f.cut_link("eth0", None, 0.0, Direction.IN)
    with pytest.raises(ValueError, match="direction must be one of both, in, out"):
        Direction.parse("sideways")
    assert (f.deaf, f.mute) == (set(), set())


def test_the_control_command_carries_the_direction() -> None:
    ch, _ = channels()
    ctl = Control(cast(Any, None), ch)  # a cut never asks the core
    res = ctl.handle("cut", {"link": "main", "direction": "in", "for": 5}, 1.0)
    assert res == {"cut": ["main"], "one_way": {"main": "in"}}
    res = ctl.handle("cut", {"link": "failsafe"}, 1.0)
    assert res == {"cut": ["failsafe", "main"], "one_way": {"main": "in"}}
    with pytest.raises(ProtocolError, match="direction must be one of"):
        ctl.handle("cut", {"link": "main", "direction": 1}, 1.0)
    assert ch.faults.one_way() == {"main": "in"}, "a refused cut changes nothing"
    assert ctl.handle("heal", {"link": "main"}, 2.0) == {"cut": ["failsafe"], "one_way": {}}


# ---------------------------------------------------------------- Channels
def test_cut_in_loses_what_the_node_hears_and_nothing_it_sends() -> None:
    ch, socks = channels(
        pull_main=[b"r1"], pull_failsafe=[b"r2"], sub_main=[b"h1"], sub_failsafe=[b"h2"]
    )
    ch.faults.cut_link("main", None, 0.0, Direction.IN)
    assert ch.read_records("main") == ([], False)
    assert ch.read_records("failsafe") == ([b"r2"], False)
    assert ch.read_heartbeats("main") == [] and ch.read_heartbeats("failsafe") == [b"h2"]
    assert socks["pull-main"].inbox == deque(), "drained, not left queued for after the heal"
    ch.carry(outbox(), 0.0)
    for kind, frame in (("pub", "beat"), ("push", "rec"), ("req", "commit")):
        assert socks[f"{kind}-main"].sent == [f"{frame}-main".encode()]
    # An ack arriving on the deaf link is dropped; the other link's is read.
    socks["req-main"].inbox.append(b"ack")
    socks["req-failsafe"].inbox.append(b"ack")
    assert ch.read_ack(cast(Any, socks["req-main"])) is None
    assert ch.read_ack(cast(Any, socks["req-failsafe"])) == ("b", "failsafe", [b"ack"])


def test_cut_out_sends_nothing_and_hears_everything() -> None:
    ch, socks = channels(pull_main=[b"r1"], sub_main=[b"h1"])
    ch.faults.cut_link("main", None, 0.0, Direction.OUT)
    assert ch.read_records("main") == ([b"r1"], False) and ch.read_heartbeats("main") == [b"h1"]
    ch.carry(outbox(), 0.0)
    for kind, frame in (("pub", "beat"), ("push", "rec"), ("req", "commit")):
        assert socks[f"{kind}-main"].sent == []
        assert socks[f"{kind}-failsafe"].sent == [f"{frame}-failsafe".encode()]


def test_a_delayed_record_does_not_slip_out_through_a_later_cut() -> None:
    ch, socks = channels()
    ch.faults.delay("main", 100, None, 0.0)
    ch.carry(outbox(), 0.0)
    ch.faults.cut_link("main", None, 0.05, Direction.OUT)
    ch.carry(Outbox(), 0.2)
    assert socks["push-main"].sent == []


def test_a_rep_answers_a_request_once_either_cut_heals() -> None:
    # Out: the request is heard and processed, the answer is held (a REP
    # cannot take the next request first) and paid after the heal.
    ch, socks = channels(rep_main=[b"c1", b"c2"])
    ch.faults.cut_link("main", None, 0.0, Direction.OUT)
    assert ch.read_commit("main") == [b"c1"]
    out = Outbox()
    out.answer.append(("main", b"a1"))
    ch.carry(out, 0.0)
    assert socks["rep-main"].sent == [] and ch.owed == {"main"}
    assert ch.read_commit("main") is None, "owing an answer, it takes nothing"
    ch.faults.heal("main")
    ch.carry(Outbox(), 0.1)
    assert socks["rep-main"].sent == [b"gap"] and ch.owed == set()
    # In: the request is lost; the REP owes an answer until the heal.
    ch.faults.cut_link("main", None, 0.2, Direction.IN)
    assert ch.read_commit("main") is None and ch.owed == {"main"}
    ch.carry(Outbox(), 0.3)
    assert socks["rep-main"].sent == [b"gap"]
    ch.faults.heal("main")
    ch.carry(Outbox(), 0.4)
    assert socks["rep-main"].sent == [b"gap", b"gap"]


@pytest.mark.parametrize(
    ("direction", "heard", "replied"),
    [(Direction.IN, 0, 1), (Direction.OUT, 1, 0), (Direction.BOTH, 0, 0)],
)
def test_the_client_channel_cut_one_way(direction: Direction, heard: int, replied: int) -> None:
    ch, socks = channels(frontend=[b"id"])
    socks["frontend"].getsockopt = lambda opt: 1 if socks["frontend"].inbox else 0  # type: ignore[method-assign]
    socks["frontend"].inbox.append(b"request")
    ch.faults.cut_link(CLIENTS, None, 0.0, direction)
    assert len(ch.read_frontend()) == heard
    ch.carry(outbox(), 0.0)
    assert len(socks["frontend"].sent) == replied
    assert ch.undeliverable == 1 - replied


def test_a_heartbeat_backlog_is_read_in_one_detector_turn() -> None:
    """Heartbeats are read only when the detector runs; after a stall, every
    beat a SUB can queue goes in that one read, so the next tick sees only
    fresh ones (the old cap of 256 spread a full queue over four ticks)."""
    queued = [b"h%d" % i for i in range(BEAT_HWM)]
    ch, socks = channels(sub_main=list(queued))
    assert ch.read_heartbeats("main") == queued
    assert socks["sub-main"].inbox == deque()


def test_records_are_read_a_budget_a_turn_and_say_when_more_wait() -> None:
    """A catching-up backup must end its turn (and answer commits) within the
    link timeout: records beyond the turn's budget stay queued, and the core
    is told they wait (it reports progress instead of a gap)."""
    big = b"r" * (RECORDS_BUDGET // 2 + 1)
    ch, _ = channels(pull_main=[big, big, big])
    assert ch.read_records("main") == ([big, big], True)
    assert ch.read_records("main") == ([big], False)
    ch, _ = channels(pull_main=[b"r"] * 64)  # the frame count ends a read too
    assert ch.read_records("main") == ([b"r"] * 64, False)
    ch, _ = channels(pull_main=[b"r"] * 65)
    assert ch.read_records("main") == ([b"r"] * 64, True)
