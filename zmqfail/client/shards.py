"""Routing clients: one failover client per shard, each request to its shard.

A sharded cluster (``[shards]``, zmqfail/shards.py) is several failover
groups, each owning some routing keys. ``Router`` is the pure decision: the
application names the keys a request touches (``routing_keys(body)``, see
zmqfail/app.py) and the router finds the one shard owning them all, or
refuses with ``RoutingError`` before anything is sent: no key, a key no shard
owns, or keys of two shards (cross-shard transactions are out of scope).

``ShardedClient`` and ``AsyncShardedClient`` hold one ordinary ``Client`` /
``AsyncClient`` per shard, built on that shard's config alone, all with one
client id (the caller is the same person everywhere). Each shard fails over on
its own: that is simply each client's own failover, so a machine lost under
two shards is two independent failovers. Replies and msg_ids are per shard:
``submit`` returns the shard with the msg_id.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

from zmqfail.app import RoutingKeys
from zmqfail.client.aio import AsyncClient
from zmqfail.client.session import new_client_id
from zmqfail.client.sync import Client
from zmqfail.config import ClusterConfig
from zmqfail.errors import RequestTimeout, RoutingError, Unavailable
from zmqfail.protocol import Reply
from zmqfail.shards import ShardConfig

# While waiting for replies from several shards, how long one shard's client
# is polled before the next gets its turn (seconds).
SLICE = 0.005


class Router:
    """Which shard serves a request: pure, no sockets."""

    def __init__(self, shards: Sequence[ShardConfig], keys_of: RoutingKeys) -> None:
        self.shards = tuple(shards)
        self.keys_of = keys_of
        self._owner: dict[str, str] = {}
        self._catch_all: str | None = None
        for sh in self.shards:
            if sh.keys is None:
                self._catch_all = sh.name
            else:
                self._owner.update(dict.fromkeys(sh.keys, sh.name))

    def shard_of_key(self, key: str) -> str:
        """The shard owning `key`; RoutingError when none does."""
        owner = self._owner.get(key, self._catch_all)
        if owner is None:
            known = ", ".join(sh.name for sh in self.shards)
            raise RoutingError(f"no shard owns key {key!r} (shards: {known})")
        return owner

    def route(self, body: dict[str, Any]) -> str:
        """The one shard owning every key `body` touches."""
        keys = self.keys_of(body)
        if not keys:
            raise RoutingError(
                f"the request names no routing key, so no shard can take it: {body!r:.80}"
            )
        owners = {self.shard_of_key(k) for k in keys}
        if len(owners) > 1:
            raise RoutingError(
                f"the request spans shards {', '.join(sorted(owners))} (keys "
                f"{', '.join(map(repr, keys))}): cross-shard work is not supported"
            )
        return owners.pop()


def _groups(cfg: ClusterConfig) -> list[tuple[str, ClusterConfig]]:
    """Each shard's name and the config its own client sees."""
    return [(sh.name, cfg.shard(sh.name)) for sh in cfg.shards]


class ShardedClient:
    """``request(body)`` to the shard owning its key; ``submit``/``poll`` keep
    requests in flight on every shard at once."""

    def __init__(
        self,
        cfg: ClusterConfig,
        client_id: str | None = None,
        timeout: float = 5.0,
        window: int = 64,
        lost_after: float = 30.0,
    ) -> None:
        self.router = Router(cfg.shards, cfg.app.router())
        self.client_id = client_id or new_client_id()
        self.timeout = timeout
        self.clients: dict[str, Client] = {}
        # Shards this client has sent to: only they are polled (the others
        # have nothing in flight, and a poll would cost each a time slice).
        self._used: dict[str, Client] = {}
        # Replies taken while `submit` or `request` waited, for the next poll.
        self._spill: list[tuple[str, Reply]] = []
        make = functools.partial(
            Client, client_id=self.client_id, timeout=timeout, window=window, lost_after=lost_after
        )
        try:
            for name, shard_cfg in _groups(cfg):
                self.clients[name] = make(shard_cfg)
        except BaseException:
            self.close()
            raise

    def client(self, shard: str) -> Client:
        """One shard's own client (for what names no key: ``reports``)."""
        if shard not in self.clients:
            raise RoutingError(f"no shard named {shard!r} (shards: {', '.join(self.clients)})")
        return self.clients[shard]

    def connect(self, timeout: float | None = None) -> dict[str, str]:
        """Every shard's active server, by shard."""
        return {name: c.connect(timeout) for name, c in self.clients.items()}

    def request(self, body: dict[str, Any], timeout: float | None = None) -> Reply:
        """Send one request to its shard and wait for the reply (across that
        shard's failover if need be). Every other shard sent to keeps going
        meanwhile; their replies come from the next ``poll``."""
        limit = self.timeout if timeout is None else timeout
        shard, msg_id = self.submit(body)
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RequestTimeout(
                    f"shard {shard}: no reply to msg_id {msg_id} within {limit}s; resending "
                    "it with the same msg_id is safe"
                )
            mine = None
            for name, r in self._step_all(shard, left):
                if name == shard and r.msg_id == msg_id:
                    mine = r
                else:
                    self._spill.append((name, r))
            if mine is not None:
                return mine

    def submit(self, body: dict[str, Any]) -> tuple[str, int]:
        """Send without waiting; (shard, msg_id), msg_ids being per shard.
        Like ``Client.submit`` it waits while that shard's window is full
        (``RequestTimeout`` after ``timeout``), but every shard sent to keeps
        going meanwhile: a shard failing over must not hold back the others'
        sends, resends and failovers. What they answer comes from the next
        ``poll``."""
        shard = self.router.route(body)
        client = self._used[shard] = self.clients[shard]
        deadline = time.monotonic() + self.timeout
        while len(client.session.outstanding) >= client.core.window:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RequestTimeout(
                    f"shard {shard}: its window of {client.core.window} request(s) stayed "
                    f"full for {self.timeout}s (no reply)"
                )
            self._spill += self._step_all(shard, left)
        return shard, client.submit(body)

    def _step_all(self, shard: str, left: float) -> list[tuple[str, Reply]]:
        """One round over every shard sent to: `shard` waits up to a slice of
        `left`, the others are only stepped (their timers run, what they
        queued leaves). Another shard's loss is not this call's to raise: the
        next ``poll`` does."""
        return self._round(lambda name: min(SLICE, left) if name == shard else 0.0, shard)

    def _round(
        self, wait_of: Callable[[str], float], raise_for: str | None
    ) -> list[tuple[str, Reply]]:
        """Poll every shard sent to, each for `wait_of(name)` seconds. A
        shard's loss (Unavailable) is raised after the round, for `raise_for`
        only (None: any shard), and never costs another shard's replies:
        what the round took goes to the spill first, for the next poll (they
        are completed in their own clients, so they would be lost)."""
        got: list[tuple[str, Reply]] = []
        error: Unavailable | None = None
        for name, c in list(self._used.items()):
            try:
                got += [(name, r) for r in c.poll(wait_of(name))]
            except Unavailable as exc:
                if error is None and raise_for in (None, name):
                    error = exc
        if error is not None:
            self._spill += got
            raise error
        return got

    def outstanding(self) -> int:
        """Requests not yet handed to the caller, over every shard: sent and
        unanswered, or answered and waiting for the next ``poll``."""
        return sum(len(c.session.outstanding) for c in self._used.values()) + len(self._spill)

    def poll(self, timeout: float) -> list[tuple[str, Reply]]:
        """Wait up to `timeout` for replies from any shard, each with its shard.
        Every shard sent to keeps its client's timers running meanwhile. A lost
        shard raises Unavailable; what the other shards answered in that round
        comes from the next call."""
        deadline = time.monotonic() + timeout
        spilt, self._spill = self._spill, []
        if spilt:
            return spilt
        while True:
            got = self._round(lambda name: 0.0, None)
            if got or time.monotonic() >= deadline:
                return got
            if not self._used:  # nothing sent yet: nothing can come
                time.sleep(min(SLICE, max(0.0, deadline - time.monotonic())))
            got = self._round(lambda name: min(SLICE, max(0.0, deadline - time.monotonic())), None)
            if got:
                return got

    def close(self) -> None:
        for c in self.clients.values():
            c.close()

    def __enter__(self) -> ShardedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncShardedClient:
    """``await client.request(body)`` to the shard owning its key."""

    def __init__(
        self,
        cfg: ClusterConfig,
        client_id: str | None = None,
        timeout: float = 5.0,
        window: int = 64,
        lost_after: float = 30.0,
    ) -> None:
        self.router = Router(cfg.shards, cfg.app.router())
        self.client_id = client_id or new_client_id()
        make = functools.partial(
            AsyncClient,
            client_id=self.client_id,
            timeout=timeout,
            window=window,
            lost_after=lost_after,
        )
        self.clients: dict[str, AsyncClient] = {}
        try:
            for name, shard_cfg in _groups(cfg):
                self.clients[name] = make(shard_cfg)
        except BaseException:  # a later shard's keys missing, say: end the threads made
            for c in self.clients.values():
                c.close_now()
            raise

    async def request(self, body: dict[str, Any], timeout: float | None = None) -> Reply:
        return await self.clients[self.router.route(body)].request(body, timeout)

    async def close(self) -> None:
        """Every shard's client at once: a down shard's close costs the others
        no wait."""
        await asyncio.gather(*(c.close() for c in self.clients.values()))

    async def __aenter__(self) -> AsyncShardedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
