"""asyncio client: the sync Client's behaviour, failover included, for coroutines.

One sync Client runs on a thread of its own (its sockets never leave that
thread); coroutines hand it requests through a queue and get their replies as
futures. A new request rings a wake-up descriptor that ends the thread's
poll at once, and every request waiting then leaves in one frame (a `reqs`
batch). The switch-over logic (pings, recovery signal, resend in order) is
therefore the very same code as the sync client's, not a second copy; so is
the session: it registers on connect and again after an expiry, and a
request whose session expired resolves to a Reply of status ``expired``
(outcome unknown, like ``stale``), never to an exception. Acknowledged
requests a recovered server does not know are reported as on the sync client:
`acks_lost`, and `add_loss_listener` (called on the I/O thread; hand over to
the event loop with ``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from zmqfail.client.acks import AckLoss
from zmqfail.client.core import LossListener
from zmqfail.client.session import ClientState
from zmqfail.client.sync import Client, Failover
from zmqfail.config import ClusterConfig
from zmqfail.errors import ClientClosed, RequestTimeout, Unavailable, ZmqfailError
from zmqfail.protocol import Reply

_Job = tuple[dict[str, Any], asyncio.Future[Reply], asyncio.AbstractEventLoop]


class AsyncClient:
    """``await client.request(body)``; many coroutines may share one client."""

    def __init__(
        self,
        servers: Sequence[str] | ClusterConfig,
        client_id: str | None = None,
        timeout: float = 5.0,
        window: int = 64,
        failover_after: float | None = None,
        lost_after: float = 30.0,
    ) -> None:
        self._client = Client(
            servers,
            client_id=client_id,
            timeout=timeout,
            window=window,
            failover_after=failover_after,
            lost_after=lost_after,
        )
        self.timeout = timeout
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # Set by close(): the I/O thread ends at its next look, whatever it
        # waits for (a server to answer, room in the window).
        self._closing = threading.Event()
        self._futures: dict[int, tuple[asyncio.Future[Reply], asyncio.AbstractEventLoop]] = {}
        self._error: ZmqfailError | None = None
        # A byte on this pair wakes the I/O thread from its poll when work arrives.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._client.poller.register(self._wake_r.fileno(), zmq.POLLIN)
        self._thread = threading.Thread(target=self._run, name="zmqfail-aio", daemon=True)
        self._thread.start()

    @property
    def state(self) -> ClientState:
        return self._client.state

    @property
    def client_id(self) -> str:
        return self._client.client_id

    @property
    def failovers(self) -> list[Failover]:
        return list(self._client.failovers)

    @property
    def acks_lost(self) -> list[AckLoss]:
        return list(self._client.acks_lost)

    def add_loss_listener(self, fn: LossListener) -> None:
        """`fn(loss)` on the I/O thread; add before the first request."""
        self._client.add_loss_listener(fn)

    async def connect(self, timeout: float | None = None) -> str:
        if self._closing.is_set():
            raise ClientClosed("the client is closed")
        limit = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while self._client.state is not ClientState.CONNECTED:
            if self._error is not None:
                raise self._error
            if loop.time() >= deadline:
                raise Unavailable(f"no active server among {', '.join(self._client.endpoints)}")
            await asyncio.sleep(0.01)
        return self._client.server

    async def request(self, body: dict[str, Any], timeout: float | None = None) -> Reply:
        if self._closing.is_set():
            raise ClientClosed("the client is closed")
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Reply] = loop.create_future()
        self._jobs.put((body, fut, loop))
        self._wake_w.send(b"\0")
        limit = self.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(asyncio.shield(fut), limit)
        except TimeoutError:
            raise RequestTimeout(f"no reply within {limit}s; the request stays pending") from None

    # -------------------------------------------------------- the I/O thread
    def _run(self) -> None:
        c = self._client
        closing = self._closing.is_set
        try:
            c.connect(self._client.lost_after, stop=closing)
            while not closing():
                with contextlib.suppress(BlockingIOError):
                    self._wake_r.recv(4096)  # level-triggered: drain before polling
                while len(c.session.outstanding) < c.window:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        break
                    body, fut, loop = job
                    msg_id = c.submit(body)
                    self._futures[msg_id] = (fut, loop)
                for rep in c.poll(0.05):
                    entry = self._futures.pop(rep.msg_id, None)
                    if entry is not None:
                        _post(entry[1], _resolve, entry[0], rep)
            self._fail_all(ClientClosed("the client was closed before this request was answered"))
        except ZmqfailError as exc:
            self._error = exc
            self._fail_all(exc)
        finally:
            c.close()
            self._wake_r.close()

    def _fail_all(self, exc: ZmqfailError) -> None:
        """Every request not answered, sent or still queued, fails with `exc`."""
        for fut, loop in self._futures.values():
            _post(loop, _fail, fut, exc)
        self._futures.clear()
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                _post(job[2], _fail, job[1], exc)

    async def close(self) -> None:
        """End the I/O thread and its sockets at its next look (within its
        50 ms poll), even while it waits for a server or for room in the
        window; whatever is unanswered then fails with ClientClosed."""
        await asyncio.get_running_loop().run_in_executor(None, self.close_now)

    def close_now(self) -> None:
        """close() for a caller without an event loop (a constructor cleaning
        up after a failure); blocks up to 10 s for the I/O thread."""
        self._closing.set()
        self._jobs.put(None)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        self._thread.join(10.0)
        self._wake_w.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _post(
    loop: asyncio.AbstractEventLoop, fn: Callable[[asyncio.Future[Reply], Any], None], *args: Any
) -> None:
    """Hand `fn(*args)` to `loop`. A loop closed since its coroutine asked
    (the client used from one `asyncio.run` after another) has no one left
    waiting; raising here would end the I/O thread, and every other request
    would wait out its timeout."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)


def _resolve(fut: asyncio.Future[Reply], rep: Reply) -> None:
    if not fut.done():
        fut.set_result(rep)


def _fail(fut: asyncio.Future[Reply], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
        # Marked as seen: a request that timed out left its future behind,
        # and asyncio would log each one failed at close as never retrieved.
        fut.exception()
