"""The client library's shells on real sockets against a fake server (no
node process): the blocking client sends what it submitted before a poll
in one `reqs` frame and takes a `reps` frame; the asyncio client batches the
requests that arrive together and hands each its reply, and its I/O thread
takes a new request as soon as it arrives instead of at the end of a poll."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
import zmq

from zmqfail.client.aio import AsyncClient
from zmqfail.client.sync import Client
from zmqfail.netutil import free_base_port
from zmqfail.protocol import (
    Hello,
    Message,
    Register,
    ReplyBatch,
    Request,
    RequestBatch,
    SessionGrant,
    Welcome,
    batch_requests,
    decode,
    decode_all,
    encode_batch,
    encode_reply,
)

pytestmark = pytest.mark.timeout(60)

BODY = {"op": "new", "instrument": "ABC", "side": "buy", "type": "limit", "qty": 1, "price": "1"}


class FakeServer:
    """A ROUTER that says it is active, grants a session, and (when
    `answer`) answers every request frame with one frame of replies. Every
    request frame it takes is kept, decoded."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], answer: bool = True) -> None:
        port = free_base_port(1)
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(self.endpoint)
        self.answer = answer
        self.frames: list[Message] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        s = self.sock
        while not self.stop.is_set():
            if not s.poll(20):
                continue
            ident, data = s.recv_multipart()
            msg = decode(data)
            if isinstance(msg, Register):
                s.send_multipart([ident, SessionGrant(msg.nonce, 1, 256, 1, "x").encode()])
            elif isinstance(msg, Hello):
                s.send_multipart([ident, Welcome("x", 1, True).encode()])
            else:
                self.frames.append(msg)
                if self.answer:
                    reqs = [r for r in decode_all(data) if isinstance(r, Request)]
                    reps = [encode_reply(r.msg_id, "ok", {"n": r.msg_id}, 1, "x") for r in reqs]
                    one = reps[0] if len(reps) == 1 else encode_batch(ReplyBatch, reps)
                    s.send_multipart([ident, one])

    def requests(self) -> list[int]:
        """The msg_ids of every request taken, in the order taken."""
        ids: list[int] = []
        for f in self.frames:
            if isinstance(f, RequestBatch):
                ids.extend(r.msg_id for r in batch_requests(f) if isinstance(r, Request))
            elif isinstance(f, Request):
                ids.append(f.msg_id)
        return ids

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def server(zctx: zmq.Context[zmq.Socket[bytes]]) -> Iterator[FakeServer]:
    srv = FakeServer(zctx)
    yield srv
    srv.close()


def test_the_blocking_client_sends_its_submits_in_one_frame(
    server: FakeServer, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    with Client([server.endpoint], timeout=5, window=64, ctx=zctx) as c:
        c.connect(5)
        ids = [c.submit({**BODY, "qty": q}) for q in range(1, 33)]
        got: list[int] = []
        while len(got) < len(ids):
            got.extend(r.msg_id for r in c.poll(5.0, raise_on_timeout=True))
    assert sorted(got) == ids
    (frame,) = server.frames  # all 32 went in one frame, answered by one
    assert isinstance(frame, RequestBatch) and server.requests() == ids


def test_the_asyncio_client_batches_and_resolves_each_request(server: FakeServer) -> None:
    async def main() -> list[int]:
        c = AsyncClient([server.endpoint], timeout=10)
        try:
            await c.connect()
            replies = await asyncio.gather(*(c.request({**BODY, "qty": q}) for q in range(64)))
            return [r.result["n"] for r in replies]
        finally:
            await c.close()

    got = asyncio.run(main())
    assert got == list(range(1, 65))  # each coroutine got its own request's reply
    assert sorted(server.requests()) == list(range(1, 65))
    # 64 requests made at once leave in fewer frames than requests.
    assert len(server.frames) < 64
    assert any(isinstance(f, RequestBatch) for f in server.frames)


def test_a_wake_up_ends_the_poll_at_once(
    server: FakeServer, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """The asyncio client's I/O thread sits in `poll`; a new request rings
    its wake-up descriptor. The poll returns then, not at its deadline (here
    far beyond the test's timeout), so the request goes out at once."""
    server.answer = False  # nothing to answer the poll with but the wake-up
    r, w = socket.socketpair()
    try:
        with Client([server.endpoint], timeout=5, ctx=zctx) as c:
            c.connect(5)
            c.submit(BODY)
            c.poller.register(r.fileno(), zmq.POLLIN)
            w.send(b"\0")
            assert c.poll(600.0, raise_on_timeout=True) == []
            assert len(c.session.outstanding) == 1
    finally:
        r.close()
        w.close()
