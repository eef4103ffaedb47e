"""The node core's parts with a fake clock and no sockets: failure detection,
the backup side of replication, the client front, the primary's acks, and a
whole NodeCore over an in-memory disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from zmqfail import config
from zmqfail.core.cadence import TURN_SLACK
from zmqfail.core.follower import FENCED, OK, STRANGER, WAIT, Follower
from zmqfail.core.frontend import TURN_BUDGET, Frontend
from zmqfail.core.intake import PeerIntake
from zmqfail.core.log import NodeLog
from zmqfail.core.node import NodeCore
from zmqfail.core.peers import PauseGuard, PeerTable, Prober
from zmqfail.core.ports import Outbox
from zmqfail.failover.state import Role, State
from zmqfail.processor import Processor
from zmqfail.protocol import (
    AckStatus,
    CommitAck,
    CommitRequest,
    Goodbye,
    Heartbeat,
    Hello,
    Register,
    ReplRecords,
    Reply,
    Request,
    RequestBatch,
    SessionGrant,
    Welcome,
    decode,
    decode_all,
    encode_batch,
)
from zmqfail.sim.disk import SimDisk
from zmqfail.sim.loop import Loop
from zmqfail.txlog.history import EpochHistory, Term
from zmqfail.txlog.record import encode_record

pytestmark = pytest.mark.timeout(60)

CFG = config.loads(config.render(nodes=2, base_port=20000), Path("/nonexistent"))
DEAD = CFG.failover.heartbeat_interval_ms * CFG.failover.heartbeat_misses / 1000
BUY = {"op": "new", "instrument": "ABC", "side": "buy", "type": "limit", "qty": 1, "price": "1"}


def fresh_log() -> NodeLog:
    return NodeLog(Processor.create(CFG, "b", 1), 0, CFG.flush)


def hb(
    name: str, epoch: int = 1, role: Role = Role.BACKUP, state: State = State.NORMAL
) -> Heartbeat:
    return Heartbeat(name, role, state, epoch, 0, 0, 0, "main", [], "", 0, [], 0, "", 0)


# ----------------------------------------------------------- detection
def test_pause_guard_distrusts_silence_after_our_own_pause() -> None:
    g = PauseGuard(DEAD)
    for t in (0.0, 0.03, 0.06):
        g.turn(t)
        assert g.trusted(t)
    g.turn(1.0)  # we did not run for 0.94 s
    assert not g.trusted(1.0) and not g.trusted(1.0 + DEAD - 0.01)
    assert g.trusted(1.0 + DEAD) and g.pauses == 1


def test_peer_table_ages_and_strangers() -> None:
    peers = PeerTable(("a",), DEAD)
    assert peers.age("a", 5.0) == float("inf") and not peers.alive("a", 5.0)
    assert peers.heard(hb("a"), EpochHistory(), "main", 5.0)
    assert peers.alive("a", 5.0 + DEAD - 0.001) and not peers.alive("a", 5.0 + DEAD + 0.01)
    assert not peers.heard(hb("mallory"), EpochHistory(), "main", 5.0)
    # An older epoch's heartbeat refreshes the age but not what we know of it.
    peers.heard(hb("a", epoch=3), EpochHistory(), "failsafe", 6.0)
    peers.heard(hb("a", epoch=2), EpochHistory(), "main", 7.0)
    assert peers.last("a") is not None and peers.last("a").epoch == 3  # type: ignore[union-attr]
    assert peers.age("a", 7.5) == pytest.approx(0.5)


def test_peer_intake_takes_heartbeats_goodbyes_and_probe_answers() -> None:
    """The intake needs only the peer table, the prober, our epoch and where a
    higher one goes: no node core."""
    peers = PeerTable(("a",), DEAD)
    prober = Prober(("a",), DEAD, 0.03)
    higher: list[tuple[int, str, float]] = []
    intake = PeerIntake(peers, prober, lambda: 4, lambda e, p, t: higher.append((e, p, t)))
    intake.on_heartbeats("main", [Goodbye("a", 4).encode(), Goodbye("zed", 4).encode()], 1.0)
    assert intake.said_bye == {"a"} and intake.bad_frames == 1  # a stranger's bye is bad
    garbage = [b"\x01\x02", hb("mallory").encode(), Welcome("a", 4, True).encode()]
    intake.on_heartbeats("failsafe", [*garbage, hb("a").encode()], 2.0)
    assert intake.bad_frames == 4 and peers.last_heard("a") == 2.0
    assert intake.said_bye == set()  # it runs again
    intake.on_heartbeats("main", [Goodbye("a", 4).encode()], 3.0)
    intake.on_ack("a")
    assert intake.said_bye == set()
    answers = [b"\x00", Welcome("b", 9, True).encode(), Welcome("a", 4, True).encode()]
    intake.on_probe_reply("a", answers, 4.0)
    assert intake.bad_frames == 6 and prober.answers == 1 and higher == []
    intake.on_probe_reply("a", [Welcome("a", 5, True).encode()], 5.0)
    assert higher == [(5, "a", 5.0)] and prober.answered_at["a"] == 5.0


# ------------------------------------------------------------ follower
class FollowerRig:
    def __init__(self, verdict: str = OK) -> None:
        self.nlog = fresh_log()
        self.peers = PeerTable(("a",), DEAD)
        self.out = Outbox()
        self.verdict = verdict
        self.installed: list[int] = []
        self.metas = 0
        self.f = Follower(
            "b",
            self.nlog,
            self.peers,
            self.out,
            lambda sender, epoch: self.verdict,
            lambda: (1, 7),
            lambda lsn, e, s, h: self.installed.append(lsn),
            self.save_meta,
        )

    def save_meta(self) -> None:
        self.metas += 1

    def answers(self) -> list[CommitAck]:
        got = [decode(d) for _link, d in self.out.answer]
        self.out.clear()
        assert all(isinstance(a, CommitAck) for a in got)
        return got  # type: ignore[return-value]


def records(first: int, n: int, epoch: int = 1) -> bytes:
    recs = [encode_record(i, epoch, "c-1", i, BUY, [], "ok", {}) for i in range(first, first + n)]
    return ReplRecords("a", epoch, first, recs).encode()


def answers_gap_after_the_wait(r: FollowerRig, asked_at: float, held: int) -> None:
    """A commit for records that never came: nothing until GAP_WAIT, then a gap."""
    r.f.answer_pending(asked_at + 0.019)
    assert r.out.answer == []
    r.f.answer_pending(asked_at + 0.02)
    (ack,) = r.answers()
    assert (ack.status, ack.held) == (AckStatus.GAP, held)


def test_follower_holds_records_of_a_known_term_and_answers_commits() -> None:
    r = FollowerRig()
    r.peers.heard(hb("a"), EpochHistory([Term(1, "a", 9, 1)]), "main", 0.0)
    r.f.on_commit("main", [CommitRequest("a", 1, 3).encode()], 0.0)
    assert r.out.answer == []  # waits a moment for records in flight
    r.f.on_records("main", [records(1, 3)], 0.005)
    (ack,) = r.answers()
    assert (ack.status, ack.held, ack.incarnation) == (AckStatus.OK, 3, 7)
    assert r.nlog.held == 3 and r.metas == 1  # the term was stored before the answer
    r.f.on_commit("main", [CommitRequest("a", 1, 5).encode()], 1.0)
    answers_gap_after_the_wait(r, 1.0, 3)


def test_follower_reports_progress_not_a_gap_while_its_own_queue_holds_records() -> None:
    """A catching-up backup reads a budget of records a turn: a commit asking
    for records still queued unread here gets what it holds at once, with no
    gap (a gap makes the primary push everything again, behind the queue)."""
    r = FollowerRig()
    r.peers.heard(hb("a"), EpochHistory([Term(1, "a", 9, 1)]), "main", 0.0)
    r.f.new_turn()
    r.f.on_records("main", [records(1, 3)], 0.0, more=True)
    r.f.on_commit("main", [CommitRequest("a", 1, 9).encode()], 0.0)
    (ack,) = r.answers()
    assert (ack.status, ack.held) == (AckStatus.OK, 3)
    # The queue ran dry and the records asked for never came: a gap, after the wait.
    r.f.new_turn()
    r.f.on_records("main", [records(4, 2)], 0.01)
    r.f.on_commit("main", [CommitRequest("a", 1, 9).encode()], 0.01)
    answers_gap_after_the_wait(r, 0.01, 5)


def test_one_frame_across_terms_notes_each_term_and_refuses_a_wrong_epoch() -> None:
    """A frame's records are checked against the primary's history once a run
    of one term, and again where its next term begins: also when that term
    has the same epoch (another server's), which only its LSN tells apart."""
    r = FollowerRig()
    terms = [Term(1, "a", 9, 1), Term(1, "c", 5, 4), Term(2, "a", 6, 6)]
    r.peers.heard(hb("a", epoch=2), EpochHistory(terms), "main", 0.0)
    recs = [encode_record(i, 1, "c-1", i, BUY, [], "ok", {}) for i in range(1, 6)]
    recs += [encode_record(i, 2, "c-1", i, BUY, [], "ok", {}) for i in (6, 7)]
    r.f.on_records("main", [ReplRecords("a", 2, 1, recs).encode()], 0.0)
    assert r.nlog.held == 7 and r.f.bad_frames == 0
    assert r.nlog.proc.history.terms == terms
    wrong = [encode_record(8, 1, "c-1", 8, BUY, [], "ok", {})]  # epoch 1 inside term 2
    r.f.on_records("main", [ReplRecords("a", 2, 8, wrong).encode()], 0.0)
    assert r.nlog.held == 7 and r.f.bad_frames == 1


def test_follower_refuses_records_of_a_term_the_primary_does_not_name() -> None:
    r = FollowerRig()
    r.peers.heard(hb("a"), EpochHistory([Term(2, "a", 9, 1)]), "main", 0.0)
    r.f.on_records("main", [records(1, 2, epoch=1)], 0.0)
    assert r.nlog.held == 0 and r.f.bad_frames == 1


@pytest.mark.parametrize(
    ("verdict", "status", "bad", "stale"),
    [
        (STRANGER, AckStatus.WAIT, 1, 0),
        (FENCED, AckStatus.FENCED, 0, 0),
        (WAIT, AckStatus.WAIT, 0, 0),
    ],
)
def test_follower_answers_every_commit_it_refuses(
    verdict: str, status: AckStatus, bad: int, stale: int
) -> None:
    r = FollowerRig(verdict)
    r.f.on_commit("main", [CommitRequest("x", 1, 1).encode()], 0.0)
    (ack,) = r.answers()
    assert ack.status is status and r.f.bad_frames == bad
    r.f.on_records("main", [records(1, 1)], 0.0)
    assert r.nlog.held == 0


def test_follower_answers_malformed_commits_with_a_gap() -> None:
    r = FollowerRig()
    for parts in ([b"x", b"y"], [b"\x93\x01"], [Hello("c", "").encode()]):
        r.f.on_commit("failsafe", parts, 0.0)
    assert [a.status for a in r.answers()] == [AckStatus.GAP] * 3 and r.f.bad_frames == 3


# ------------------------------------------------------------ frontend
class FrontRig:
    def __init__(self, serving: bool) -> None:
        self.nlog = fresh_log()
        self.out = Outbox()
        self.serving = serving
        self.voters: list[bytes] = []
        self.fe = Frontend(
            "b",
            self.nlog,
            self.out,
            lambda: self.serving,
            lambda: 4,
            lambda: "backup/normal",
            self.vote,
        )

    def take(self, frames: list[tuple[bytes, bytes]], now: float) -> None:
        """The frames, and the turns the loop gives what waits past one
        turn's budget."""
        self.fe.new_turn()
        self.fe.on_frames(frames, now)
        while self.fe.backlogged:
            self.fe.new_turn()
            self.fe.work(now)

    def vote(self, ident: bytes, hello: Hello) -> bool:
        ok = ident == hello.client_id.encode()
        if ok:
            self.voters.append(ident)
        return ok

    def sent(self) -> list[Any]:
        got = [m for _i, d in self.out.client for m in decode_all(d)]
        self.out.clear()
        return got


def test_frontend_refuses_requests_when_not_serving_and_counts_votes() -> None:
    r = FrontRig(serving=False)
    r.take(
        [
            (b"c-1", Request("c-1", 1, BUY).encode()),
            (b"c-1", Hello("c-1", "a").encode()),
            (b"x9", Hello("c-1", "a").encode()),
            (b"c-2", Hello("c-2", "").encode()),  # a first connection: no vote
            (b"c-3", b"\x01\x02"),
        ],
        1.0,
    )
    rep, w1, w2, w3, bad = r.sent()
    assert isinstance(rep, Reply) and rep.status == "not_active" and rep.epoch == 4
    assert all(isinstance(w, Welcome) and not w.active for w in (w1, w2, w3))
    assert isinstance(bad, Reply) and bad.status == "error"
    assert (r.fe.votes, r.fe.votes_refused, r.voters) == (1, 1, [b"c-1"])
    assert r.fe.bad_frames == 1 and r.nlog.held == 0


def test_frontend_holds_replies_until_committed() -> None:
    r = FrontRig(serving=True)
    r.take([(b"c-1", Register("c-1", 7).encode())], 1.0)
    assert r.nlog.held == 1 and r.out.client == []  # the registration is a record too
    r.fe.commit(1)
    (grant,) = r.sent()
    assert isinstance(grant, SessionGrant)
    reqs = [(b"c-1", Request("c-1", m, BUY, grant.session).encode()) for m in (1, 2)]
    r.take(reqs, 1.0)
    assert r.nlog.held == 3 and r.out.client == []
    r.fe.commit(2)
    (first,) = r.sent()
    assert first.msg_id == 1
    r.fe.commit(3)
    (second,) = r.sent()
    assert second.msg_id == 2 and r.nlog.committed == 3


def test_frontend_bounds_each_clients_requests_in_flight() -> None:
    """Issue 12.2: a client that never waits for its replies is refused past
    the session window, unprocessed; another client is served meanwhile."""
    r = FrontRig(serving=True)
    r.take([(b"c-1", Register("c-1", 7).encode()), (b"c-2", Register("c-2", 8).encode())], 1.0)
    r.fe.commit(2)
    g1, g2 = r.sent()
    window = r.nlog.proc.sessions.window
    flood = [(b"c-1", Request("c-1", m, BUY, g1.session).encode()) for m in range(1, window + 4)]
    r.take(flood, 1.0)
    refused = r.sent()
    assert [x.msg_id for x in refused] == [window + 1, window + 2, window + 3]
    assert all(x.status == "error" and x.result["code"] == "too_many_in_flight" for x in refused)
    assert r.fe.too_many_in_flight == 3 and r.nlog.proc.applied == 2 + window
    # A resend of an executed request at the bound is answered from its
    # stored reply, never refused: the order was executed.
    r.take([(b"c-1", Request("c-1", 1, BUY, g1.session).encode())], 1.0)
    assert r.sent() == [] and r.fe.too_many_in_flight == 3  # held behind its commit
    # Another client is not held back by c-1's bound.
    r.take([(b"c-2", Request("c-2", 1, BUY, g2.session).encode())], 1.0)
    assert r.sent() == [] and len(r.fe.gate) == window + 2
    # Once c-1's replies are out, the refused msg_id is processed when resent.
    r.fe.commit(r.nlog.proc.last_lsn)
    sent = r.sent()
    assert len(sent) == window + 2
    # msg_id 1 three times: c-1's, c-1's resend (its stored reply), c-2's.
    assert sum(x.msg_id == 1 for x in sent) == 3 and all(x.status == "ok" for x in sent)
    r.take([(b"c-1", Request("c-1", window + 1, BUY, g1.session).encode())], 1.0)
    r.fe.commit(r.nlog.proc.last_lsn)
    (ok,) = r.sent()
    assert ok.msg_id == window + 1 and ok.status == "ok"


def test_frontend_takes_a_turns_budget_of_requests_and_the_rest_in_order_later() -> None:
    """A batch larger than a turn's budget is taken over several turns, in
    arrival order: a request that came after it waits for it."""
    r = FrontRig(serving=True)
    r.take([(b"c-1", Register("c-1", 7).encode()), (b"c-2", Register("c-2", 8).encode())], 1.0)
    r.fe.commit(2)
    g1, g2 = r.sent()
    n = 2 * TURN_BUDGET + 5
    batch = encode_batch(
        RequestBatch, [Request("c-1", m, BUY, g1.session).encode() for m in range(1, n + 1)]
    )
    r.fe.new_turn()
    r.fe.on_frames([(b"c-1", batch), (b"c-2", Request("c-2", 1, BUY, g2.session).encode())], 1.0)
    taken = [r.nlog.proc.applied - 2]
    while r.fe.backlogged:
        r.fe.new_turn()
        r.fe.work(1.0)
        taken.append(r.nlog.proc.applied - 2)
    assert taken == [TURN_BUDGET, 2 * TURN_BUDGET, n + 1]  # c-2 behind c-1's last part
    r.fe.commit(r.nlog.proc.last_lsn)
    sent = r.sent()
    assert [x.msg_id for x in sent] == [*range(1, n + 1), 1] and all(x.status == "ok" for x in sent)


# ------------------------------------------------------------- a whole core
def one_node_core(snapshot_every: int = 200_000) -> tuple[NodeCore, SimDisk, Loop]:
    text = config.render(nodes=1, base_port=20000).replace(
        "snapshot_every_records = 200000", f"snapshot_every_records = {snapshot_every}"
    )
    cfg = config.loads(text, Path("/nonexistent"))
    loop = Loop(seed=1)
    disk = SimDisk(loop, cfg, "a")
    core = NodeCore(cfg, "a", disk, disk.load({}), {}, 0.0)
    disk.on_flushed = lambda lsn: core.on_flushed(lsn, loop.now)
    disk.on_snapshot = lambda lsn, ok: core.on_snapshot_done(lsn, ok)
    return core, disk, loop


def lead_alone(core: NodeCore) -> float:
    t = 0.0
    while core.agent.fs.state.value == "starting":
        t += 0.01
        core.begin_turn(t)
        core.end_turn(t)
    return t


def test_a_lone_fresh_node_leads_and_acknowledges_only_what_is_flushed() -> None:
    core, disk, loop = one_node_core()
    t = lead_alone(core)
    assert (core.agent.fs.role.value, core.agent.fs.state.value) == ("primary", "primary_only")
    assert core.nlog.policy.mode == "sync"  # alone: flush before every acknowledgement
    core.out.clear()
    core.on_client([(b"c-1", Register("c-1", 7).encode())], t)
    core.end_turn(t)
    assert core.out.client == [] and disk.inflight is not None  # waits for the flush
    loop.run_until(t + 0.01)
    core.end_turn(t + 0.01)
    (grant,) = [decode(d) for _i, d in core.out.client]
    assert isinstance(grant, SessionGrant) and disk.last_lsn() == 1
    core.out.clear()
    core.on_client([(b"c-1", Request("c-1", 1, BUY, grant.session).encode())], t + 0.01)
    core.end_turn(t + 0.01)
    assert core.out.client == []
    loop.run_until(t + 0.02)
    core.end_turn(t + 0.02)
    (reply,) = [decode(d) for _i, d in core.out.client]
    assert isinstance(reply, Reply) and reply.status == "ok" and disk.last_lsn() == 2
    assert disk.meta["history"][0][:2] == [1, "a"]  # its term, stored before it wrote


def test_a_busy_lone_node_snapshots_and_its_log_holds_what_each_snapshot_does() -> None:
    """Alone, a flush is in flight nearly all the time under load: a snapshot
    that waited for a quiet moment never came (the log grew without end). A
    snapshot is taken anyway, after the log is made durable up to it, so the
    log stays the complete audit trail."""
    core, disk, loop = one_node_core(snapshot_every=10)
    t = lead_alone(core)
    core.on_client([(b"c-1", Register("c-1", 7).encode())], t)
    core.end_turn(t)
    loop.run_until(t + 0.01)
    t += 0.01
    core.end_turn(t)
    (grant,) = [decode(d) for _i, d in core.out.client]
    assert isinstance(grant, SessionGrant)
    started: list[tuple[int, int]] = []  # (snapshot lsn, the synced log's end then)
    real_snapshot = disk.snapshot

    def snapshot(lsn: int, epoch: int, state_of: Callable[[], dict[str, Any]]) -> bool:
        started.append((lsn, disk.log[-1][0]))
        return real_snapshot(lsn, epoch, state_of)

    disk.snapshot = snapshot  # type: ignore[method-assign]
    for msg_id in range(1, 601):
        core.begin_turn(t)
        core.on_client([(b"c-1", Request("c-1", msg_id, BUY, grant.session).encode())], t)
        core.end_turn(t)
        assert disk.inflight is not None or core.checkpoint.snapshotting  # never a quiet moment
        t += 0.0002  # less than a flush takes
        loop.run_until(t)
    assert core.checkpoint.snapshots >= 5, core.checkpoint.snapshots
    assert all(end >= lsn for lsn, end in started), started


def test_ticks_and_heartbeats_share_turns_on_one_grid() -> None:
    """A beat falls due with a tick (30 ms is six 5 ms ticks), but deadlines
    summed separately differ by float rounding: each beat used to wake the
    loop on its own, a microsecond after its tick. Beats go out with the tick,
    never late and at most TURN_SLACK early, at the configured rate; a stall
    restarts the grid instead of sending the missed beats in a burst."""
    core, _disk, _loop = one_node_core()
    interval = core.beat_interval
    t, turns, beats = 0.0, 0, []
    while t < 1.0:
        core.begin_turn(t)
        core.end_turn(t)
        turns += 1
        if core.out.beat:
            beats.append(t)
        core.out.clear()
        t = max(core.next_deadline(t), t + 1e-6)  # as the simulator's wake-up
    assert turns <= round(1.0 / core.ticks.every) + 1, turns  # no turn for a beat alone
    assert len(beats) == round(1.0 / interval) + 1
    for k, sent in enumerate(beats):
        assert k * interval - TURN_SLACK <= sent <= k * interval + 1e-9, (k, sent)
    # A stall of 0.2 s: one beat at once, the next an interval later.
    t = beats[-1] + 0.2
    for now in (t, t + interval / 2, t + interval):
        core.begin_turn(now)
        core.end_turn(now)
        if core.out.beat:
            beats.append(now)
        core.out.clear()
    assert beats[-2:] == [t, t + interval]
