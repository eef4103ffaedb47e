"""In-sync generations (docs/reliability.md): a backup counts itself in sync
only from its primary's listing of its own incarnation at a generation no
older than any it heard, and after its own stall only from a fresh listing;
a primary that dropped a live backup acknowledges alone only once the backup
holds itself to the drop, or is gone. The open loss these close was found by
`tools/sim --unsafe --durability disk` (seeds 600194, 600537, 605477)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_rival_terms import core_of, turns

from zmqfail.core.node import NodeCore
from zmqfail.failover.state import Role, State
from zmqfail.protocol import Heartbeat, Probe, Welcome, decode
from zmqfail.txlog.history import EpochHistory

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("quiet_logs")]


def backup() -> NodeCore:
    return core_of("b")


def listing(b: NodeCore, gen: int, in_sync: bool, incarnation: int | None = None) -> bytes:
    """A heartbeat of primary a at epoch 1 giving b generation `gen`."""
    inc = b.incarnation if incarnation is None else incarnation
    state = State.NORMAL if in_sync else State.PRIMARY_ONLY
    hb = Heartbeat(
        "a", Role.PRIMARY, state, 1, 0, 0, 0, "main", ["b"] if in_sync else [], "", 0, [],
        0, "", 0, [["b", inc, gen]],
    )  # fmt: skip
    return hb.encode()


def hear(b: NodeCore, frame: bytes, t: float) -> float:
    return turns(b, frame, t, n=3)


def state(b: NodeCore) -> State:
    assert b.agent.fs.role is Role.BACKUP
    return b.agent.fs.state


def test_a_listing_of_this_process_makes_a_backup_normal() -> None:
    b = backup()
    hear(b, listing(b, 1, True), 0.01)
    assert state(b) is State.NORMAL
    assert b.agent.held_gen() == ("a", 1)


def test_a_listing_of_another_incarnation_does_not() -> None:
    """600194: b restarted; a's heartbeat still listed the process before."""
    b = backup()
    hear(b, listing(b, 1, True, incarnation=b.incarnation ^ 1), 0.01)
    assert state(b) is State.SYNCING


def test_a_listing_older_than_a_drop_heard_does_not() -> None:
    """605477: the drop came first, the listing from before it late."""
    b = backup()
    t = hear(b, listing(b, 1, True), 0.01)
    t = hear(b, listing(b, 2, False), t)
    assert state(b) is State.SYNCING and b.agent.held_gen() == ("a", 2)
    # The peer table keeps the newer heartbeat; the agent refuses the old one too.
    t = hear(b, listing(b, 1, True), t)
    assert state(b) is State.SYNCING and b.agent.held_gen() == ("a", 2)
    assert b.agent._listed("a", decode_hb(listing(b, 1, True))) is None
    # A new admission counts again.
    hear(b, listing(b, 3, True), t)
    assert state(b) is State.NORMAL and b.agent.held_gen() == ("a", 3)


def decode_hb(frame: bytes) -> Heartbeat:
    msg = decode(frame)
    assert isinstance(msg, Heartbeat)
    return msg


def test_a_drop_told_in_a_probe_answer_ends_normal_and_is_reported() -> None:
    """Both links cut: a's answer to b's probe names the drop; b, having left
    NORMAL, says so in its own answers to a's probes and its heartbeats."""
    b = backup()
    t = hear(b, listing(b, 1, True), 0.01)
    b.on_probe_reply("a", [Welcome("a", 1, True, gen=2).encode()], t)
    assert b.agent.gen_seen == 2
    # Still NORMAL under generation 1 (its detector will judge a's silence):
    # what it reports is the generation its NORMAL stands on, not the drop.
    assert state(b) is State.NORMAL and b.agent.held_gen() == ("a", 1)
    hear(b, listing(b, 1, True), t)
    assert state(b) is State.SYNCING and b.agent.held_gen() == ("a", 2)
    b.out.clear()
    b.on_client([(b"probe:a", Probe("a").encode())], t)
    ((_ident, answer),) = b.out.client
    welcome = decode(answer)
    assert isinstance(welcome, Welcome) and welcome.gen == 2
    beat = b.beat_frames.frames(b.agent.fs, b.nlog, None, b.agent.held_gen())[0][1]
    hb = decode_hb(beat)
    assert (hb.gen_of, hb.gen) == ("a", 2)


def test_a_backup_that_stalled_is_normal_again_only_from_a_fresh_listing() -> None:
    """600537: b was paused; a judged it gone and acknowledged alone, then
    failed. b must not take over on the listing it held before its pause."""
    b = backup()
    t = hear(b, listing(b, 1, True), 0.01)
    assert state(b) is State.NORMAL
    t += b.dead_after  # our own loop stood still
    b.begin_turn(t)
    b.end_turn(t)
    assert b.guard.pauses == 1
    t = max(t, b.ticks.next)
    b.begin_turn(t)
    b.end_turn(t)
    assert state(b) is State.SYNCING
    hear(b, listing(b, 1, True), t)
    assert state(b) is State.NORMAL


def test_the_peer_table_keeps_the_newer_of_one_terms_heartbeats() -> None:
    """Two links deliver one primary's heartbeats in two orders: one with an
    older generation came late and does not replace the newer. A heartbeat
    of another term, or of the process restarted (no longer leading), does."""
    b = backup()
    new = decode_hb(listing(b, 2, False))
    old = decode_hb(listing(b, 1, True))
    table = b.peers
    table.heard(new, EpochHistory(), "main", 1.0)
    table.heard(old, EpochHistory(), "failsafe", 1.01)
    assert table.last("a") is new
    assert table.views["a"].heard_at["failsafe"] == 1.01  # still a sign of life
    restarted = replace(old, role=Role.BACKUP, state=State.STARTING, admitted=[])
    table.heard(restarted, EpochHistory(), "main", 1.02)
    assert table.last("a") is restarted
