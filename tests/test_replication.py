"""Replication agent logic (ReplicationTracker), driven against a simulated backup
with a fake clock: first contact, pipelining, lost acks and link failover, gaps,
restarts, snapshots, several backups, and random interleavings (hypothesis)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmqfail.replication import (
    LINKS,
    RENEWAL_BITS,
    Action,
    Commit,
    Push,
    ReplicationTracker,
    ResetLink,
    SendSnapshot,
)

pytestmark = pytest.mark.timeout(30)

# Binary-exact durations, so clock arithmetic on floats is exact.
ACK = 1.0
KEEP = 0.5
STEP = 0.125
T0 = 1000.0  # a monotonic clock is far from zero


def make_tracker(
    names: Sequence[str] = ("b1",), max_push: int = 10, in_sync_lag: int = 5
) -> ReplicationTracker:
    return ReplicationTracker.for_peers(
        list(names), ack_timeout=ACK, keepalive=KEEP, max_push=max_push, in_sync_lag=in_sync_lag
    )


@dataclass
class SimBackup:
    """A backup as the tracker sees it through the replicator: records arrive on
    the PUSH of a link (dropped while that link is cut), commit requests on the
    REQ of a link, each answered with the highest consecutive LSN held."""

    name: str = "b1"
    held: int = 0
    applied: list[int] = field(default_factory=list)
    cut: set[str] = field(default_factory=set)
    frozen: bool = False
    delay_pushes: bool = False
    inbox: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: {n: [] for n in LINKS})
    requests: dict[str, int] = field(default_factory=dict)  # link -> asked lsn
    snapshots: list[str] = field(default_factory=list)
    duplicates: int = 0  # records received that were already held (ignored)
    refused: int = 0  # frames cut short at a gap
    incarnation: int = 0  # bumped by restart(), as a new process gets a new id

    def take(self, actions: Iterable[Action]) -> None:
        for act in actions:
            if act.peer != self.name:
                continue
            if isinstance(act, Push):
                assert act.first <= act.last
                if act.link in self.cut:
                    continue
                if self.delay_pushes:
                    self.inbox[act.link].append((act.first, act.last))
                else:
                    self.receive(act.first, act.last)
            elif isinstance(act, Commit):
                # A REQ refuses a second send before the reply to the first.
                assert act.link not in self.requests, f"second commit in flight on {act.link}"
                if act.link not in self.cut:  # on a cut link the request is lost
                    self.requests[act.link] = act.lsn
            elif isinstance(act, ResetLink):
                self.requests.pop(act.link, None)  # the old REQ's reply never arrives
                self.inbox[act.link].clear()  # LINGER 0: queued records are dropped
            else:
                assert isinstance(act, SendSnapshot)
                self.snapshots.append(act.link)

    def receive(self, first: int, last: int) -> None:
        for lsn in range(first, last + 1):
            if lsn <= self.held:
                self.duplicates += 1
                continue
            if lsn > self.held + 1:
                self.refused += 1
                return
            self.applied.append(lsn)
            self.held = lsn

    def flush(self, links: Iterable[str] = LINKS) -> None:
        for link in links:
            frames, self.inbox[link] = self.inbox[link], []
            if link in self.cut:
                continue
            for first, last in frames:
                self.receive(first, last)

    def answer(self, tr: ReplicationTracker, now: float, links: Iterable[str] = LINKS) -> int:
        """Answer the pending commit requests on these links; returns how many."""
        n = 0
        for link in links:
            if link not in self.requests or link in self.cut or self.frozen:
                continue
            lsn = self.requests.pop(link)
            tr.on_ack(
                self.name, link, self.held, self.held < lsn, now, incarnation=self.incarnation
            )
            assert tr.peers[self.name].held <= self.held
            n += 1
        return n

    def install_snapshot(self, lsn: int) -> None:
        self.held = lsn
        self.applied = []

    def restart(self) -> None:
        """Lose the RAM log and every socket; a new process has a new incarnation."""
        self.incarnation += 1
        self.held = 0
        self.applied = []
        self.requests.clear()
        for frames in self.inbox.values():
            frames.clear()


def pump(
    tr: ReplicationTracker,
    sims: Sequence[SimBackup],
    now: float,
    last: int,
    first_kept: int = 1,
) -> list[Action]:
    acts = tr.pump(now, last, first_kept)
    for s in sims:
        s.take(acts)
    return acts


def pushes(acts: Iterable[Action], link: str | None = None) -> list[Push]:
    return [a for a in acts if isinstance(a, Push) and (link is None or a.link == link)]


def commits(acts: Iterable[Action], link: str | None = None) -> list[Commit]:
    return [a for a in acts if isinstance(a, Commit) and (link is None or a.link == link)]


def connect(tr: ReplicationTracker, sims: Sequence[SimBackup], now: float) -> None:
    """First contact: keepalives on both links, answered with nothing held."""
    acts = pump(tr, sims, now, 0)
    assert len(commits(acts)) == 2 * len(sims)
    for s in sims:
        assert s.answer(tr, now) == 2
        assert tr.peers[s.name].heard


def run(
    tr: ReplicationTracker,
    sims: Sequence[SimBackup],
    now: float,
    last: int,
    rounds: int = 100,
    wait_for: Sequence[SimBackup] | None = None,
) -> float:
    """Pump and answer (clock advancing by STEP) until every backup holds `last`."""
    for _ in range(rounds):
        pump(tr, sims, now, last)
        for s in sims:
            s.flush()
            s.answer(tr, now)
        if all(tr.peers[s.name].held == last == s.held for s in wait_for or sims):
            return now
        now += STEP
    raise AssertionError(f"no catch-up to {last}: {[tr.peers[s.name] for s in sims]}")


def assert_exact(sim: SimBackup, last: int, first: int = 1) -> None:
    assert sim.applied == list(range(first, last + 1))
    assert sim.held == last


# ----------------------------------------------------------------- first contact
def test_nothing_is_pushed_before_the_backup_is_heard() -> None:
    tr = make_tracker()
    sim = SimBackup()
    acts = pump(tr, [sim], T0, 25)
    assert acts == [Commit("b1", "main", 0), Commit("b1", "failsafe", 0)]
    assert not tr.peers["b1"].heard
    assert tr.carrying_link() is None
    assert tr.lag(25) is None
    # Unanswered: no second keepalive on either link, still nothing pushed.
    assert pump(tr, [sim], T0 + STEP, 25) == []
    assert sim.held == 0


def test_unheard_backup_does_not_time_out_before_ack_timeout() -> None:
    tr = make_tracker()
    pump(tr, [SimBackup(cut={"main", "failsafe"})], T0, 0)
    assert tr.pump(T0 + ACK - STEP, 0, 1) == []
    acts = tr.pump(T0 + ACK, 0, 1)
    assert ResetLink("b1", "main") in acts
    assert ResetLink("b1", "failsafe") in acts


def test_first_ack_starts_pushes_in_chunks_then_commit_on_carrying_link() -> None:
    tr = make_tracker(max_push=10)
    sim = SimBackup()
    pump(tr, [sim], T0, 25)
    now = T0 + STEP
    assert sim.answer(tr, now, ["main"]) == 1
    assert tr.peers["b1"].heard
    assert pump(tr, [sim], now, 25) == [Push("b1", "main", 1, 10), Commit("b1", "main", 10)]
    # The commit is in flight: more chunks go, no second commit on main.
    assert pump(tr, [sim], now, 25) == [Push("b1", "main", 11, 20)]
    assert pump(tr, [sim], now, 25) == [Push("b1", "main", 21, 25)]
    assert pump(tr, [sim], now, 25) == []
    assert tr.peers["b1"].sent == 25
    assert_exact(sim, 25)
    assert sim.answer(tr, now, ["main"]) == 1
    assert tr.peers["b1"].held == 25
    assert tr.carrying_link() == "main"


def test_pushes_stop_at_max_ahead_beyond_what_the_backup_confirmed() -> None:
    """A backup catching up is fed as it confirms, not handed the whole
    backlog: its queue, and what a link reset pushes again, stay bounded."""
    tr = make_tracker(max_push=10)
    tr.max_ahead = 25
    sim = SimBackup(delay_pushes=True)
    connect(tr, [sim], T0)
    pumped = [pump(tr, [sim], T0, 100) for _ in range(4)]
    assert [a for acts in pumped for a in acts if isinstance(a, Push)] == [
        Push("b1", "main", 1, 10),
        Push("b1", "main", 11, 20),
        Push("b1", "main", 21, 25),
    ]
    assert tr.peers["b1"].sent == 25
    sim.flush()
    sim.answer(tr, T0)  # it holds 25: the window moves
    assert Push("b1", "main", 26, 35) in pump(tr, [sim], T0, 100)


def test_answer_above_the_asked_lsn_moves_held_and_sent_to_it() -> None:
    tr = make_tracker(max_push=10)
    sim = SimBackup(delay_pushes=True)
    connect(tr, [sim], T0)
    pump(tr, [sim], T0, 30)  # 1..10 + commit(10)
    pump(tr, [sim], T0, 30)  # 11..20
    sim.flush()
    sim.answer(tr, T0)
    assert tr.peers["b1"].held == 20
    acts = pump(tr, [sim], T0, 30)
    assert acts == [Push("b1", "main", 21, 30), Commit("b1", "main", 30)]


# ------------------------------------------------------------------ steady state
def test_steady_state_held_follows_and_commit_point_is_backup_held() -> None:
    tr = make_tracker(max_push=4, in_sync_lag=5)
    sim = SimBackup()
    assert tr.commit_point() is None
    connect(tr, [sim], T0)
    now, last = T0, 30  # starts 30 behind, gains one record a round
    expect_sync = False
    for _ in range(60):
        last += 3
        now += STEP
        expect_sync = expect_sync or tr.peers["b1"].held >= last - 5
        pump(tr, [sim], now, last)
        assert sim.answer(tr, now) >= 1
        p = tr.peers["b1"]
        assert p.held == sim.held
        assert p.in_sync is expect_sync
        if expect_sync:
            assert tr.commit_point() == sim.held
        else:
            assert tr.commit_point() is None
        assert tr.lag(last) == last - sim.held
    assert tr.in_sync() == ["b1"]
    now = run(tr, [sim], now, last)
    assert tr.commit_point() == last
    assert_exact(sim, last)
    assert sim.duplicates == 0


def test_commit_point_none_before_any_backup_is_in_sync() -> None:
    tr = make_tracker(names=("b1", "b2"))
    assert tr.commit_point() is None
    assert tr.in_sync() == []
    # Unheard backups are never in sync, even with nothing to replicate.
    tr.pump(T0, 0, 1)
    assert tr.commit_point() is None
    assert tr.in_sync() == []


@pytest.mark.parametrize(("held", "in_sync"), [(0, False), (14, False), (15, True), (20, True)])
def test_in_sync_only_within_in_sync_lag(held: int, in_sync: bool) -> None:
    tr = make_tracker(max_push=100, in_sync_lag=5)
    tr.pump(T0, 20, 1)
    tr.on_ack("b1", "main", held, False, T0)
    tr.on_ack("b1", "failsafe", held, False, T0)
    tr.pump(T0, 20, 1)
    assert tr.peers["b1"].in_sync is in_sync
    assert tr.commit_point() == (held if in_sync else None)
    assert tr.lag(20) == 20 - held


def test_in_sync_is_decided_by_pump_not_by_the_answer() -> None:
    tr = make_tracker(in_sync_lag=5)
    tr.pump(T0, 20, 1)
    tr.on_ack("b1", "main", 20, False, T0)
    assert tr.commit_point() is None
    tr.pump(T0, 20, 1)
    assert tr.commit_point() == 20


def test_a_counted_backup_is_a_full_copy_only_once_it_holds_what_was_acknowledged() -> None:
    """Audit case 3: the primary acknowledged up to 20 alone; a backup within
    the lag counts for commits at once (nothing new is acknowledged without it)
    but may take over only once it holds all 20."""
    tr = make_tracker(max_push=100, in_sync_lag=5)
    tr.pump(T0, 20, 1, committed_lsn=20)
    tr.on_ack("b1", "main", 16, False, T0)
    tr.pump(T0, 21, 1, committed_lsn=20)
    assert tr.in_sync() == ["b1"] and tr.commit_point() == 16
    assert tr.full_copies() == []
    tr.on_ack("b1", "main", 19, False, T0 + 0.01)
    tr.pump(T0 + 0.01, 21, 1, committed_lsn=20)
    assert tr.full_copies() == []
    tr.on_ack("b1", "main", 20, False, T0 + 0.02)
    tr.pump(T0 + 0.02, 21, 1, committed_lsn=20)
    assert tr.full_copies() == ["b1"]
    # Lost and counted again later: the bar is what was acknowledged by then.
    tr.mark_lost("b1")
    assert tr.full_copies() == []
    tr.on_ack("b1", "main", 21, False, T0 + 0.03)
    tr.pump(T0 + 0.03, 24, 1, committed_lsn=23)
    assert tr.in_sync() == ["b1"] and tr.full_copies() == []


# -------------------------------------------------------------------- pipelining
def test_one_commit_in_flight_per_link_while_pushes_continue() -> None:
    tr = make_tracker(max_push=10)
    sim = SimBackup()
    connect(tr, [sim], T0)
    seen: list[Action] = []
    for i in range(6):
        seen += pump(tr, [sim], T0 + i * STEP, 100)  # SimBackup asserts one per link
    assert [(a.first, a.last) for a in pushes(seen)] == [(i, i + 9) for i in range(1, 60, 10)]
    assert commits(seen, "main") == [Commit("b1", "main", 10)]
    assert commits(seen, "failsafe") == [Commit("b1", "failsafe", 0)]  # keepalive at T0 + KEEP
    assert sim.answer(tr, T0 + 6 * STEP, ["main"]) == 1
    acts = pump(tr, [sim], T0 + 6 * STEP, 100)
    assert acts == [Push("b1", "main", 61, 70), Commit("b1", "main", 70)]


def test_keepalive_commit_repeats_only_after_answer_and_keepalive_period() -> None:
    tr = make_tracker()
    sim = SimBackup()
    connect(tr, [sim], T0)
    assert pump(tr, [sim], T0 + KEEP - STEP, 0) == []
    acts = pump(tr, [sim], T0 + KEEP, 0)
    assert acts == [Commit("b1", "main", 0), Commit("b1", "failsafe", 0)]
    assert pump(tr, [sim], T0 + 2 * KEEP, 0) == []  # unanswered, not timed out yet


# ------------------------------------------------------------ failover of links
def fail_main(tr: ReplicationTracker, sim: SimBackup) -> tuple[float, int]:
    """Hold 1..10, cut main, push 11..30 into the cut, time out to failsafe."""
    connect(tr, [sim], T0)
    now = run(tr, [sim], T0, 10)
    assert tr.peers["b1"].held == 10
    sim.cut.add("main")
    t_cut = now + STEP
    acts = pump(tr, [sim], t_cut, 30)
    assert acts[:2] == [Push("b1", "main", 11, 20), Commit("b1", "main", 20)]
    assert pushes(pump(tr, [sim], t_cut + STEP, 30)) == [Push("b1", "main", 21, 30)]
    assert sim.held == 10
    now = t_cut + STEP
    while now < t_cut + ACK - STEP:  # failsafe keepalives keep being answered
        now += STEP
        acts = pump(tr, [sim], now, 30)
        assert not [a for a in acts if isinstance(a, ResetLink | Push)]
        sim.answer(tr, now)
        assert tr.peers["b1"].link == "main"
    now = t_cut + ACK
    acts = pump(tr, [sim], now, 30)
    assert acts[0] == ResetLink("b1", "main")
    assert ResetLink("b1", "failsafe") not in acts
    assert tr.peers["b1"].link == "failsafe"
    assert tr.carrying_link() == "failsafe"
    # Everything after held goes again, on failsafe.
    assert pushes(acts) == [Push("b1", "failsafe", 11, 20)]
    return now, 30


def test_ack_timeout_on_main_moves_to_failsafe_without_loss_or_repeat() -> None:
    tr = make_tracker(max_push=10)
    sim = SimBackup()
    now, last = fail_main(tr, sim)
    now = run(tr, [sim], now, last)
    assert tr.peers["b1"].link == "failsafe"
    assert_exact(sim, last)
    last = 47
    now = run(tr, [sim], now + STEP, last)
    assert_exact(sim, last)
    assert sim.duplicates == 0
    # Main stays cut: its probes time out and reset it, replication stays on failsafe.
    resets = 0
    for _ in range(40):
        now += STEP
        acts = pump(tr, [sim], now, last)
        resets += acts.count(ResetLink("b1", "main"))
        assert not pushes(acts, "main")
        sim.answer(tr, now)
    assert resets >= 2
    assert tr.peers["b1"].link == "failsafe"


def test_main_coming_back_takes_replication_home_without_loss_or_repeat() -> None:
    tr = make_tracker(max_push=10)
    sim = SimBackup()
    now, last = fail_main(tr, sim)
    now = run(tr, [sim], now, last)
    sim.cut.discard("main")
    last = 38
    probes: list[Commit] = []
    for _ in range(40):
        now += STEP
        held_before = tr.peers["b1"].held
        acts = pump(tr, [sim], now, last)
        if tr.peers["b1"].link == "failsafe":
            assert not pushes(acts, "main")
            probes += commits(acts, "main")
            assert all(c.lsn == held_before for c in commits(acts, "main"))
        sim.answer(tr, now)
        if tr.peers["b1"].link == "main":
            break
    assert probes, "main was never probed"
    assert tr.carrying_link() == "main"
    p = tr.peers["b1"]
    assert p.sent == p.held
    last += 15
    acts = pump(tr, [sim], now, last)
    assert pushes(acts) == [Push("b1", "main", p.held + 1, min(p.held + 10, last))]
    now = run(tr, [sim], now, last)
    assert tr.peers["b1"].link == "main"
    assert_exact(sim, last)


def test_switch_back_to_main_resends_what_failsafe_may_have_lost() -> None:
    tr = make_tracker(max_push=10)
    sim = SimBackup(delay_pushes=True)
    now, last = fail_main(tr, sim)
    sim.cut.discard("main")
    for _ in range(40):
        now += STEP
        pump(tr, [sim], now, last)
        sim.inbox["failsafe"].clear()  # the failsafe network loses its records
        sim.answer(tr, now, ["main"])  # and its answers are slow
        if tr.peers["b1"].link == "main":
            break
    assert tr.peers["b1"].link == "main"
    assert sim.held == 10
    acts = pump(tr, [sim], now, last)
    assert pushes(acts) == [Push("b1", "main", 11, 20)]
    now = run(tr, [sim], now, last)
    assert_exact(sim, last)


def test_frozen_backup_resets_both_links_then_recovers() -> None:
    tr = make_tracker(max_push=10)
    sim = SimBackup()
    connect(tr, [sim], T0)
    now = run(tr, [sim], T0, 10)
    sim.frozen = True
    seen: list[Action] = []
    for _ in range(3 * int(ACK / STEP)):
        now += STEP
        seen += pump(tr, [sim], now, 25)
        sim.answer(tr, now)
    assert ResetLink("b1", "main") in seen
    assert ResetLink("b1", "failsafe") in seen
    assert tr.peers["b1"].held == 10
    sim.frozen = False
    now = run(tr, [sim], now, 25)
    assert_exact(sim, 25)


# ------------------------------------------------------------------------- gaps
def test_gap_answer_resends_from_held_plus_one() -> None:
    tr = make_tracker(max_push=4)
    sim = SimBackup(delay_pushes=True)
    connect(tr, [sim], T0)
    assert pump(tr, [sim], T0, 10) == [Push("b1", "main", 1, 4), Commit("b1", "main", 4)]
    assert pump(tr, [sim], T0, 10) == [Push("b1", "main", 5, 8)]
    assert pump(tr, [sim], T0, 10) == [Push("b1", "main", 9, 10)]
    lost = sim.inbox["main"].pop(1)  # 5..8 lost in transit
    assert lost == (5, 8)
    sim.flush()
    assert sim.held == 4
    assert sim.refused == 1  # 9..10 refused: not consecutive
    sim.answer(tr, T0)  # commit(4): ok
    assert tr.peers["b1"].held == 4
    assert pump(tr, [sim], T0, 10) == [Commit("b1", "main", 10)]
    sim.answer(tr, T0)  # commit(10): gap at 4
    p = tr.peers["b1"]
    assert (p.held, p.sent) == (4, 4)
    acts = pump(tr, [sim], T0, 10)
    assert acts == [Push("b1", "main", 5, 8), Commit("b1", "main", 8)]
    assert pump(tr, [sim], T0, 10) == [Push("b1", "main", 9, 10)]
    sim.flush()
    sim.answer(tr, T0)
    assert tr.peers["b1"].held == 10
    assert_exact(sim, 10)
    assert sim.duplicates == 0


def test_gap_answer_with_everything_lost_resends_from_one() -> None:
    tr = make_tracker(max_push=10)
    sim = SimBackup(delay_pushes=True)
    connect(tr, [sim], T0)
    pump(tr, [sim], T0, 10)
    sim.inbox["main"].clear()
    sim.answer(tr, T0)
    assert tr.peers["b1"].sent == 0
    assert pump(tr, [sim], T0, 10) == [Push("b1", "main", 1, 10), Commit("b1", "main", 10)]


# ----------------------------------------------------------------------- restart
def test_backup_restart_is_out_of_sync_and_replays_from_what_it_holds() -> None:
    tr = make_tracker(max_push=10, in_sync_lag=5)
    sim = SimBackup()
    connect(tr, [sim], T0)
    now = run(tr, [sim], T0, 30)
    pump(tr, [sim], now, 30)
    assert tr.commit_point() == 30
    assert tr.in_sync() == ["b1"]
    sim.restart()
    now += KEEP
    acts = pump(tr, [sim], now, 30)
    assert Commit("b1", "main", 30) in acts
    sim.answer(tr, now, ["main"])  # held 0 < 30: it lost its log
    p = tr.peers["b1"]
    assert (p.held, p.sent, p.in_sync) == (0, 0, False)
    assert tr.commit_point() is None
    assert tr.in_sync() == []
    acts = pump(tr, [sim], now, 30)
    assert pushes(acts) == [Push("b1", "main", 1, 10)]
    assert tr.commit_point() is None  # 30 records behind: not in sync again yet
    now = run(tr, [sim], now, 30)
    pump(tr, [sim], now, 30)
    assert tr.commit_point() == 30
    assert_exact(sim, 30)


def test_restart_of_one_backup_leaves_the_other_as_commit_point() -> None:
    tr = make_tracker(names=("b1", "b2"), in_sync_lag=5)
    sims = [SimBackup("b1"), SimBackup("b2")]
    connect(tr, sims, T0)
    now = run(tr, sims, T0, 30)
    pump(tr, sims, now, 30)
    assert tr.commit_point() == 30
    tr.on_ack("b2", "main", 3, True, now, incarnation=99)  # a new process
    assert tr.in_sync() == ["b1"]
    assert tr.commit_point() == 30


# --------------------------------------------------------------------- snapshot
def test_trimmed_records_send_one_snapshot_then_push_after_it() -> None:
    tr = make_tracker(max_push=10)
    sim = SimBackup()
    connect(tr, [sim], T0)
    now = T0
    acts = pump(tr, [sim], now, 50, first_kept=31)
    assert acts == [SendSnapshot("b1", "main")]
    seen: list[Action] = []
    for _ in range(int(3 * KEEP / STEP)):  # keepalives answered, still no 2nd snapshot
        now += STEP
        seen += pump(tr, [sim], now, 55, first_kept=36)
        sim.answer(tr, now)
    assert not [a for a in seen if isinstance(a, SendSnapshot)]
    assert not pushes(seen)
    assert sim.snapshots == ["main"]
    sim.install_snapshot(50)
    tr.on_snapshot_sent("b1", 50)
    acts = pump(tr, [sim], now, 60, first_kept=36)
    assert acts[:2] == [Push("b1", "main", 51, 60), Commit("b1", "main", 60)]
    sim.answer(tr, now)
    assert tr.peers["b1"].held == 60
    assert_exact(sim, 60, first=51)
    assert sim.snapshots == ["main"]


def test_no_snapshot_when_the_next_record_is_the_oldest_kept() -> None:
    tr = make_tracker(max_push=10)
    sim = SimBackup()
    connect(tr, [sim], T0)
    now = run(tr, [sim], T0, 20)
    acts = pump(tr, [sim], now, 25, first_kept=21)
    assert pushes(acts) == [Push("b1", "main", 21, 25)]
    assert sim.snapshots == []


# -------------------------------------------------------------------- mark_lost
def test_mark_lost_drops_the_backup_from_the_commit_point() -> None:
    tr = make_tracker(max_push=10)
    sim = SimBackup()
    connect(tr, [sim], T0)
    now = run(tr, [sim], T0, 20)
    pump(tr, [sim], now, 20)
    assert tr.commit_point() == 20
    tr.mark_lost("b1", gone=True)
    assert tr.in_sync() == []
    assert tr.commit_point() is None
    assert tr.lag(20) is None
    assert tr.carrying_link() is None
    acts = pump(tr, [sim], now, 25)
    assert not pushes(acts)
    assert tr.commit_point() is None
    # If it answers again it is heard again and replication resumes after held.
    now += KEEP
    pump(tr, [sim], now, 25)
    sim.answer(tr, now)
    acts = pump(tr, [sim], now, 25)
    assert pushes(acts) == [Push("b1", "main", 21, 25)]


def test_a_drop_is_final_only_once_the_backup_confirms_it_or_is_gone() -> None:
    """A backup dropped while it lives may still believe a listing that counts
    it in sync: until it says it holds itself to the drop's generation (or is
    judged gone, or a new incarnation of it answers), the commit point stays
    at what it holds, so nothing is acknowledged that it would lack."""
    tr = make_tracker(max_push=10)
    sim = SimBackup()
    connect(tr, [sim], T0)
    now = run(tr, [sim], T0, 20)
    pump(tr, [sim], now, 20)
    admitted = tr.peers["b1"].gen
    assert admitted > 0 and tr.admitted() == [("b1", tr.peers["b1"].incarnation, admitted)]
    tr.mark_lost("b1")
    drop = tr.peers["b1"].gen
    assert drop > admitted and tr.leaving() == ["b1"] and tr.in_sync() == []
    assert tr.full_copies() == []  # never named in the heartbeat's in-sync list
    assert tr.commit_point() == 20  # the primary acknowledges nothing beyond it
    assert not tr.confirm("b1", admitted)  # holding itself to the old listing: not yet
    assert tr.commit_point() == 20
    assert tr.confirm("b1", drop)
    assert tr.commit_point() is None and tr.leaving() == []
    assert not tr.confirm("b1", drop)  # once is enough
    # Gone: final at once, whatever it believed.
    tr2 = make_tracker(max_push=10)
    sim2 = SimBackup()
    connect(tr2, [sim2], T0)
    now = run(tr2, [sim2], T0, 20)
    pump(tr2, [sim2], now, 20)
    tr2.mark_lost("b1")
    tr2.mark_lost("b1", gone=True)
    assert tr2.leaving() == [] and tr2.commit_point() is None


def test_a_drop_is_final_at_once_for_a_backup_never_a_full_copy_or_renewed() -> None:
    """A backup counted but still short of what was acknowledged before it
    counted was never listed in sync at this generation: its drop is final.
    A leaving one whose heartbeat names another incarnation is another
    process (restarted, resynchronised, stalled): final too."""
    tr = make_tracker(max_push=10)
    tr.on_ack("b1", "main", 0, False, T0, incarnation=5)
    tr.pump(T0, 0, 1, committed_lsn=3)  # counted at once; 3 acknowledged before it
    assert tr.in_sync() == ["b1"] and tr.full_copies() == []
    tr.mark_lost("b1")
    assert tr.leaving() == [] and tr.commit_point() is None
    tr.on_ack("b1", "main", 3, False, T0, incarnation=5)
    tr.pump(T0, 3, 1, committed_lsn=3)
    assert tr.full_copies() == ["b1"]
    tr.mark_lost("b1")
    assert tr.leaving() == ["b1"]
    assert not tr.renewed("b1", 5) and not tr.renewed("b1", 0)  # the same process, or unknown
    assert tr.leaving() == ["b1"]
    assert tr.renewed("b1", 6)
    assert tr.leaving() == [] and tr.commit_point() is None


def test_a_late_answer_of_an_earlier_renewal_is_neither_news_nor_a_restart() -> None:
    """A backup's incarnation counts its renewals (a stall, a snapshot, a cut
    log) under its process's nonce. Its answer sent before a renewal may come
    after one sent since, on the other link: the second review saw it taken
    for a restart that lost the RAM log (b dropped at once and resynchronised
    for nothing; a little further behind, and the primary would have
    acknowledged alone while b still counted itself in sync)."""
    old, new = 5 << RENEWAL_BITS, (5 << RENEWAL_BITS) + 1
    tr = make_tracker(max_push=10)
    tr.on_ack("b1", "main", 0, False, T0, incarnation=old)
    tr.pump(T0, 38, 1)
    tr.on_ack("b1", "main", 38, False, T0, incarnation=old)
    tr.pump(T0, 38, 1)
    assert tr.full_copies() == ["b1"]
    gen = tr.gen
    tr.on_ack("b1", "failsafe", 42, False, T0 + 0.1, incarnation=new)
    tr.on_ack("b1", "main", 38, False, T0 + 0.11, incarnation=old)  # late
    assert tr.gen == gen and tr.in_sync() == ["b1"] and tr.peers["b1"].incarnation == new
    assert tr.peers["b1"].held == 42
    # Leaving: a late heartbeat of the old renewal proves nothing, nor does
    # one of another process (it may be older than the answers we hold);
    # a later renewal ends the wait.
    tr.mark_lost("b1")
    assert not tr.renewed("b1", old) and tr.leaving() == ["b1"]
    assert not tr.renewed("b1", 7 << RENEWAL_BITS) and tr.leaving() == ["b1"]
    assert tr.renewed("b1", new + 1) and tr.leaving() == []


def test_a_late_answer_of_a_crashed_process_is_not_a_new_restart() -> None:
    """Fourth review: the backup's process X crashed right after answering on
    a slowed main link; its successor Y answered on failsafe and was counted;
    X's late answer, holding less, was taken for a restart, the backup was
    dropped at once, and the primary acknowledged alone what Y lacked."""
    x, y = 3 << RENEWAL_BITS, 8 << RENEWAL_BITS
    tr = make_tracker(max_push=10)
    tr.on_ack("b1", "main", 0, False, T0, incarnation=x)
    tr.pump(T0, 30, 1)
    tr.on_ack("b1", "main", 30, False, T0, incarnation=x)
    tr.on_ack("b1", "failsafe", 40, False, T0 + 0.1, incarnation=y)  # Y after a restart
    tr.pump(T0 + 0.1, 40, 1)
    assert tr.full_copies() == ["b1"]
    gen = tr.gen
    tr.on_ack("b1", "main", 25, False, T0 + 0.2, incarnation=x)  # X's, late
    assert tr.full_copies() == ["b1"] and tr.gen == gen
    assert tr.peers["b1"].incarnation == y and tr.peers["b1"].held == 40
    assert tr.commit_point() == 40


def test_a_leaving_backup_is_released_by_a_new_incarnation_or_counted_again() -> None:
    tr = make_tracker(max_push=10)
    tr.on_ack("b1", "main", 0, False, T0, incarnation=5)
    tr.pump(T0, 0, 1)
    assert tr.in_sync() == ["b1"]
    tr.mark_lost("b1")
    assert tr.leaving() == ["b1"]
    # Its answers as the same process change nothing.
    tr.on_ack("b1", "main", 0, False, T0, waiting=True, incarnation=5)
    assert tr.leaving() == ["b1"]
    # A new process: the one we dropped is gone, and no listing of it fools the new one.
    tr.on_ack("b1", "main", 0, False, T0, incarnation=6)
    assert tr.leaving() == [] and tr.commit_point() is None
    # A new process that does not follow us yet: the drop is final at once.
    tr.pump(T0, 0, 1)
    assert tr.in_sync() == ["b1"]
    tr.on_ack("b1", "main", 0, False, T0, waiting=True, incarnation=7)
    assert tr.in_sync() == [] and tr.leaving() == []
    tr.on_ack("b1", "main", 0, False, T0, incarnation=6)
    # Counted again (in sync): leaving ends, under a new generation.
    tr.pump(T0, 0, 1)
    gen = tr.peers["b1"].gen
    tr.on_ack("b1", "main", 0, False, T0, waiting=True, incarnation=6)  # stops following us
    assert tr.leaving() == ["b1"] and tr.peers["b1"].gen == gen + 1
    tr.on_ack("b1", "main", 0, False, T0, incarnation=6)
    tr.pump(T0, 0, 1)
    assert tr.in_sync() == ["b1"] and tr.leaving() == [] and tr.peers["b1"].gen == gen + 2


# ---------------------------------------------------------------- two backups
def test_two_backups_commit_point_lag_and_carrying_link() -> None:
    tr = make_tracker(names=("b1", "b2"), max_push=10, in_sync_lag=5)
    b1, b2 = SimBackup("b1"), SimBackup("b2")
    assert tr.carrying_link() is None
    connect(tr, [b1, b2], T0)
    b2.cut.update(LINKS)
    now = run(tr, [b1, b2], T0, 40, wait_for=[b1])
    pump(tr, [b1, b2], now, 40)
    # b2 heard but 40 behind: not in sync, does not hold the commit point back.
    assert tr.in_sync() == ["b1"]
    assert tr.commit_point() == 40
    assert tr.lag(40) == 40
    assert tr.carrying_link() == "main"
    b2.cut.clear()
    now = run(tr, [b1, b2], now, 40)
    pump(tr, [b1, b2], now, 40)
    assert tr.in_sync() == ["b1", "b2"]
    assert tr.commit_point() == 40
    assert tr.lag(40) == 0
    # b2 stops answering: the commit point is the lower of the two helds.
    b2.frozen = True
    now += STEP
    pump(tr, [b1, b2], now, 43)
    b1.answer(tr, now)
    b2.answer(tr, now)
    assert tr.peers["b1"].held == 43
    assert tr.peers["b2"].held == 40
    assert b2.held == 43  # it holds them, but has not said so
    assert tr.commit_point() == 40
    assert tr.lag(43) == 3
    assert_exact(b1, 43)
    assert_exact(b2, 43)


def test_carrying_link_reports_failsafe_after_main_times_out() -> None:
    tr = make_tracker(max_push=10)
    sim = SimBackup()
    fail_main(tr, sim)
    assert tr.carrying_link() == "failsafe"


# ------------------------------------------------------------------------ bugs
def test_late_keepalive_answer_on_failsafe_is_not_a_restart() -> None:
    tr = make_tracker(max_push=10, in_sync_lag=5)
    tr.pump(T0, 0, 1)
    tr.on_ack("b1", "main", 0, False, T0)
    tr.on_ack("b1", "failsafe", 0, False, T0)
    assert tr.pump(T0, 20, 1) == [Push("b1", "main", 1, 10), Commit("b1", "main", 10)]
    tr.on_ack("b1", "main", 10, False, T0)
    assert tr.pump(T0, 20, 1) == [Push("b1", "main", 11, 20), Commit("b1", "main", 20)]
    now = T0 + KEEP
    assert tr.pump(now, 20, 1) == [Commit("b1", "failsafe", 10)]
    # The backup answers the failsafe keepalive while holding 15 (16..20 still on
    # the wire), then main's commit(20) holding 20. The failsafe network is slower:
    # the primary reads main's answer first.
    tr.on_ack("b1", "main", 20, False, now)
    tr.pump(now, 20, 1)
    assert tr.commit_point() == 20
    tr.on_ack("b1", "failsafe", 15, False, now)  # ok: 15 >= 10, but stale
    assert tr.peers["b1"].in_sync
    assert tr.peers["b1"].held == 20
    assert tr.commit_point() == 20


# -------------------------------------------------------------------- hypothesis
# Weighted by repetition: the common events (pump, clock, answers, records) come
# often, failures (drops, losses, cuts, freezes) now and then.
OPS: list[tuple[str, str]] = [
    *[("pump", "")] * 6,
    *[("advance", d) for d in ("0.125", "0.25", "0.5", "1.0")],
    *[(op, link) for op in ("answer", "answer", "flush", "flush") for link in LINKS],
    *[(op, link) for op in ("drop", "lose", "cut", "heal", "heal") for link in LINKS],
    ("freeze", ""),
    ("thaw", ""),
    ("thaw", ""),
    *[("records", n) for n in ("1", "3", "7", "12")],
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.sampled_from(OPS), min_size=5, max_size=120))
def test_random_interleavings_lose_and_repeat_nothing(ops: list[tuple[str, str]]) -> None:
    tr = make_tracker(max_push=7, in_sync_lag=5)
    sim = SimBackup(delay_pushes=True)
    now, last = T0, 0

    def check(acts: list[Action]) -> None:
        for a in pushes(acts):
            assert 1 <= a.first <= a.last <= last
            assert a.last - a.first + 1 <= 7
        assert tr.peers["b1"].held <= sim.held
        assert tr.peers["b1"].sent <= last

    for op, arg in ops:
        if op == "pump":
            check(pump(tr, [sim], now, last))
        elif op == "advance":
            now += float(arg)
        elif op == "answer":
            sim.answer(tr, now, [arg])
        elif op == "drop":
            sim.requests.pop(arg, None)  # the reply is lost: the REQ is stuck
        elif op == "flush":
            sim.flush([arg])
        elif op == "lose":
            sim.inbox[arg].clear()
        elif op == "cut":
            sim.cut.add(arg)
        elif op == "heal":
            sim.cut.discard(arg)
        elif op == "freeze":
            sim.frozen = True
        elif op == "thaw":
            sim.frozen = False
        else:
            last += int(arg)
        assert tr.peers["b1"].held <= sim.held
        assert sim.applied == list(range(1, sim.held + 1))
    # A healed period: everything gets through in the end.
    sim.cut.clear()
    sim.frozen = False
    for _ in range(2000):
        now += STEP
        check(pump(tr, [sim], now, last))
        sim.flush()
        sim.answer(tr, now)
        if tr.peers["b1"].heard and tr.peers["b1"].held == last == sim.held:
            break
    assert_exact(sim, last)
    assert tr.peers["b1"].held == last
    # Healed for a while (no more records): requests lost before the heal time out
    # within ACK, after which nothing is reset and replication is back home on main.
    rounds = int(4 * ACK / STEP)
    for i in range(rounds):
        now += STEP
        acts = pump(tr, [sim], now, last)
        assert not pushes(acts)
        if i >= rounds // 2:
            assert not [a for a in acts if isinstance(a, ResetLink)]
        sim.flush()
        sim.answer(tr, now)
    assert tr.carrying_link() == "main"
    assert tr.commit_point() == last
    assert_exact(sim, last)


def test_backup_with_older_epoch_records_past_our_start_gets_a_snapshot() -> None:
    """A backup that holds records of the old primary beyond the point where our
    epoch began has a history we never had: it is not pushed records, it is
    replaced by a snapshot, and only then counts for commits."""
    tr = make_tracker(in_sync_lag=0)
    tr.epoch, tr.epoch_start = 2, 100
    tr.pump(T0, 120, 1)
    tr.on_ack("b1", "main", 103, False, T0, incarnation=5, last_epoch=1)
    acts = tr.pump(T0, 120, 1)
    assert [type(a).__name__ for a in acts if not isinstance(a, Commit)] == ["SendSnapshot"]
    assert tr.commit_point() is None
    assert tr.pump(T0, 120, 1) == [], "one snapshot at a time"
    tr.on_snapshot_sent("b1", 120)
    tr.on_ack("b1", "main", 120, False, T0 + 0.01, incarnation=6, last_epoch=2)
    tr.pump(T0 + 0.01, 120, 1)
    assert tr.commit_point() == 120


def test_backup_behind_our_start_or_on_our_epoch_is_not_diverged() -> None:
    tr = make_tracker(max_push=100, in_sync_lag=0)
    tr.epoch, tr.epoch_start = 2, 100
    tr.pump(T0, 120, 1)
    tr.on_ack("b1", "main", 90, False, T0, incarnation=5, last_epoch=1)  # a prefix of ours
    assert tr.pump(T0, 120, 1)[0] == Push("b1", "main", 91, 120)
    tr2 = make_tracker(max_push=100, in_sync_lag=0)
    tr2.epoch, tr2.epoch_start = 2, 100
    tr2.pump(T0, 120, 1)
    tr2.on_ack("b1", "main", 110, False, T0, incarnation=5, last_epoch=2)  # ours already
    assert tr2.pump(T0, 120, 1)[0] == Push("b1", "main", 111, 120)
