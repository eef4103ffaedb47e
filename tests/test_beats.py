"""Heartbeats cost little when nothing changes (an idle pair beats 33 times
a second on each link): the frames are encoded again only when something
they say changed, a repeated frame is decoded once, and the loop reads
heartbeats only in the turns that run the failure detector. Each shortcut
must leave what peers and the failover agent see exactly as before."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import cast

import pytest
from test_core import CFG, DEAD, hb, lead_alone, one_node_core

from zmqfail.core.beats import Beats
from zmqfail.core.intake import PeerIntake
from zmqfail.core.leader import Leader
from zmqfail.core.node import NodeCore
from zmqfail.core.peers import PeerTable, Prober
from zmqfail.failover.state import Event, PeerCandidate, Role, State
from zmqfail.protocol import Heartbeat, Register, decode
from zmqfail.sim.cluster import SETTLE, Cluster
from zmqfail.sim.disk import SimDisk
from zmqfail.sim.loop import Loop
from zmqfail.txlog.history import Term

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("quiet_logs")]


def said(core: NodeCore, beats: Beats) -> list[tuple[str, Heartbeat]]:
    out = []
    for link, data in beats.frames(core.agent.fs, core.nlog, core.leader):
        msg = decode(data)
        assert isinstance(msg, Heartbeat)
        out.append((link, msg))
    return out


def test_heartbeat_frames_are_kept_only_while_every_field_is_unchanged() -> None:
    """After each change of anything a heartbeat carries, the kept frames say
    what frames made afresh say; with no change, the very same frames go out."""
    core, _disk, _loop = one_node_core()
    t = lead_alone(core)
    kept = Beats(core.name)
    first = kept.frames(core.agent.fs, core.nlog, core.leader)
    assert kept.frames(core.agent.fs, core.nlog, core.leader) is first
    fs = core.agent.fs

    def write() -> None:
        nonlocal t
        t += 0.01
        client = f"c-{core.nlog.held}"
        core.begin_turn(t)
        core.on_client([(client.encode(), Register(client, 7).encode())], t)
        core.end_turn(t)  # a session record: held moves on

    def set_fs(**fields: object) -> Callable[[], object]:
        """One field of the failover state changed, the others as they are now."""
        return lambda: setattr(core.agent, "fs", replace(core.agent.fs, **fields))  # type: ignore[arg-type]

    changes: list[tuple[str, Callable[[], object]]] = [
        ("candidate", set_fs(candidate=9)),
        ("granted", set_fs(granted=("b", 9))),
        ("epoch", set_fs(epoch=fs.epoch + 1)),
        ("state", set_fs(state=State.HANDOFF)),
        ("back", lambda: setattr(core.agent, "fs", fs)),
        ("write", write),
        ("committed", lambda: setattr(core.nlog, "committed", core.nlog.committed + 1)),
        ("flushed", lambda: setattr(core.nlog, "flushed", core.nlog.flushed + 1)),
        ("held_epoch", lambda: setattr(core.nlog, "held_epoch", core.nlog.held_epoch + 1)),
        ("term", lambda: core.nlog.proc.history.terms.append(Term(99, "b", 5, 10**6))),
    ]
    for what, change in changes:
        before = said(core, kept)
        change()
        now = said(core, kept)
        assert now == said(core, Beats(core.name)), what  # kept == made afresh
        assert now != before, what  # and it did change
        frames = kept.frames(core.agent.fs, core.nlog, core.leader)
        assert kept.frames(core.agent.fs, core.nlog, core.leader) is frames


def test_a_repeated_heartbeat_is_decoded_once_and_still_counts_each_time() -> None:
    peers = PeerTable(("a",), DEAD)
    intake = PeerIntake(peers, Prober(("a",), DEAD, 0.03), lambda: 1, lambda e, p, t: None)
    frame = hb("a", epoch=2).encode()
    intake.on_heartbeats("main", [frame], 1.0)
    view = peers.views["a"]
    first = view.last
    intake.on_heartbeats("main", [bytes(frame)], 1.03)  # equal bytes, another object
    assert view.last is first and view.count == 2 and peers.last_heard("a") == 1.03
    intake.on_heartbeats("main", [b"\x93junk", b"\x93junk"], 1.06)
    assert intake.bad_frames == 2  # a bad frame is refused every time, never kept
    intake.on_heartbeats("main", [hb("a", epoch=1).encode()], 1.09)  # older epoch
    assert view.last is first and view.count == 2 and peers.last_heard("a") == 1.09
    intake.on_heartbeats("main", [hb("a", epoch=3).encode()], 1.12)
    assert view.last is not None and view.last.epoch == 3 and view.count == 3


def test_the_agent_weighs_a_repeated_candidate_heartbeat_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer asking to lead repeats the same frame until it has its votes;
    the decoded heartbeat is then the very same object, and the agent must
    still take each one as news (it may grant later what it refused first)."""
    loop = Loop(seed=1)
    disk = SimDisk(loop, CFG, "a")
    core = NodeCore(CFG, "a", disk, disk.load({}), {}, 0.0)
    fed: list[PeerCandidate] = []
    real = core.agent.feed

    def spy(event: Event, now: float) -> None:
        if isinstance(event, PeerCandidate):
            fed.append(event)
        real(event, now)

    monkeypatch.setattr(core.agent, "feed", spy)
    asking = Heartbeat(
        "b", Role.BACKUP, State.STARTING, 1, 0, 0, 0, "main", [], "", 0, [], 2, "", 0
    )
    frame = asking.encode()
    for i in range(3):
        t = core.ticks.next if i else 0.5  # (at 0.0, "heard at 0.0" reads as never heard)
        core.begin_turn(t)
        assert core.hears_beats(t)
        core.on_heartbeats("main", [bytes(frame)], t)
        core.end_turn(t)
        core.out.clear()
    assert len(fed) == 3, fed


def test_heartbeats_never_wake_the_loop_and_wait_for_the_detectors_turn() -> None:
    """On the simulator (the real shell does not poll its SUB sockets): no
    turn of an idle pair is woken by heartbeats alone, every heartbeat is
    read in a turn that runs the detector, and the pair stays whole."""
    cl = Cluster(seed=3, nodes=2, clients=1, window=1, think=0.0)
    (client,) = cl.clients
    client.sending = False
    cl.start()
    cl.loop.run_until(SETTLE)
    turns = dict.fromkeys(cl.servers, 0)
    for_beats = dict.fromkeys(cl.servers, 0)  # turns with only heartbeats to do
    misread: list[float] = []
    for name, server in cl.servers.items():
        core = server.core
        assert core is not None and core.agent.fs.state is State.NORMAL
        real_turn, real_on = server._turn, core.on_heartbeats

        def counted(
            c: NodeCore, now: float, name: str = name, real: Callable[..., None] = real_turn
        ) -> None:
            server = cl.servers[name]
            inbox, commits = server.inbox, any(server.rep_queue.values())
            turns[name] += 1
            only_beats = inbox and all(k.startswith("beat:") for k, _ in inbox)
            # ...and no timer of its own due: woken by heartbeats alone
            if only_beats and not commits and c.next_deadline(now) > now + 1e-9:
                for_beats[name] += 1
            real(c, now)

        def on_heartbeats(
            link: str,
            frames: list[bytes],
            now: float,
            c: NodeCore = core,
            real: Callable[..., None] = real_on,
        ) -> None:
            if not c.hears_beats(now):
                misread.append(now)
            real(link, frames, now)

        server._turn = counted  # type: ignore[method-assign,assignment]
        core.on_heartbeats = on_heartbeats  # type: ignore[method-assign]
    cl.loop.run_until(cl.loop.now + 5.0)
    assert misread == []
    assert min(turns.values()) > 100  # it did turn: ticks, its own beats, keepalives
    assert for_beats == dict.fromkeys(cl.servers, 0)
    for server in cl.servers.values():
        assert server.core is not None and server.core.agent.fs.state is State.NORMAL


def test_the_backups_in_sync_and_the_handoff_are_part_of_the_key() -> None:
    """What only a leader's heartbeat says: the backups holding everything,
    and the backup a switchover hands over to once it holds all we do."""

    class Peer:
        held = 0

    class Tracker:
        def __init__(self) -> None:
            self.peers = {"b": Peer()}
            self.listing: list[tuple[str, int, int]] = []

        def admitted(self) -> list[tuple[str, int, int]]:
            return list(self.listing)

    class StubLeader:
        def __init__(self) -> None:
            self.tracker = Tracker()
            self.copies: list[str] = []

        def full_copies(self) -> list[str]:
            return list(self.copies)

    core, _disk, _loop = one_node_core()
    lead_alone(core)
    leader = StubLeader()
    kept = Beats(core.name)

    def heard() -> Heartbeat:
        data = kept.frames(core.agent.fs, core.nlog, cast(Leader, leader))[0][1]
        msg = decode(data)
        assert isinstance(msg, Heartbeat)
        return msg

    assert heard().in_sync == []
    leader.copies = ["b"]
    assert heard().in_sync == ["b"]
    core.agent.fs = replace(core.agent.fs, state=State.HANDOFF, handoff_to="b")
    peer = leader.tracker.peers["b"]
    peer.held = core.nlog.held
    assert heard().handoff_to == "b"
    peer.held = -1  # it no longer holds everything: not offered yet
    assert heard().handoff_to == ""
    # The in-sync generations: a new one (an admission, a drop) is a new frame.
    leader.tracker.listing = [("b", 7, 1)]
    assert heard().admitted == [["b", 7, 1]]
    leader.tracker.listing = [("b", 7, 2)]
    assert heard().admitted == [["b", 7, 2]]
