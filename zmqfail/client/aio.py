"""asyncio client: the same Session, awaited instead of blocked on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import zmq
import zmq.asyncio

from zmqfail.client.session import ClientState, Session
from zmqfail.client.sync import server_endpoints
from zmqfail.config import ClusterConfig
from zmqfail.errors import ProtocolError, RequestTimeout, Unavailable
from zmqfail.protocol import Hello, RecoverySignal, Reply, Welcome, decode


class AsyncClient:
    """``await client.request(body)``; many coroutines may share one client."""

    def __init__(
        self,
        servers: Sequence[str] | ClusterConfig,
        client_id: str | None = None,
        timeout: float = 5.0,
        window: int = 64,
    ) -> None:
        self.endpoints = server_endpoints(servers)
        self.session = Session(client_id)
        self.timeout = timeout
        self.ctx = zmq.asyncio.Context.instance()
        self.sockets: list[zmq.asyncio.Socket] = []
        for ep in self.endpoints:
            s = self.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.ROUTING_ID, self.session.client_id.encode())
            s.connect(ep)
            self.sockets.append(s)
        self.active: zmq.asyncio.Socket | None = None
        self._window = asyncio.Semaphore(window)
        self._futures: dict[int, asyncio.Future[Reply]] = {}
        self._readers: list[asyncio.Task[None]] = []
        self._welcome: asyncio.Future[zmq.asyncio.Socket] | None = None

    @property
    def state(self) -> ClientState:
        return self.session.state

    async def connect(self, timeout: float | None = None) -> str:
        if not self._readers:
            self._readers = [asyncio.create_task(self._reader(s)) for s in self.sockets]
        loop = asyncio.get_running_loop()
        self._welcome = loop.create_future()
        hello = Hello(self.session.client_id, "").encode()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        while not self._welcome.done():
            for s in self.sockets:
                with contextlib.suppress(zmq.Again):
                    await s.send(hello, zmq.NOBLOCK)
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.session.state = ClientState.LOST
                raise Unavailable(f"no active server among {', '.join(self.endpoints)}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._welcome), min(0.2, remaining))
        self.active = self._welcome.result()
        return self.session.server

    async def _reader(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            data = await sock.recv()
            try:
                msg = decode(data)
            except ProtocolError:
                continue
            if isinstance(msg, Reply):
                if self.session.on_reply(msg):
                    fut = self._futures.pop(msg.msg_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
            elif isinstance(msg, Welcome | RecoverySignal):
                active = msg.active if isinstance(msg, Welcome) else True
                w = self._welcome
                if active and w is not None and not w.done():
                    self.session.state = ClientState.CONNECTED
                    self.session.server = msg.server
                    self.session.epoch = max(self.session.epoch, msg.epoch)
                    w.set_result(sock)

    async def request(self, body: dict[str, Any], timeout: float | None = None) -> Reply:
        if self.active is None:
            await self.connect()
        assert self.active is not None
        limit = self.timeout if timeout is None else timeout
        async with self._window:
            req = self.session.new_request(body, asyncio.get_running_loop().time())
            fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
            self._futures[req.msg_id] = fut
            await self.active.send(req.encode())
            try:
                return await asyncio.wait_for(fut, limit)
            except TimeoutError:
                self._futures.pop(req.msg_id, None)
                raise RequestTimeout(f"no reply to msg_id {req.msg_id} within {limit}s") from None

    async def close(self) -> None:
        for t in self._readers:
            t.cancel()
        for t in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for s in self.sockets:
            s.close(linger=0)
