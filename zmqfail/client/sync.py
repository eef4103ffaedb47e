"""Blocking client: one DEALER per server, a window of requests in flight.

The failover logic (method 500: ping a slow server, leave a silent one, probe
every server, resend what has no reply) is the pure `ClientCore`; this module
moves its frames to and from the sockets and reads the clock. The application
sees states, not exceptions: CONNECTED to a server at an epoch, FAILING_OVER
while it looks for the server that took over, and LOST only when no server
has answered for ``lost_after`` seconds, when calls raise ``Unavailable``.
Listeners (`add_listener`) hear every change of state.

Acknowledged but lost: after a power loss of every server the recovered
server may not know requests this client was answered (what neither server
had flushed). The client is told once per loss: `add_loss_listener(fn)` hears
an `AckLoss` (the msg_ids, the server, its epoch), and `acks_lost` keeps them
all. The application decides (re-submit, reconcile, alert); nothing is
resent by itself, since the server never saw those requests again.

The client registers a session with the server when it first connects (and
again after its session expired; see ``session.py``). A reply with status
``expired`` completes its request like any other reply, and means the
request's outcome is unknown, like ``stale``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from zmqfail.client.acks import AckLoss
from zmqfail.client.core import (
    HELLO_EVERY,
    PING_AFTER,
    ClientCore,
    Failover,
    Listener,
    LossListener,
)
from zmqfail.client.session import ClientState, Session
from zmqfail.config import ClusterConfig
from zmqfail.errors import ClientClosed, ConfigError, RequestTimeout, Unavailable
from zmqfail.protocol import Channel, Reply, limit_socket
from zmqfail.security import Curve, Dial

__all__ = ["AckLoss", "Client", "Failover", "server_endpoints"]


def server_endpoints(servers: Sequence[str] | ClusterConfig) -> list[str]:
    if isinstance(servers, ClusterConfig):
        if servers.sharded:
            # Its nodes are every shard's servers: one client would take them
            # for one pair and follow whichever primary answered first.
            names = ", ".join(sh.name for sh in servers.sharded)
            raise ConfigError(
                f"the config has shards ({names}): use zmqfail.client.shards.ShardedClient, "
                "or a Client on cfg.shard(NAME)"
            )
        return [n.client for n in servers.nodes]
    return list(servers)


def client_dials(servers: Sequence[str] | ClusterConfig) -> list[Dial | None]:
    """The CURVE keys for each server's frontend, read now (a missing key is
    a ConfigError before any socket exists); None where the channel is plain."""
    sec = servers.security if isinstance(servers, ClusterConfig) else None
    if sec is None or not sec.on(Curve.CLIENTS):
        return [None] * len(servers.nodes if isinstance(servers, ClusterConfig) else servers)
    assert isinstance(servers, ClusterConfig)
    pair = sec.client_pair()
    return [Dial(pair, sec.server_public(n.name)) for n in servers.nodes]


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
        dials = client_dials(servers)
        if failover_after is None:
            failover_after = (
                servers.failover.client_timeout_ms / 1000.0
                if isinstance(servers, ClusterConfig)
                else 0.3
            )
        self.core = ClientCore(
            self.endpoints, Session(client_id), failover_after, lost_after, window
        )
        self.timeout = timeout
        self.ctx: zmq.Context[zmq.Socket[bytes]] = ctx or zmq.Context.instance()
        self.sockets: list[zmq.Socket[bytes]] = []
        self.poller = zmq.Poller()
        self._index: dict[zmq.Socket[bytes], int] = {}
        for i, ep in enumerate(self.endpoints):
            s: zmq.Socket[bytes] = self.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.ROUTING_ID, self.session.client_id.encode())
            limit_socket(s, Channel.REPLIES)
            dial = dials[i]
            if dial is not None:
                dial.apply(s)
            s.connect(ep)
            self.sockets.append(s)
            self._index[s] = i
            self.poller.register(s, zmq.POLLIN)
        self.done: dict[int, Reply] = {}
        self._waiting: set[int] = set()
        self._spill: list[Reply] = []
        # A descriptor a wrapper registered in the poller (AsyncClient's
        # wake-up) became readable: `poll` returns at once, so the wrapper
        # takes its new requests now rather than at the poll's deadline.
        self._woken = False

    # ----------------------------------------------------------- the facts
    @property
    def session(self) -> Session:
        return self.core.session

    @property
    def state(self) -> ClientState:
        return self.core.state

    @property
    def client_id(self) -> str:
        return self.session.client_id

    @property
    def server(self) -> str:
        return self.session.server

    @property
    def epoch(self) -> int:
        return self.session.epoch

    @property
    def window(self) -> int:
        return self.core.window

    @window.setter
    def window(self, n: int) -> None:
        self.core.window = n

    @property
    def failovers(self) -> list[Failover]:
        return self.core.failovers

    @property
    def stale_replies(self) -> int:
        return self.core.stale_replies

    @property
    def failover_after(self) -> float:
        return self.core.failover_after

    @property
    def lost_after(self) -> float:
        return self.core.lost_after

    def add_listener(self, fn: Listener) -> None:
        """`fn(old, new)` on every change of state (called on this thread)."""
        self.core.listeners.append(fn)

    def add_loss_listener(self, fn: LossListener) -> None:
        """`fn(loss)` when the active server does not know requests this client
        was answered (called on this thread)."""
        self.core.loss_listeners.append(fn)

    @property
    def acks_lost(self) -> list[AckLoss]:
        """Every acknowledged-but-lost report so far, oldest first."""
        return self.core.acks_lost

    def close(self) -> None:
        for s in self.sockets:
            s.close(linger=0)
        self.sockets = []

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- sockets
    def _send(self) -> None:
        out = self.core.out
        for idx, frame in out:
            with contextlib.suppress(zmq.Again):
                self.sockets[idx].send(frame, zmq.NOBLOCK)
        out.clear()

    def _step(self, wait: float) -> list[Reply]:
        """One round: timers, wait up to `wait` for frames, handle them."""
        core = self.core
        core.tick(time.monotonic())
        self._send()
        got: list[Reply] = []
        for sock, _ in self.poller.poll(max(0, int(wait * 1000))):
            idx = self._index.get(sock) if isinstance(sock, zmq.Socket) else None
            if idx is None:
                self._woken = True  # a wake-up descriptor registered by a wrapper (AsyncClient)
                continue
            for _ in range(10_000):
                try:
                    data = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                for rep in core.on_frame(idx, data, time.monotonic()):
                    if rep.msg_id in self._waiting:
                        self.done[rep.msg_id] = rep
                    else:
                        got.append(rep)
        core.tick(time.monotonic())
        self._send()
        return got

    # ------------------------------------------------------------ connecting
    def connect(self, timeout: float | None = None, stop: Callable[[], bool] | None = None) -> str:
        """Find the active server and hold a session with it; returns its name.
        Raises Unavailable at the deadline, ClientClosed as soon as `stop()`
        says so (the asyncio client's close)."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        core = self.core
        if core.active is None and core.state is not ClientState.FAILING_OVER:
            core.search(time.monotonic())
        while core.active is None or not self.session.session:
            if stop is not None and stop():
                raise ClientClosed("the client was closed while it looked for a server")
            now = time.monotonic()
            if now >= deadline:
                core.lost()
                raise Unavailable(f"no active server among {', '.join(self.endpoints)}")
            self._step(min(deadline - now, HELLO_EVERY))
        return self.session.server

    # -------------------------------------------------------------- requests
    def submit(self, body: dict[str, Any]) -> int:
        """Queue one request without waiting; returns its msg_id.

        It leaves at the next `poll()` (or `request()`, or `flush()`) together
        with every other request submitted meanwhile, in one frame. While
        failing over the request is kept and sent, with the others, to the
        server that takes over."""
        core = self.core
        if core.active is None and core.state is not ClientState.FAILING_OVER:
            self.connect()
        while len(self.session.outstanding) >= core.window:
            got = self.poll(self.timeout, raise_on_timeout=True)
            self._spill.extend(got)  # not extend(self.poll()): poll() swaps the list
        return core.submit(body, time.monotonic())

    def flush(self) -> None:
        """Send the requests submitted since the last poll now, without waiting."""
        self._send()

    def poll(self, timeout: float, raise_on_timeout: bool = False) -> list[Reply]:
        """Wait up to `timeout` for replies; returns the ones that completed requests."""
        got, self._spill = self._spill, []
        self._woken = False
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            wait = 0.0 if got else max(0.0, remaining)
            if self.state is not ClientState.CONNECTED:
                wait = min(wait, HELLO_EVERY)
            elif self.session.outstanding:
                wait = min(wait, PING_AFTER)
            got.extend(self._step(wait))
            if self.state is ClientState.LOST:
                raise Unavailable(
                    f"no server answered for {self.lost_after}s "
                    f"({len(self.session.outstanding)} request(s) without a reply)"
                )
            if got or remaining <= 0 or self._woken or (self._waiting & self.done.keys()):
                break
        if not got and raise_on_timeout and not self._woken and self.session.outstanding:
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
