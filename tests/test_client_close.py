"""Closing an asyncio client ends its I/O thread at once, whatever the
thread waits for, and fails what is unanswered with ClientClosed. Before,
close() queued a stop that the thread read only with room in its window
and after it had connected: against a cluster that was down, or a full
window with a silent server, close() waited its 10 s bound and returned
with the thread and its sockets still alive, and the pending requests'
coroutines waited for their own timeouts. Fake servers, no node process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from fakeserver import ORDER, FakeServer

from zmqfail.client.aio import AsyncClient
from zmqfail.client.shards import AsyncShardedClient
from zmqfail.config import loads, render_shards
from zmqfail.errors import ClientClosed, RequestTimeout
from zmqfail.netutil import free_base_port

pytestmark = pytest.mark.timeout(60)

LONG = 30.0  # every timeout of the clients: only close() can end these waits


def io_threads() -> int:
    return sum(t.name == "zmqfail-aio" and t.is_alive() for t in threading.enumerate())


async def wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def close_and_time(c: AsyncClient | AsyncShardedClient) -> float:
    t0 = time.monotonic()
    await c.close()
    return time.monotonic() - t0


@pytest.fixture
def silent(zctx: zmq.Context[zmq.Socket[bytes]]) -> Iterator[FakeServer]:
    srv = FakeServer(zctx, answer=False)  # grants sessions, never answers a request
    yield srv
    srv.close()


def test_close_while_no_server_answers_ends_the_thread_and_fails_the_request() -> None:
    async def main() -> None:
        before = io_threads()
        c = AsyncClient(
            [f"tcp://127.0.0.1:{free_base_port(1)}"], timeout=LONG, lost_after=LONG
        )  # nothing listens: the thread looks for a server for LONG
        pending = asyncio.ensure_future(c.request(ORDER))
        await asyncio.sleep(0)  # one step of the loop: the request is queued
        assert not pending.done()
        assert await close_and_time(c) < LONG / 3
        assert io_threads() == before
        with pytest.raises(ClientClosed, match="closed while it looked for a server"):
            await pending
        with pytest.raises(ClientClosed, match="the client is closed"):
            await c.request(ORDER)

    asyncio.run(main())


def test_close_with_a_full_window_fails_the_sent_and_the_queued(silent: FakeServer) -> None:
    async def main() -> None:
        before = io_threads()
        async with AsyncClient([silent.endpoint], timeout=LONG, window=2, lost_after=LONG) as c:
            await c.connect()
            pending = [asyncio.ensure_future(c.request({**ORDER, "qty": q})) for q in (1, 2, 3)]
            await wait_for(lambda: len(silent.requests()) == 2)  # the third waits for room
            took = await close_and_time(c)
        assert took < LONG / 3
        assert io_threads() == before
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        assert [type(o) for o in outcomes] == [ClientClosed] * 3
        assert silent.requests() == [1, 2]  # the queued one never left

    asyncio.run(main())


def test_a_sharded_asyncio_client_closes_every_shard(tmp_path: Path) -> None:
    cfg = loads(render_shards(2, 2, free_base_port(40)), tmp_path)  # no server runs

    async def main() -> None:
        before = io_threads()
        async with AsyncShardedClient(cfg, timeout=LONG, lost_after=LONG) as sc:
            assert io_threads() == before + 2
            pending = [
                asyncio.ensure_future(sc.request({**ORDER, "instrument": key}))
                for key in ("ABC", "XYZ")  # one on each shard
            ]
            await asyncio.sleep(0)  # one step of the loop: both are queued
            assert not any(p.done() for p in pending)
            t0 = time.monotonic()
        assert time.monotonic() - t0 < LONG / 3
        assert io_threads() == before
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        assert [type(o) for o in outcomes] == [ClientClosed] * 2

    asyncio.run(main())


def test_close_fails_the_pending_even_after_an_earlier_event_loop_closed(
    silent: FakeServer,
) -> None:
    """One client used from two `asyncio.run`s: a request of the first timed
    out and stayed pending, and its loop is closed. Found by review: handing
    it its ClientClosed raised in the I/O thread ('Event loop is closed'),
    which died there, and the second loop's request waited out its own
    timeout instead."""
    before = io_threads()
    c = AsyncClient([silent.endpoint], timeout=LONG, lost_after=LONG)

    async def first() -> None:
        await c.connect()
        with pytest.raises(RequestTimeout, match="stays pending"):
            await c.request(ORDER, timeout=0.2)

    async def second() -> None:
        pending = asyncio.ensure_future(c.request(ORDER))
        await wait_for(lambda: len(silent.requests()) == 2)
        assert await close_and_time(c) < LONG / 3
        with pytest.raises(ClientClosed, match="before this request was answered"):
            await asyncio.wait_for(pending, LONG / 3)
        with pytest.raises(ClientClosed, match="the client is closed"):
            await c.connect()

    asyncio.run(first())
    asyncio.run(second())
    assert io_threads() == before
