"""A simulated client: the real client core (failover, resend, votes) with a
closed-loop workload on the simulated network: random orders, or the
application's own request mix (`AppSpec.workload`, the ledger's transfers)
when the cluster runs another application.

It keeps `window` requests in flight and records every reply it accepted
(with the server, the epoch and when the server sent it): the history the
checker judges the cluster by.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zmqfail.app import Workload
from zmqfail.client.core import ClientCore
from zmqfail.client.session import ClientState, Session
from zmqfail.config import DEFAULT_INSTRUMENTS
from zmqfail.protocol import STATUS_OK
from zmqfail.sim.check import Ack

if TYPE_CHECKING:
    from zmqfail.sim.cluster import Cluster
    from zmqfail.sim.server import SimServer


def random_order(rng: random.Random) -> dict[str, Any]:
    side = rng.choice(("buy", "sell"))
    price = 100 + rng.randint(-5, 5)
    return {
        "op": "new",
        "instrument": rng.choice(DEFAULT_INSTRUMENTS),
        "side": side,
        "type": "limit",
        "qty": rng.randint(1, 50),
        "price": f"{price / 10:.2f}",
    }


class SimClient:
    def __init__(self, cluster: Cluster, client_id: str, window: int, think: float = 0.0) -> None:
        self.cluster = cluster
        self.loop = cluster.loop
        self.id = client_id
        self.ident = client_id.encode()
        self.window = window
        self.think = think  # seconds between a reply and the next request
        self.rng = random.Random(cluster.loop.rng.getrandbits(32))
        names = list(cluster.servers)
        self.names = names
        fo = cluster.cfg.failover
        self.core = ClientCore(
            names,
            Session(client_id, rng=random.Random(self.rng.getrandbits(32))),
            failover_after=fo.client_timeout_ms / 1000.0,
            lost_after=3600.0,  # keeps looking: the checker judges liveness itself
        )
        # Orders keep the simulator's own mix (and its random draws, so a seed's
        # schedule is the same as before other applications could run).
        self.mix: Workload | None = None
        if cluster.app != "orders":
            self.mix = cluster.cfg.app.workload(self.rng.getrandbits(32))
        self.bodies: dict[int, dict[str, Any]] = {}  # msg_id -> body, while unanswered
        self.acks: list[Ack] = []
        self.written: set[tuple[str, int]] = set()
        self.sending = True  # new requests until told to stop
        self._next_send = 0.0
        self.last_ack = 0.0
        self._wake_at: float | None = None
        self._token = 0

    def start(self) -> None:
        self.core.search(self.loop.now)
        self.wake(self.loop.now)

    def on_frame(self, server: str, data: bytes, sent_at: float) -> None:
        now = self.loop.now
        for rep in self.core.on_frame(self.names.index(server), data, now):
            self.acks.append(Ack(self.id, rep.msg_id, rep.server, rep.epoch, sent_at, rep.logged))
            body = self.bodies.pop(rep.msg_id, None)
            if self.mix is not None and body is not None and rep.status == STATUS_OK:
                self.mix.on_ok(body, rep.result)
            self.last_ack = now
            self._next_send = now + self.think
        self.turn()

    def wake(self, when: float) -> None:
        if self._wake_at is not None and self._wake_at <= when:
            return
        self._wake_at = when
        self._token += 1
        token = self._token

        def fire() -> None:
            if token == self._token:
                self._wake_at = None
                self.turn()

        self.loop.at(when, fire)

    def turn(self) -> None:
        now = self.loop.now
        core = self.core
        core.tick(now)
        wake = float("inf")
        if self.sending and core.state is ClientState.CONNECTED:
            if now < self._next_send:
                wake = self._next_send
            else:
                while len(core.session.outstanding) < self.window:
                    self._submit(now)
        wake = min(wake, core.next_deadline(now))  # after the submits: they set it
        self._route()
        self.wake(max(wake, now + 1e-6))

    def _submit(self, now: float) -> None:
        if self.mix is None:
            self.written.add((self.id, self.core.submit(random_order(self.rng), now)))
            return
        body = self.mix.next_body()
        msg_id = self.core.submit(body, now)
        self.bodies[msg_id] = body
        if self.mix.is_write(body):  # a query is not logged: nothing to lose
            self.written.add((self.id, msg_id))

    def _route(self) -> None:
        net = self.cluster.net
        servers = self.cluster.servers
        for idx, frame in self.core.out:
            server = servers[self.names[idx]]
            net.send(self.id, server.name, "clients", "req", _to(server, self.ident, frame))
        self.core.out.clear()

    @property
    def told(self) -> set[tuple[str, int]]:
        """The writes the client was told were acknowledged but lost."""
        return {(self.id, m) for loss in self.core.acks_lost for m in loss.msg_ids}

    @property
    def outstanding(self) -> int:
        return len(self.core.session.outstanding)


def _to(server: SimServer, ident: bytes, frame: bytes) -> Callable[[], None]:
    return lambda: server.deliver("client", (ident, frame))
