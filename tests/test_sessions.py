"""Server sessions through the Processor, as the node drives it: registration,
stored replies (hit, miss, stale), bounded memory by deterministic eviction in
log order, and a replica fed only the records ending with the same sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import BUY

from zmqfail import config
from zmqfail.processor import Processed, Processor
from zmqfail.protocol import STATUS_EXPIRED, STATUS_OK, Reply, SessionGrant, decode, decode_as
from zmqfail.sessions import unpack
from zmqfail.txlog.record import TxRecord

pytestmark = pytest.mark.timeout(30)

REPORTS = {"op": "reports"}  # a write that always succeeds and needs no setup


def cfg_with(max_sessions: int = 1024, window: int = 256) -> config.ClusterConfig:
    text = (
        config.render(2, 5700)
        .replace("max_sessions = 1024", f"max_sessions = {max_sessions}")
        .replace("window = 256 ", f"window = {window} ")
    )
    cfg = config.loads(text, Path("/tmp"))
    assert cfg.sessions == config.SessionsConfig(max_sessions, window)
    return cfg


class Pair:
    """A primary Processor and a backup fed only with the records it logged."""

    def __init__(self, cfg: config.ClusterConfig) -> None:
        self.primary = Processor.create(cfg, "a", 1)
        self.backup = Processor.create(cfg, "b", 1)
        self.records: list[bytes] = []

    def _log(self, out: Processed) -> Processed:
        if out.record is not None:
            self.records.append(out.record)
            self.backup.apply_record(TxRecord.decode(out.record))
        return out

    def register(self, client_id: str, nonce: int = 1) -> int:
        out = self._log(self.primary.register(client_id, nonce))
        grant = decode_as(out.reply, SessionGrant)
        assert grant.nonce == nonce
        return grant.session

    def send(self, client_id: str, msg_id: int, body: dict[str, Any], session: int) -> Reply:
        return decode_as(
            self._log(self.primary.submit(client_id, msg_id, body, session)).reply, Reply
        )


def test_a_session_is_the_lsn_of_its_register_record() -> None:
    p = Pair(cfg_with())
    assert p.register("x") == 1
    assert p.register("y") == 2
    rec = TxRecord.decode(p.records[0])
    assert (rec.lsn, rec.client_id, rec.msg_id, rec.body, rec.changes) == (
        1,
        "x",
        0,
        {"nonce": 1},
        [],
    )
    assert p.send("x", 1, BUY, 1).status == STATUS_OK
    assert p.primary.sessions.live["x"].id == p.backup.sessions.live["x"].id == 1


def test_the_same_nonce_again_gets_the_same_session_without_a_record() -> None:
    p = Pair(cfg_with())
    sid = p.register("x", nonce=9)
    out = p.primary.register("x", 9)  # the registration resent after a failover
    assert out.record is None and out.gate_lsn == p.primary.last_lsn  # waits behind the log
    assert decode_as(out.reply, SessionGrant).session == sid
    assert len(p.records) == 1


def test_registering_again_replaces_the_clients_session() -> None:
    p = Pair(cfg_with())
    old = p.register("x", nonce=1)
    assert p.send("x", 1, BUY, old).status == STATUS_OK
    new = p.register("x", nonce=2)  # a restart of the same client id
    assert new != old and len(p.primary.sessions.live) == 1
    rep = p.send("x", 1, BUY, old)  # a resend naming the replaced session
    assert rep.status == STATUS_EXPIRED and rep.result["code"] == "session_expired"
    assert "outcome is unknown" in rep.result["message"]
    assert p.primary.app.describe().tables["orders"] == 1, "not executed again"
    assert p.send("x", 1, BUY, new).status == STATUS_OK  # msg_ids may start over
    assert p.primary.app.describe().tables["orders"] == 2


def test_no_session_is_refused_and_nothing_runs() -> None:
    p = Pair(cfg_with())
    rep = p.send("x", 1, BUY, 0)
    assert rep.status == STATUS_EXPIRED and "register first" in rep.result["message"]
    assert p.records == [] and p.primary.expired == 1


def test_stored_replies_hit_miss_and_queries_are_not_stored() -> None:
    p = Pair(cfg_with())
    sid = p.register("a")
    r = p.send("a", 1, BUY, sid)
    again = p.send("a", 1, {"op": "anything"}, sid)  # a resend: the body is not looked at
    assert again.result == r.result and p.primary.duplicates == 1
    assert unpack(p.backup.sessions.live["a"].replies[1]) == ("ok", r.result)
    q = p.send("a", 2, {"op": "status", "order_id": 1}, sid)  # a query: not stored
    assert q.status == STATUS_OK and 2 not in p.primary.sessions.live["a"].replies
    assert len(p.records) == 2


def test_window_forgets_oldest_and_reports_stale() -> None:
    p = Pair(cfg_with(window=3))
    sid = p.register("a")
    for msg_id in (2, 4, 7, 9):  # gaps are allowed
        assert p.send("a", msg_id, REPORTS, sid).status == STATUS_OK
    s = p.primary.sessions.live["a"]
    assert list(s.order) == [4, 7, 9] and s.evicted == 2
    n = len(p.records)
    assert p.send("a", 2, REPORTS, sid).status == "stale"  # forgotten
    assert p.send("a", 1, REPORTS, sid).status == "stale"  # below the forgotten mark
    assert p.send("a", 7, REPORTS, sid).result == {"reports": []}  # still stored
    assert len(p.records) == n, "nothing stale or stored ran again"
    assert p.send("a", 3, REPORTS, sid).status == STATUS_OK  # a gap above the mark: new
    assert p.primary.sessions.live["a"].evicted == 4


def test_eviction_takes_the_least_recently_active_the_same_on_every_replica() -> None:
    p = Pair(cfg_with(max_sessions=3))
    sids = {c: p.register(c) for c in ("a", "b", "c")}
    p.send("a", 1, REPORTS, sids["a"])  # b is now the least recently active
    p.send("c", 1, REPORTS, sids["c"])
    p.send("a", 2, {"op": "status", "order_id": 1}, sids["a"])  # a query: no activity
    sids["d"] = p.register("d")  # full: evicts b
    assert list(p.primary.sessions.live) == ["a", "c", "d"]
    assert list(p.backup.sessions.live) == ["a", "c", "d"]
    assert p.primary.sessions.evictions == p.backup.sessions.evictions == 1
    assert p.send("b", 1, REPORTS, sids["b"]).status == STATUS_EXPIRED
    sids["e"] = p.register("e")  # evicts a (c and d wrote or registered later)
    assert list(p.backup.sessions.live) == ["c", "d", "e"]
    assert p.backup.digest() == p.primary.digest()


def test_an_evicted_clients_resend_is_refused_never_run_twice() -> None:
    p = Pair(cfg_with(max_sessions=2))
    sid = p.register("x")
    first = p.send("x", 1, BUY, sid)
    assert first.status == STATUS_OK
    p.register("y")
    p.register("z")  # x was the least recently active: evicted
    assert "x" not in p.primary.sessions.live and "x" not in p.backup.sessions.live
    n = len(p.records)
    again = p.send("x", 1, BUY, sid)
    assert again.status == STATUS_EXPIRED
    assert len(p.records) == n and p.primary.app.describe().tables["orders"] == 1
    fresh = p.register("x", nonce=2)  # the client comes back: a new session
    assert p.send("x", 2, BUY, fresh).status == STATUS_OK
    assert p.send("x", 1, BUY, sid).status == STATUS_EXPIRED  # the old one stays dead
    assert p.primary.app.describe().tables["orders"] == 2


def test_snapshot_round_trip_keeps_sessions_and_their_order() -> None:
    cfg = cfg_with(max_sessions=4, window=2)
    p = Pair(cfg)
    sids = {c: p.register(c) for c in "abcdef"}  # a and b evicted
    for i, c in enumerate("dfce"):
        p.send(c, i + 1, REPORTS, sids[c])
        p.send(c, i + 2, BUY, sids[c])
        p.send(c, i + 3, REPORTS, sids[c])
    snap = msgpack.unpackb(
        msgpack.packb(p.primary.snapshot(), use_bin_type=True), raw=False, strict_map_key=False
    )
    copy = Processor.create(cfg, "c", 1, p.primary.last_lsn, snap)
    assert copy.digest() == p.primary.digest() == p.backup.digest()
    assert list(copy.sessions.live) == ["d", "f", "c", "e"]
    assert copy.sessions.live["e"].evicted == p.primary.sessions.live["e"].evicted
    # and it goes on exactly as the original would
    for proc in (copy, p.primary):
        out = proc.register("g", 1)
        assert out.record is not None
    assert list(copy.sessions.live) == list(p.primary.sessions.live) == ["f", "c", "e", "g"]
    small = Processor.create(cfg_with(max_sessions=2, window=1), "c", 1, p.primary.last_lsn, snap)
    assert list(small.sessions.live) == ["c", "e"]  # trimmed by the same rule
    assert all(len(s.order) == 1 for s in small.sessions.live.values())


def test_restore_refuses_another_application_or_an_old_format() -> None:
    cfg = cfg_with()
    snap = Processor.create(cfg, "a", 1).snapshot()
    from zmqfail.errors import ProtocolError

    ledger = config.loads(config.render(2, 5700, app="ledger"), Path("/tmp"))
    with pytest.raises(ProtocolError, match="the snapshot is of application 'orders'"):
        Processor.create(ledger, "a", 1, 0, snap)
    with pytest.raises(ProtocolError, match="unsupported snapshot format"):
        Processor.create(cfg, "a", 1, 0, {"format": 1, "orders": []})


def test_replies_carry_the_servers_epoch_and_name() -> None:
    p = Pair(cfg_with())
    sid = p.register("x")
    p.primary.epoch = 4
    msg = decode(p.primary.submit("x", 1, BUY, sid).reply)
    assert isinstance(msg, Reply) and (msg.epoch, msg.server) == (4, "a")
