"""Blocking client: one DEALER per server, a window of requests in flight, and
switch-over to another server when the active one stops answering (method 500).

The application sees states, not exceptions: CONNECTED to a server at an
epoch, FAILING_OVER while it looks for the server that took over, and LOST
only when no server has answered for ``lost_after`` seconds, when calls raise
``Unavailable``.

The client registers a session with the server when it first connects (and
again after its session expired; see ``session.py``). A reply with status
``expired`` completes its request like any other reply, and means the
request's outcome is unknown, like ``stale``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from zmqfail.client.session import ClientState, Session
from zmqfail.config import ClusterConfig
from zmqfail.errors import ProtocolError, RequestTimeout, Unavailable
from zmqfail.protocol import (
    STATUS_NOT_ACTIVE,
    Hello,
    Message,
    RecoverySignal,
    Reply,
    SessionGrant,
    Welcome,
    decode,
)

HELLO_EVERY = 0.05  # seconds between probes of every server while failing over
PING_AFTER = 0.03  # a request this old without a reply: ping the server


def server_endpoints(servers: Sequence[str] | ClusterConfig) -> list[str]:
    if isinstance(servers, ClusterConfig):
        return [n.client for n in servers.nodes]
    return list(servers)


@dataclass(frozen=True, slots=True)
class Failover:
    """One switch-over the client lived through."""

    started: float  # monotonic time the failure was noticed
    ended: float  # monotonic time requests flowed again
    from_server: str
    to_server: str
    epoch: int
    resent: int


class Client:
    """Send requests to the active server and collect replies.

    ``request()`` is the simple call; ``submit()`` + ``poll()`` keep up to
    ``window`` requests in flight. A reply is final for its msg_id; a request
    without a reply is resent, in order, to whichever server takes over.
    """

    def __init__(
        self,
        servers: Sequence[str] | ClusterConfig,
        client_id: str | None = None,
        timeout: float = 5.0,
        window: int = 64,
        ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
        failover_after: float | None = None,
        lost_after: float = 30.0,
    ) -> None:
        self.endpoints = server_endpoints(servers)
        if not self.endpoints:
            raise ValueError("a client needs at least one server endpoint")
        if failover_after is None:
            failover_after = (
                servers.failover.client_timeout_ms / 1000.0
                if isinstance(servers, ClusterConfig)
                else 0.3
            )
        self.failover_after = failover_after
        self.lost_after = lost_after
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
        self.failovers: list[Failover] = []
        self.stale_replies = 0  # replies dropped: from an epoch older than one we know
        self._lost_at = 0.0  # when the current search for a server began
        self._next_hello = 0.0
        self._from = ""
        self._alive_at = 0.0  # last sign of life from the active server
        self._ping_at = 0.0  # last keep-alive sent to it

    @property
    def state(self) -> ClientState:
        return self.session.state

    @property
    def client_id(self) -> str:
        return self.session.client_id

    @property
    def server(self) -> str:
        return self.session.server

    @property
    def epoch(self) -> int:
        return self.session.epoch

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
        """Find the active server and hold a session with it; returns its name.
        Raises Unavailable at the deadline."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        if self.active is None and self.session.state is not ClientState.FAILING_OVER:
            self._search(time.monotonic(), ClientState.CONNECTING)
        while self.active is None or not self.session.session:
            now = time.monotonic()
            if now >= deadline:
                self.session.state = ClientState.LOST
                raise Unavailable(f"no active server among {', '.join(self.endpoints)}")
            self._step(min(deadline - now, HELLO_EVERY))
        return self.session.server

    def _search(self, now: float, state: ClientState) -> None:
        """Start looking for the active server (step 520): probe every server."""
        if self.active is not None:
            self._from = self.session.server
        self.active = None
        self.session.state = state
        self._lost_at = now
        self._next_hello = now

    def _hello_all(self, now: float) -> None:
        lost = self._from if self.session.state is ClientState.FAILING_OVER else ""
        hello = Hello(self.session.client_id, lost).encode()
        for s in self.sockets:
            with contextlib.suppress(zmq.Again):
                s.send(hello, zmq.NOBLOCK)
        self._next_hello = now + HELLO_EVERY

    def _adopt(self, sock: zmq.Socket[bytes], server: str, epoch: int, now: float) -> None:
        """A server is ready (recovery signal, step 530): resend what has no reply."""
        failing_over = self.session.state is ClientState.FAILING_OVER
        self.active = sock
        self._alive_at = now
        self.session.state = ClientState.CONNECTED
        self.session.server = server
        self.session.epoch = max(self.session.epoch, epoch)
        if not self.session.session:
            sock.send(self.session.register(now).encode())
        pending = self.session.unanswered()
        for req in pending:  # step 540: in the original order
            sock.send(req.encode())
        if pending:
            self.session.mark_resent(now)
        if failing_over:
            self.failovers.append(
                Failover(self._lost_at, now, self._from, server, epoch, len(pending))
            )

    # -------------------------------------------------------------- the loop
    def _step(self, wait: float) -> list[Reply]:
        """One round: probe if searching, wait up to `wait` for frames, handle them."""
        now = time.monotonic()
        if self.session.state in (ClientState.CONNECTING, ClientState.FAILING_OVER):
            if now - self._lost_at > self.lost_after:
                self.session.state = ClientState.LOST
            elif now >= self._next_hello:
                self._hello_all(now)
        got: list[Reply] = []
        for sock, _ in self.poller.poll(max(0, int(wait * 1000))):
            if not isinstance(sock, zmq.Socket):
                continue  # a wake-up descriptor registered by a wrapper (AsyncClient)
            for _ in range(10_000):
                try:
                    data = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    msg = decode(data)
                except ProtocolError:
                    continue
                self._on_message(sock, msg, got)
        self._check_health(time.monotonic())
        return got

    def _on_message(self, sock: zmq.Socket[bytes], msg: Message, got: list[Reply]) -> None:
        now = time.monotonic()
        if isinstance(msg, Reply):
            if msg.status == STATUS_NOT_ACTIVE:
                if sock is self.active or self.active is None:
                    self._search(now, ClientState.FAILING_OVER)
                return
            if msg.epoch < self.session.epoch:
                # From a server deposed since (it woke from a pause, say): its
                # answer may not be in the history that won. Keep waiting for
                # the current server's answer to the resend.
                self.stale_replies += 1
                return
            if sock is self.active:
                self._alive_at = now
            if self.session.on_reply(msg):
                if msg.msg_id in self._waiting:
                    self.done[msg.msg_id] = msg
                else:
                    got.append(msg)
                if self.session.must_register and self.active is not None:
                    self.active.send(self.session.register(now).encode())
        elif isinstance(msg, SessionGrant):
            if msg.epoch < self.session.epoch:
                self.stale_replies += 1
                return
            if sock is self.active:
                self._alive_at = now
            for req in self.session.on_grant(msg):
                if self.active is not None:
                    self.active.send(req.encode())
            if self.session.session and msg.window < self.window:
                # More in flight than the server keeps replies for, and a resend
                # after a failover could find its reply forgotten (stale).
                self.window = msg.window
        elif isinstance(msg, RecoverySignal):
            if msg.epoch > self.session.epoch or (
                self.active is None and msg.epoch >= self.session.epoch
            ):
                if self.active is not None and sock is not self.active:
                    self._from = self.session.server
                    self.session.state = ClientState.FAILING_OVER
                    self._lost_at = now
                self._adopt(sock, msg.server, msg.epoch, now)
        elif isinstance(msg, Welcome):
            if sock is self.active:
                if msg.active:
                    self._alive_at = now  # slow, maybe, but alive: keep it
                else:
                    self._search(now, ClientState.FAILING_OVER)
            elif self.active is None and msg.active and msg.epoch >= self.session.epoch:
                self._adopt(sock, msg.server, msg.epoch, now)

    def _check_health(self, now: float) -> None:
        """Step 510: a missing reply alone is no proof the server is gone (it may
        be waiting for its backup), so the client pings it; only a server that
        gives no sign of life for `failover_after` is left. A slow primary that
        answers pings keeps its clients, so they cast no vote for a takeover."""
        if self.session.state is not ClientState.CONNECTED or self.active is None:
            return
        oldest = self.session.oldest_sent_at()
        if oldest is None:
            return
        since = max(oldest, self._alive_at)
        if now - since > self.failover_after:
            self._search(now, ClientState.FAILING_OVER)
        elif now - oldest > PING_AFTER and now - self._ping_at > PING_AFTER:
            self._ping_at = now
            with contextlib.suppress(zmq.Again):
                self.active.send(Hello(self.session.client_id, "").encode(), zmq.NOBLOCK)

    # -------------------------------------------------------------- requests
    def submit(self, body: dict[str, Any]) -> int:
        """Send one request without waiting; returns its msg_id.

        While failing over the request is kept and sent, with the others, to
        the server that takes over."""
        if self.active is None and self.session.state is not ClientState.FAILING_OVER:
            self.connect()
        while len(self.session.outstanding) >= self.window:
            got = self.poll(self.timeout, raise_on_timeout=True)
            self._spill.extend(got)  # not extend(self.poll()): poll() swaps the list
        req = self.session.new_request(body, time.monotonic())
        if self.active is not None and req.session:
            self.active.send(req.encode())
        return req.msg_id

    def poll(self, timeout: float, raise_on_timeout: bool = False) -> list[Reply]:
        """Wait up to `timeout` for replies; returns the ones that completed requests."""
        got, self._spill = self._spill, []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            wait = 0.0 if got else max(0.0, remaining)
            if self.session.state is not ClientState.CONNECTED:
                wait = min(wait, HELLO_EVERY)
            elif self.session.outstanding:
                wait = min(wait, PING_AFTER)
            got.extend(self._step(wait))
            if self.session.state is ClientState.LOST:
                raise Unavailable(
                    f"no server answered for {self.lost_after}s "
                    f"({len(self.session.outstanding)} request(s) without a reply)"
                )
            if got or remaining <= 0 or (self._waiting & self.done.keys()):
                break
        if not got and raise_on_timeout and self.session.outstanding:
            raise RequestTimeout(
                f"no reply within {timeout}s for {len(self.session.outstanding)} request(s)"
            )
        return got

    def request(self, body: dict[str, Any], timeout: float | None = None) -> Reply:
        """Send one request and wait for its reply (across a failover if need be)."""
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
