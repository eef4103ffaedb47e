"""A node on a thread with real sockets: sessions, requests, dedup across
restart, malformed frames, the control socket, and the data-dir lock."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
import zmq
from conftest import BUY, StartNode

from zmqfail import config
from zmqfail.audit import replay_digest
from zmqfail.client.control import STATUS_KEYS, call
from zmqfail.client.session import ClientState
from zmqfail.client.sync import Client
from zmqfail.errors import NodeError, Unavailable
from zmqfail.protocol import (
    PROTOCOL_VERSION,
    Register,
    Reply,
    Request,
    SessionGrant,
    decode_as,
)
from zmqfail.txlog.recovery import iter_records

pytestmark = pytest.mark.timeout(60)


def raw_dealer(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> zmq.Socket[bytes]:
    s: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    return s


def recv_reply(sock: zmq.Socket[bytes], timeout: float = 5.0) -> Reply:
    assert sock.poll(int(timeout * 1000)), "no reply before the deadline"
    return decode_as(sock.recv(), Reply)


def register(sock: zmq.Socket[bytes], client_id: str, nonce: int = 1) -> int:
    """Open a session by hand, as the client library does; its id."""
    sock.send(Register(client_id, nonce).encode())
    assert sock.poll(5000), "no session granted before the deadline"
    grant = decode_as(sock.recv(), SessionGrant)
    assert grant.nonce == nonce
    return grant.session


def test_orders_are_matched_and_logged(
    cluster_dir: Callable[..., Path], node_threads: StartNode
) -> None:
    cfg = config.load(cluster_dir())
    nt = node_threads(cfg, "a")
    nt.wait_active()
    with Client(cfg, timeout=5) as c:
        r1 = c.request(BUY)
        r2 = c.request({**BUY, "side": "sell", "qty": 4, "price": "9.90"})
    assert (r1.status, r1.result["status"]) == ("ok", "new")
    assert r2.result["status"] == "filled"
    assert r2.result["fills"][0]["price"] == "10.00"  # the maker's price
    assert r1.server == "a" and r1.epoch >= 1
    nt.stop()
    lsns = [lsn for lsn, _ in iter_records(cfg.node("a").data_dir)]
    assert lsns == [1, 2, 3]  # the client's registration, then its two orders


def test_duplicate_answered_from_stored_reply_also_after_restart(
    cluster_dir: Callable[..., Path], node_threads: StartNode, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    cfg = config.load(cluster_dir())
    nt = node_threads(cfg, "a")
    nt.wait_active()
    s = raw_dealer(zctx, cfg.node("a").client)
    req = Request("dup-client", 7, BUY, register(s, "dup-client")).encode()
    s.send(req)
    first = recv_reply(s)
    s.send(req)
    again = recv_reply(s)
    assert first.status == "ok" and again.result == first.result
    nt.stop()
    nt2 = node_threads(cfg, "a")
    nt2.wait_active()
    s.send(req)
    after = recv_reply(s, 10)
    assert after.result == first.result
    status = nt2.node.status()
    assert status["last_lsn"] == 2, "the resend must not create a second order"
    assert status["app"]["tables"]["orders"] == 1


def test_malformed_frames_get_errors_and_node_keeps_serving(
    cluster_dir: Callable[..., Path], node_threads: StartNode, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    cfg = config.load(cluster_dir())
    nt = node_threads(cfg, "a")
    nt.wait_active()
    s = raw_dealer(zctx, cfg.node("a").client)
    v = PROTOCOL_VERSION
    bad_frames = [
        b"",
        b"\xc1garbage",
        msgpack.packb({"not": "an array"}),
        msgpack.packb([99, "req", "c", 1, {}, 1]),
        msgpack.packb([2, "req", "c", 1, {}]),  # protocol 2: before sessions
        msgpack.packb([v, "nope"]),
        msgpack.packb([v, "req", "c", "one", {}, 1]),
        msgpack.packb([v, "req", "c", True, {}, 1]),
        msgpack.packb([v, "req", "", 1, {}, 1]),
        msgpack.packb([v, "req", "c", 1, [1, 2], 1]),
        msgpack.packb([v, "req", "c", 1, {1: 2}, 1]),
        msgpack.packb([v, "req", "c", 1, {}, -1]),
        msgpack.packb([v, "req", "c", 1, {}]),
        msgpack.packb([v, "register", "c", "x"]),
        msgpack.packb([v, "rep", 1, "ok", {}, 1, "x"]),
        msgpack.packb([v, "session", 1, 1, 1, 1, "x"]),
    ]
    for frame in bad_frames:
        s.send(frame)
        rep = recv_reply(s)
        assert rep.status == "error", frame
        assert rep.result["code"] in ("bad_frame", "unexpected")
    s.send_multipart([b"two", b"parts"])  # dropped and counted, no reply possible
    # A bad body is the application's business: a rejection, nothing changes.
    sid = register(s, "c")
    s.send(Request("c", 1, {"op": "new", "instrument": "ABC", "side": "up"}, sid).encode())
    assert recv_reply(s).status == "rejected"
    s.send(Request("c", 2, BUY, sid).encode())
    assert recv_reply(s).status == "ok"
    st = nt.node.status()
    assert st["counters"]["bad_frames"] == len(bad_frames) + 1
    assert st["app"]["tables"]["orders"] == 1


def test_backup_answers_not_active(
    cluster_dir: Callable[..., Path], node_threads: StartNode, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    cfg = config.load(cluster_dir())
    node_threads(cfg, "b")
    s = raw_dealer(zctx, cfg.node("b").client)
    s.send(Request("c", 1, BUY).encode())
    rep = recv_reply(s)
    assert rep.status == "not_active" and rep.server == "b"
    s.send(Register("c", 5).encode())  # no sessions from a backup either
    rep = recv_reply(s)
    assert (rep.status, rep.msg_id) == ("not_active", 0)


def test_control_status_and_stop(cluster_dir: Callable[..., Path], node_threads: StartNode) -> None:
    cfg = config.load(cluster_dir())
    nt = node_threads(cfg, "a")
    nt.wait_active()
    with Client(cfg) as c:
        for i in range(5):
            c.request({**BUY, "qty": 10 + i})
    st = call(cfg.node("a").control, "status", {"digest": True})
    for key in STATUS_KEYS:
        assert key in st
    assert st["last_lsn"] == st["committed_lsn"] == st["flushed_lsn"] == 6  # 1 registration
    assert st["digest"] == nt.node.core.nlog.proc.digest()
    assert call(cfg.node("a").control, "stop") == {"stopping": True}
    nt.thread.join(10)
    assert not nt.thread.is_alive()
    assert replay_digest(cfg.node("a").data_dir, cfg) == st["digest"]


def test_data_dir_is_locked(cluster_dir: Callable[..., Path], node_threads: StartNode) -> None:
    cfg = config.load(cluster_dir())
    node_threads(cfg, "a").wait_active()
    from zmqfail.node.server import Node

    other = Node(cfg, "a", ctx=zmq.Context())
    with pytest.raises(NodeError, match="in use"):
        other.open()
    other.ctx.destroy(linger=0)


def test_request_timeout_when_no_server(cluster_dir: Callable[..., Path]) -> None:
    cfg = config.load(cluster_dir())
    with Client(cfg, timeout=0.3) as c, pytest.raises(Unavailable, match="no active server"):
        c.request(BUY)
    assert c.state is ClientState.LOST


def test_async_client(cluster_dir: Callable[..., Path], node_threads: StartNode) -> None:
    import asyncio

    from zmqfail.client.aio import AsyncClient

    cfg = config.load(cluster_dir())
    node_threads(cfg, "a")

    async def main() -> list[Reply]:
        c = AsyncClient(cfg, timeout=5)
        try:
            return list(await asyncio.gather(*(c.request({**BUY, "qty": q}) for q in (1, 2, 3))))
        finally:
            await c.close()

    replies = asyncio.run(main())
    assert sorted(r.result["remaining"] for r in replies) == [1, 2, 3]
    assert len({r.msg_id for r in replies}) == 3


def test_window_keeps_every_reply(
    cluster_dir: Callable[..., Path], node_threads: StartNode
) -> None:
    """Replies that arrive while submit() waits for room are handed out later, not lost."""
    cfg = config.load(cluster_dir())
    node_threads(cfg, "a")
    got: set[int] = set()
    with Client(cfg, timeout=5, window=4) as c:
        sent = [c.submit({**BUY, "qty": i + 1}) for i in range(60)]
        while c.session.outstanding:
            got.update(r.msg_id for r in c.poll(5))
        got.update(r.msg_id for r in c.poll(0))
    assert got == set(sent)


def test_digest_of_large_tables_comes_from_a_forked_child(
    cluster_dir: Callable[..., Path], node_threads: StartNode
) -> None:
    """Above a few thousand rows the digest is hashed off the loop; the answer is
    the same, and the loop keeps serving meanwhile."""
    from zmqfail.node.digest import INLINE_MAX_ROWS

    cfg = config.load(cluster_dir())
    nt = node_threads(cfg, "a")
    nt.wait_active()
    with Client(cfg, timeout=10, window=64) as c:
        for i in range(INLINE_MAX_ROWS + 200):
            c.submit({**BUY, "qty": 1 + i % 90})
            c.poll(0)
        while c.session.outstanding:
            c.poll(5)
    assert not nt.node.control.digests.small(nt.node.core.nlog.proc)
    st = call(cfg.node("a").control, "status", {"digest": True}, timeout=10)
    assert st["digest"] == nt.node.core.nlog.proc.digest()
    assert not nt.node.control.digests.jobs, "the child was reaped"
