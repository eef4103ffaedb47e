"""Power loss, told: a client whose answered writes a recovered server does not
know gets one `AckLoss` naming them; unanswered requests are resent and
processed as after any failover; the server counts and logs the gap. Pure
parts on a fake clock (the client core, the session table, the client front);
the process test with kill -9 of both servers is in test_durability_live.py."""

from __future__ import annotations

import logging

import pytest
from test_core import BUY, FrontRig

from zmqfail.client.acks import AckedWrites, AckLoss
from zmqfail.client.core import ClientCore
from zmqfail.client.session import ClientState, Session
from zmqfail.protocol import (
    STATUS_OK,
    Hello,
    RecoverySignal,
    Register,
    Reply,
    Request,
    SessionGrant,
    Welcome,
    decode,
    decode_all,
)
from zmqfail.sessions import SessionTable, store, unknown_acks

pytestmark = pytest.mark.timeout(30)

T0 = 500.0
SID = 9  # the client's session


def connected(n_writes: int, queries: tuple[int, ...] = ()) -> ClientCore:
    """A client connected to server a (index 0) at epoch 1, in session SID,
    answered msg_ids 1..n_writes (those in `queries` as queries: not logged)."""
    core = ClientCore(["a", "b"], Session("c1"), failover_after=0.15, lost_after=5.0)
    core.search(T0)
    core.on_frame(0, Welcome("a", 1, True).encode(), T0)
    reg = decode(core.out[-1][1])
    assert isinstance(reg, Register)
    core.on_frame(0, SessionGrant(reg.nonce, SID, 256, 1, "a").encode(), T0)
    for m in range(1, n_writes + 1):
        assert core.submit({"op": "x"}, T0) == m
        rep = Reply(m, STATUS_OK, {}, 1, "a", logged=m not in queries)
        assert core.on_frame(0, rep.encode(), T0)
    core.out.clear()
    return core


def fail_over(core: ClientCore, now: float) -> None:
    """a goes silent with requests outstanding: the client looks for a server."""
    if not core.session.outstanding:
        core.submit({"op": "x"}, now - 0.19)
    core.tick(now)
    assert core.state is ClientState.FAILING_OVER


def test_power_loss_reports_exactly_the_answered_writes_the_server_lacks() -> None:
    core = connected(10, queries=(9, 10))  # 9 and 10 were queries: never logged
    heard: list[AckLoss] = []
    core.loss_listeners.append(heard.append)
    for _ in range(3):
        core.submit({"op": "x"}, T0 + 0.01)  # 11..13: never answered
    fail_over(core, T0 + 0.2)
    hello = decode(core.out[-1][1])
    assert isinstance(hello, Hello) and (hello.session, hello.acked) == (SID, 8)
    core.out.clear()
    # Both servers lost power; b recovered with the log up to msg_id 5.
    core.on_frame(1, Welcome("b", 3, True, SID, 5).encode(), T0 + 0.3)
    assert core.state is ClientState.CONNECTED
    assert heard == core.acks_lost == [AckLoss("b", 3, SID, 5, True, (6, 7, 8), True)]
    # The unanswered ones are resent, in their session, as after any failover.
    resent = [m for _i, d in core.out for m in decode_all(d)]
    assert [r.msg_id for r in resent if isinstance(r, Request)] == [11, 12, 13]
    assert all(r.session == SID for r in resent if isinstance(r, Request))
    # Told once: the next welcome (a ping) finds nothing more.
    core.on_frame(1, Welcome("b", 3, True, SID, 5).encode(), T0 + 0.4)
    assert len(heard) == 1
    ping = Hello("c1", "", SID, 5)
    assert core._hello("") == ping.encode()


def test_a_normal_failover_tells_nothing() -> None:
    core = connected(20)
    fail_over(core, T0 + 0.2)
    core.on_frame(1, RecoverySignal("b", 2, SID, 20).encode(), T0 + 0.3)
    core.on_frame(1, Welcome("b", 2, True, SID, 25).encode(), T0 + 0.4)
    assert core.state is ClientState.CONNECTED and core.acks_lost == []


def test_the_recovery_signal_tells_too() -> None:
    core = connected(4)
    fail_over(core, T0 + 0.2)
    core.on_frame(1, RecoverySignal("b", 2, SID, 1).encode(), T0 + 0.3)
    assert [x.msg_ids for x in core.acks_lost] == [(2, 3, 4)]


def test_a_session_the_server_never_heard_of_loses_every_answered_write() -> None:
    core = connected(3)
    fail_over(core, T0 + 0.2)
    core.on_frame(1, Welcome("b", 2, True, 0, 0).encode(), T0 + 0.3)
    (loss,) = core.acks_lost
    assert (loss.session_known, loss.known, loss.msg_ids) == (False, 0, (1, 2, 3))


def test_welcomes_from_a_backup_or_an_older_epoch_are_not_believed() -> None:
    core = connected(6)
    core.on_frame(1, Welcome("b", 1, False, SID, 0).encode(), T0)  # not active
    core.on_frame(0, Welcome("a", 0, True, SID, 0).encode(), T0)  # older epoch
    assert core.acks_lost == []
    core.on_frame(0, Welcome("a", 1, True, SID, 6).encode(), T0)  # a ping answer
    assert core.acks_lost == []


def test_a_new_session_starts_a_new_record() -> None:
    w = AckedWrites(limit=4)
    w.start(5)
    for m in range(1, 8):
        w.note(5, m)
    w.note(4, 99)  # a late answer from a session we left
    assert (list(w.ids), w.high, w.dropped) == ([4, 5, 6, 7], 7, 3)
    loss = w.check("a", 2, 5, 2)
    assert loss is not None and loss.msg_ids == (4, 5, 6, 7) and not loss.complete
    w.start(6)
    assert (list(w.ids), w.high) == ([], 0)
    assert w.check("a", 2, 0, 0) is None


def test_unknown_acks_rule() -> None:
    assert unknown_acks(0, 5, 0, 0) == (0, 0)  # no session: nothing to check
    assert unknown_acks(3, 0, 0, 0) == (0, 0)  # nothing answered
    assert unknown_acks(3, 5, 3, 5) == (0, 0)
    assert unknown_acks(3, 5, 3, 7) == (0, 0)
    assert unknown_acks(3, 5, 3, 2) == (3, 5)
    assert unknown_acks(3, 5, 4, 9) == (1, 5)  # another session: all of it


def test_an_evicted_session_is_still_known_with_its_last_msg_id() -> None:
    """Eviction (bounded memory) must not read as a loss: the table keeps the
    last evicted sessions' ids and highest msg_id, in snapshots too."""
    t = SessionTable(max_sessions=2, window=2)
    s = t.register("c1", 1, 10)
    for m in (1, 2, 5):
        store(s, 2, m, STATUS_OK, {})
    assert t.session_of("c1") == (10, 5)
    t.register("c2", 1, 11)
    t.register("c3", 1, 12)  # evicts c1
    assert "c1" not in t.live and t.session_of("c1") == (10, 5)
    again = SessionTable(max_sessions=2, window=2)
    again.restore(t.snapshot())
    assert again.session_of("c1") == (10, 5) and again.session_of("c9") == (0, 0)
    t.register("c1", 2, 13)  # it registers again: the new session is the one told
    assert t.session_of("c1") == (13, 0)
    # A snapshot from before protocol 5 has no ended sessions.
    old = t.snapshot()
    del old["ended"]
    SessionTable(2, 2).restore(old)


def test_the_front_tells_each_client_and_counts_each_gap_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = FrontRig(serving=True)
    r.fe.on_frames([(b"c-1", Register("c-1", 7).encode())], 1.0)
    r.fe.commit(r.nlog.held)
    grant = r.sent()[0]
    assert isinstance(grant, SessionGrant)
    sid = grant.session
    r.fe.on_frames([(b"c-1", Request("c-1", m, BUY, sid).encode()) for m in (1, 2)], 1.0)
    r.fe.commit(r.nlog.held)
    reps = r.sent()
    assert [(x.msg_id, x.logged) for x in reps] == [(1, True), (2, True)]
    query = {"op": "book", "instrument": "ABC"}
    r.fe.on_frames([(b"c-1", Request("c-1", 3, query, sid).encode())], 1.0)
    (q,) = r.sent()
    assert isinstance(q, Reply) and q.status == STATUS_OK and not q.logged
    # The client says it was answered up to 6 (what the lost log held).
    with caplog.at_level(logging.WARNING, "zmqfail.node"):
        r.fe.on_frames([(b"c-1", Hello("c-1", "", sid, 6).encode())] * 2, 1.0)
    w1, w2 = r.sent()
    assert w1 == w2 == Welcome("b", 4, True, sid, 2)
    assert (r.fe.ack_gaps, r.fe.ack_gap_ids) == (1, 4)
    assert "acknowledged requests in 3..6 are lost" in caplog.text
    # Up to date, or a backup's welcome: nothing counted.
    r.fe.on_frames([(b"c-1", Hello("c-1", "", sid, 2).encode())], 1.0)
    r.serving = False
    r.fe.on_frames([(b"c-2", Hello("c-2", "", 77, 9).encode())], 1.0)
    assert r.fe.ack_gaps == 1
    assert [x.session for x in r.sent()] == [sid, 0]
    # The recovery signal carries each client's own session.
    r.fe.recovery_signal(5)
    signals = {ident: decode(d) for ident, d in r.out.client}
    assert signals[b"c-1"] == RecoverySignal("b", 5, sid, 2)
    assert signals[b"c-2"] == RecoverySignal("b", 5, 0, 0)


def test_the_sync_and_asyncio_clients_hand_the_loss_to_the_application() -> None:
    """Both wrappers expose the core's reports and listeners (no server needed:
    the loss is fed to the core as a recovered server's welcome would be)."""
    import asyncio

    from zmqfail.client.aio import AsyncClient
    from zmqfail.client.sync import Client

    endpoint = "tcp://127.0.0.1:9"  # nothing listens: the clients only look
    with Client([endpoint], lost_after=0.5) as c:
        heard: list[AckLoss] = []
        c.add_loss_listener(heard.append)
        c.session.acked.start(3)
        c.session.acked.note(3, 1)
        c.core._check_acks("b", 2, 3, 0)
        assert heard == c.acks_lost == [AckLoss("b", 2, 3, 0, True, (1,), True)]

    async def run() -> list[AckLoss]:
        a = AsyncClient([endpoint], lost_after=0.5)
        got: list[AckLoss] = []
        a.add_loss_listener(got.append)
        core = a._client.core
        core.session.acked.start(4)
        core.session.acked.note(4, 7)
        core._check_acks("a", 5, 0, 0)
        assert a.acks_lost == got
        await a.close()
        return got

    (loss,) = asyncio.run(run())
    assert (loss.session, loss.session_known, loss.msg_ids) == (4, False, (7,))


def test_an_expired_session_is_no_loss() -> None:
    """Evicted while the client was away: its next request is answered
    `expired` and it registers again. Until the new session is granted the
    server already holds the new one: that must not read as a loss of the
    old session's writes (they are in the log)."""
    core = connected(5)
    core.submit({"op": "x"}, T0)  # 6
    core.on_frame(0, Reply(6, "expired", {}, 1, "a").encode(), T0)
    reg = decode(core.out[-1][1])
    assert isinstance(reg, Register) and core.session.session == 0
    core.on_frame(0, Welcome("a", 1, True, 12, 0).encode(), T0)  # a ping's answer
    assert core.acks_lost == []
    core.on_frame(0, SessionGrant(reg.nonce, 12, 256, 1, "a").encode(), T0)
    assert core.session.acked.session == 12 and core.acks_lost == []
