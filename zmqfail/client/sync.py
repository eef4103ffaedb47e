"""Blocking client: one DEALER per server, a window of requests in flight."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import zmq

from zmqfail.client.session import ClientState, Session
from zmqfail.config import ClusterConfig
from zmqfail.errors import ProtocolError, RequestTimeout, Unavailable
from zmqfail.protocol import Hello, RecoverySignal, Reply, Welcome, decode


def server_endpoints(servers: Sequence[str] | ClusterConfig) -> list[str]:
    if isinstance(servers, ClusterConfig):
        return [n.client for n in servers.nodes]
    return list(servers)


class Client:
    """Send requests to the active server and collect replies.

    ``request()`` is the simple call; ``submit()`` + ``poll()`` keep up to
    ``window`` requests in flight. A reply is final for its msg_id.
    """

    def __init__(
        self,
        servers: Sequence[str] | ClusterConfig,
        client_id: str | None = None,
        timeout: float = 5.0,
        window: int = 64,
        ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        self.endpoints = server_endpoints(servers)
        if not self.endpoints:
            raise ValueError("a client needs at least one server endpoint")
        self.session = Session(client_id)
        self.timeout = timeout
        self.window = window
        self.ctx: zmq.Context[zmq.Socket[bytes]] = ctx or zmq.Context.instance()
        self.sockets: list[zmq.Socket[bytes]] = []
        self.poller = zmq.Poller()
        for ep in self.endpoints:
            s: zmq.Socket[bytes] = self.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.ROUTING_ID, self.session.client_id.encode())
            s.setsockopt(zmq.SNDHWM, 100_000)
            s.setsockopt(zmq.RCVHWM, 100_000)
            s.connect(ep)
            self.sockets.append(s)
            self.poller.register(s, zmq.POLLIN)
        self.active: zmq.Socket[bytes] | None = None
        self.done: dict[int, Reply] = {}
        self._waiting: set[int] = set()
        self._spill: list[Reply] = []

    @property
    def state(self) -> ClientState:
        return self.session.state

    @property
    def client_id(self) -> str:
        return self.session.client_id

    def close(self) -> None:
        for s in self.sockets:
            s.close(linger=0)
        self.sockets = []

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ connecting
    def connect(self, timeout: float | None = None) -> str:
        """Find the active server; returns its name. Raises Unavailable at the deadline."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        hello = Hello(self.session.client_id).encode()
        next_hello = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                self.session.state = ClientState.LOST
                raise Unavailable(f"no active server among {', '.join(self.endpoints)}")
            if now >= next_hello:
                for s in self.sockets:
                    with contextlib.suppress(zmq.Again):
                        s.send(hello, zmq.NOBLOCK)
                next_hello = now + 0.2
            for sock, _ in self.poller.poll(max(1, int((min(deadline, next_hello) - now) * 1000))):
                msg = self._recv(sock)
                if isinstance(msg, Welcome | RecoverySignal):
                    active = msg.active if isinstance(msg, Welcome) else True
                    if active and msg.epoch >= self.session.epoch:
                        self.active = sock
                        self.session.state = ClientState.CONNECTED
                        self.session.server = msg.server
                        self.session.epoch = msg.epoch
                        return msg.server
                elif isinstance(msg, Reply):
                    self._complete(msg)

    def _recv(self, sock: zmq.Socket[bytes]) -> object:
        try:
            data = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None
        try:
            return decode(data)
        except ProtocolError:
            return None

    # -------------------------------------------------------------- requests
    def submit(self, body: dict[str, Any]) -> int:
        """Send one request without waiting; returns its msg_id."""
        if self.active is None:
            self.connect()
        while len(self.session.outstanding) >= self.window:
            # Replies that free the window are kept for the caller's next poll().
            got = self.poll(self.timeout, raise_on_timeout=True)
            self._spill.extend(got)  # not extend(self.poll()): poll() swaps the list
        req = self.session.new_request(body, time.monotonic())
        assert self.active is not None
        self.active.send(req.encode())
        return req.msg_id

    def poll(self, timeout: float, raise_on_timeout: bool = False) -> list[Reply]:
        """Wait up to `timeout` for replies; returns the ones that completed requests."""
        got, self._spill = self._spill, []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            wait = 0 if got else max(0, int(remaining * 1000))
            events = self.poller.poll(wait)
            for sock, _ in events:
                while True:
                    msg = self._recv(sock)
                    if msg is None:
                        break
                    if isinstance(msg, Reply) and self._complete(msg):
                        if msg.msg_id in self._waiting:
                            self.done[msg.msg_id] = msg
                        else:
                            got.append(msg)
            if got or remaining <= 0 or (self._waiting & self.done.keys()):
                break
        if not got and raise_on_timeout and self.session.outstanding:
            raise RequestTimeout(
                f"no reply within {timeout}s for {len(self.session.outstanding)} request(s)"
            )
        return got

    def _complete(self, reply: Reply) -> bool:
        return self.session.on_reply(reply)

    def request(self, body: dict[str, Any], timeout: float | None = None) -> Reply:
        """Send one request and wait for its reply."""
        limit = self.timeout if timeout is None else timeout
        msg_id = self.submit(body)
        self._waiting.add(msg_id)
        deadline = time.monotonic() + limit
        try:
            while msg_id not in self.done:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RequestTimeout(
                        f"no reply to msg_id {msg_id} within {limit}s; resending it with the "
                        "same msg_id is safe"
                    )
                got = self.poll(remaining)
                self._spill.extend(got)
            return self.done.pop(msg_id)
        finally:
            self._waiting.discard(msg_id)
