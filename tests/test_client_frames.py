"""The client library's shells on real sockets against a fake server (no
node process): the blocking client sends what it submitted before a poll
in one `reqs` frame and takes a `reps` frame; the asyncio client batches the
requests that arrive together and hands each its reply, and its I/O thread
takes a new request as soon as it arrives instead of at the end of a poll."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
import zmq
from fakeserver import ORDER, FakeServer

from zmqfail.client.aio import AsyncClient
from zmqfail.client.sync import Client
from zmqfail.protocol import RequestBatch

pytestmark = pytest.mark.timeout(60)


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
        ids = [c.submit({**ORDER, "qty": q}) for q in range(1, 33)]
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
            replies = await asyncio.gather(*(c.request({**ORDER, "qty": q}) for q in range(64)))
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
            c.submit(ORDER)
            c.poller.register(r.fileno(), zmq.POLLIN)
            w.send(b"\0")
            assert c.poll(600.0, raise_on_timeout=True) == []
            assert len(c.session.outstanding) == 1
    finally:
        r.close()
        w.close()
