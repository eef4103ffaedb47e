"""In-sync generations (docs/reliability.md): a backup counts itself in sync
only from its primary's listing of its own incarnation at a generation no
older than any it heard, and after its own stall only from a fresh listing;
a primary that dropped a live backup acknowledges alone only once the backup
holds itself to the drop, or is gone. The open loss these close was found by
`tools/sim --unsafe --durability disk` (seeds 600194, 600537, 605477)."""

from __future__ import annotations

import functools
from dataclasses import replace

import pytest
from test_rival_terms import core_of, turns

from zmqfail.config import Durability
from zmqfail.core.node import NodeCore
from zmqfail.failover.state import Role, State
from zmqfail.protocol import Heartbeat, Probe, Welcome, decode
from zmqfail.replication import LINKS, ReplicationTracker
from zmqfail.sim.cluster import SETTLE, Cluster
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


def test_a_backup_that_stalled_is_normal_again_only_under_its_new_incarnation() -> None:
    """600537: b was paused; a judged it gone and acknowledged alone, then
    failed. b must not take over on the listing it held before its pause,
    nor on one that waited in its socket meanwhile (the review's case):
    a stall makes it another incarnation, which no listing before names."""
    b = backup()
    t = hear(b, listing(b, 1, True), 0.01)
    assert state(b) is State.NORMAL
    before = b.incarnation
    queued = listing(b, 1, True)  # sent before a dropped it, read after the pause
    t += b.dead_after  # our own loop stood still
    b.begin_turn(t)
    assert b.guard.pauses == 1 and b.incarnation != before
    b.on_heartbeats("main", [queued], t)
    b.end_turn(t)
    assert state(b) is State.SYNCING
    t = hear(b, queued, t)
    assert state(b) is State.SYNCING
    beat = b.beat_frames.frames(b.agent.fs, b.nlog, None, b.agent.held_gen(), b.incarnation)
    assert decode_hb(beat[0][1]).incarnation == b.incarnation  # what a learns it by
    hear(b, listing(b, 1, True), t)  # a lists the new incarnation: in sync again
    assert state(b) is State.NORMAL


def one_way(c: Cluster, nets: tuple[str, ...]) -> None:
    """Cut what a sends b on these networks (b to a still flows)."""
    for net in nets:
        c.cut("a", "b", net, both=False)


def test_a_stalled_backup_takes_no_listing_queued_during_its_pause() -> None:
    """The review's scripted case (2026-12-02): b paused, a -> b cut on both
    links one way, a judges b gone, acknowledges alone and crashes; b wakes
    with a's listing from before the drop in its socket. With a stall only
    leaving NORMAL (no new incarnation), b was NORMAL again at once, took
    over, and the 20 writes were lost."""

    def faults(c: Cluster) -> None:
        t0 = c.loop.now + 0.2
        c.loop.at(t0, lambda: c.pause("b"))
        c.loop.at(t0 + 0.15, lambda: one_way(c, LINKS))
        c.loop.at(t0 + 1.0, lambda: c.crash("a"))
        c.loop.at(t0 + 1.05, lambda: c.resume("b"))

    for seed in (1, 2):
        out = Cluster(seed, durability=Durability.DISK).run(faults, until=SETTLE + 3.0)
        assert out.violations == [], (seed, [str(v) for v in out.violations])
        assert out.acked > 20


def test_a_primary_runs_alone_through_a_one_way_cut_from_a_stalled_backup() -> None:
    """The review's liveness case: a -> b cut on every network, b paused at
    the cut. b can neither hear a nor take over; a drops it as leaving and
    never hears its generation, but b's heartbeats name its new incarnation
    (the stall renewed it): the process a dropped is gone, a runs alone."""
    acks: list[int] = []

    def faults(c: Cluster) -> None:
        t0 = c.loop.now + 0.2
        c.loop.at(t0, lambda: one_way(c, (*LINKS, "clients")))
        c.loop.at(t0, lambda: c.pause("b"))
        c.loop.at(t0 + 0.2, lambda: c.resume("b"))
        for t in (t0 + 1.0, t0 + 2.2):
            c.loop.at(t, lambda: acks.append(sum(len(cl.acks) for cl in c.clients)))

    Cluster(1, durability=Durability.DISK).run(faults, until=SETTLE + 2.5)
    assert acks[1] > acks[0], f"no acknowledgement for 1.2 s of the cut: {acks}"


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


def test_without_a_new_incarnation_both_scripted_cases_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Planted: a stall (or a snapshot, a cut) only leaves NORMAL and keeps
    the incarnation, as in the first version of the rule: the queued listing
    makes b NORMAL again (writes lost), and a never learns that the process
    it dropped is gone (no acknowledgement through the cut)."""
    monkeypatch.setattr(NodeCore, "_renew", lambda self: self.agent.renewed())
    for case in (
        test_a_stalled_backup_takes_no_listing_queued_during_its_pause,
        test_a_primary_runs_alone_through_a_one_way_cut_from_a_stalled_backup,
    ):
        with pytest.raises(AssertionError):
            case()


def stale_heartbeat_case(seed: int, how: str = "stall") -> list[str]:
    """The second review's case (2026-12-02): b -> a main slowed by 3 s; b
    stalls and renews (or, the third review's, crashes and restarts); a
    learns the new incarnation from a failsafe answer and lists it; then
    a -> b slows more and more, so b never hears the drop; a's commits time
    out and it drops b as leaving. The last heartbeat a holds of b is one of
    the incarnation before (late, or simply the last that came): taken for
    "another process", it ended the wait, a acknowledged alone and crashed,
    and b, NORMAL under its new listing, took over without those writes."""
    dropped: list[float] = []

    def faults(c: Cluster) -> None:
        net = c.net
        t0 = c.loop.now + 0.2
        t1, t2 = t0 + 3.5, t0 + 4.1
        c.loop.at(t0, lambda: net.delay.__setitem__(("b", "a", "main"), 3.0))
        if how == "restart":
            c.loop.at(t1, lambda: c.crash("b"))
            c.loop.at(t1 + 0.2, lambda: c.restart("b"))
        else:
            c.loop.at(t1, lambda: c.pause("b"))
            c.loop.at(t1 + 0.2, lambda: c.resume("b"))

        def ramp(d: float) -> None:
            for n in LINKS:
                net.delay[("a", "b", n)] = d

        for k in range(1, 25):
            c.loop.at(t2 + 0.1 * (k - 1), functools.partial(ramp, 0.1 * k))

        def watch() -> None:
            a = c.servers["a"].core
            if a is None or a.leader is None or dropped or c.loop.now <= t2:
                return
            if not a.leader.tracker.peers["b"].in_sync:
                dropped.append(c.loop.now)
                c.loop.at(c.loop.now + 0.5, lambda: c.crash("a"))

        for i in range(100):
            c.loop.at(t2 + 0.05 * i, watch)

    out = Cluster(seed, durability=Durability.DISK).run(faults, until=SETTLE + 12.0)
    assert dropped, "a never dropped b: the case no longer happens"
    return [str(v) for v in out.violations]


def test_only_a_later_renewal_seen_in_a_heartbeat_ends_leaving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for how in ("stall", "restart"):
        for seed in (1, 2):
            assert stale_heartbeat_case(seed, how) == [], (how, seed)
    # Planted: any other incarnation ends the wait (the rule of 4da59bd and,
    # for another process, of 1be7c7a): both cases lose writes again.

    def unordered(self: ReplicationTracker, peer: str, incarnation: int) -> bool:
        p = self.peers[peer]
        if not p.leaving or not incarnation or incarnation == p.incarnation:
            return False
        p.leaving = False
        return True

    monkeypatch.setattr(ReplicationTracker, "renewed", unordered)
    for how in ("stall", "restart"):
        lost = [v for seed in (1, 2) for v in stale_heartbeat_case(seed, how) if "lost" in v]
        assert lost, how
