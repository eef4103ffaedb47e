"""The client keeps epoch fencing too: after it has seen epoch E, a reply from
an older epoch (a deposed server that woke up) is dropped and the request
waits for the current server's answer."""

from __future__ import annotations

import threading

import pytest
import zmq

from zmqfail.client.sync import Client
from zmqfail.netutil import free_base_port
from zmqfail.protocol import Hello, Register, Reply, Request, SessionGrant, Welcome, decode

pytestmark = pytest.mark.timeout(30)


def router(ctx: zmq.Context[zmq.Socket[bytes]], port: int) -> zmq.Socket[bytes]:
    s: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.LINGER, 0)
    s.bind(f"tcp://127.0.0.1:{port}")
    return s


def recv(sock: zmq.Socket[bytes]) -> tuple[bytes, object]:
    assert sock.poll(5000), "nothing arrived"
    ident, data = sock.recv_multipart()
    return ident, decode(data)


def test_reply_from_an_older_epoch_is_dropped(zctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    base = free_base_port(2)
    old, new = router(zctx, base), router(zctx, base + 1)
    eps = [f"tcp://127.0.0.1:{base}", f"tcp://127.0.0.1:{base + 1}"]
    done = threading.Event()

    def welcome() -> None:  # only the new server (epoch 2) says it is active
        poller = zmq.Poller()
        poller.register(old, zmq.POLLIN)
        poller.register(new, zmq.POLLIN)
        while not done.is_set():
            for srv, _ in poller.poll(20):
                ident, data = srv.recv_multipart()
                msg = decode(data)
                if isinstance(msg, Register):  # the client opens its session
                    grant = SessionGrant(msg.nonce, 1, 64, 2, "x")
                    srv.send_multipart([ident, grant.encode()])
                    continue
                assert isinstance(msg, Hello)
                active, epoch = (True, 2) if srv is new else (False, 1)
                srv.send_multipart(
                    [ident, Welcome("x" if active else "old", epoch, active).encode()]
                )

    t = threading.Thread(target=welcome)
    t.start()
    with Client(eps, timeout=5, ctx=zctx) as c:
        try:
            assert c.connect(5) == "x" and c.epoch == 2
        finally:
            done.set()
            t.join(5)
        msg_id = c.submit({"op": "book", "instrument": "ABC"})
        c.flush()  # a submitted request leaves at the next poll, or now
        ident, req = recv(new)
        assert isinstance(req, Request) and req.msg_id == msg_id
        stale = Reply(msg_id, "ok", {"from": "old"}, 1, "old")
        old.send_multipart([ident, stale.encode()])
        assert c.poll(0.3) == []
        assert c.stale_replies == 1 and msg_id in c.session.outstanding
        new.send_multipart([ident, Reply(msg_id, "ok", {"from": "new"}, 2, "x").encode()])
        got = c.poll(5)
        assert [(r.msg_id, r.result) for r in got] == [(msg_id, {"from": "new"})]
