"""Failover agent's keep-alives: PUB on each link, SUB to every peer.

Heartbeats go out on both links so that one cut link is told apart from a dead
peer, and silence (not a missing first message, which a fresh SUB may lose) is
what counts as failure.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import zmq

from zmqfail.config import ClusterConfig, NodeConfig
from zmqfail.errors import ProtocolError
from zmqfail.protocol import Channel, Heartbeat, decode_as, limit_socket
from zmqfail.replication import LINKS
from zmqfail.txlog.history import EpochHistory


@dataclass(slots=True)
class PeerView:
    """The last heartbeat heard from one peer, and when, per link."""

    last: Heartbeat | None = None
    history: EpochHistory = field(default_factory=EpochHistory)  # of `last`, checked
    heard_at: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LINKS, 0.0))

    def age(self, now: float) -> float:
        latest = max(self.heard_at.values())
        return now - latest if latest else float("inf")


class Heartbeats:
    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], cfg: ClusterConfig, me: NodeConfig
    ) -> None:
        self.pubs: dict[str, zmq.Socket[bytes]] = {}
        self.subs: dict[str, zmq.Socket[bytes]] = {}
        self.peers: dict[str, PeerView] = {p.name: PeerView() for p in cfg.peers(me.name)}
        self.interval = cfg.failover.heartbeat_interval_ms / 1000.0
        self.next_beat = 0.0
        self.bad_frames = 0
        self.cut: set[str] = set()  # links cut by fault injection
        for link in LINKS:
            pub: zmq.Socket[bytes] = ctx.socket(zmq.PUB)
            pub.setsockopt(zmq.LINGER, 0)
            pub.setsockopt(zmq.SNDHWM, 100)
            pub.bind(me.link(link).heartbeat)
            sub: zmq.Socket[bytes] = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.RCVHWM, 1000)
            limit_socket(sub, Channel.HEARTBEAT)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            for peer in cfg.peers(me.name):
                sub.connect(peer.link(link).heartbeat)
            self.pubs[link] = pub
            self.subs[link] = sub

    def sockets(self) -> list[zmq.Socket[bytes]]:
        return list(self.subs.values())

    def due(self, now: float) -> bool:
        return now >= self.next_beat

    def beat(self, now: float, make: dict[str, object]) -> None:
        self.next_beat = now + self.interval
        for link, pub in self.pubs.items():
            if link in self.cut:
                continue
            hb = Heartbeat(link=link, **make)  # type: ignore[arg-type]
            with contextlib.suppress(zmq.ZMQError):
                pub.send(hb.encode(), zmq.NOBLOCK)

    def drain(self, link: str, now: float | None = None) -> list[Heartbeat]:
        sub = self.subs[link]
        got: list[Heartbeat] = []
        t = time.monotonic() if now is None else now
        for _ in range(256):
            try:
                data = sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if link in self.cut:
                continue
            try:
                hb = decode_as(data, Heartbeat)
                history = EpochHistory.from_wire(hb.history)
            except ProtocolError:
                self.bad_frames += 1
                continue
            view = self.peers.get(hb.name)
            if view is None:
                self.bad_frames += 1
                continue
            if view.last is None or hb.epoch >= view.last.epoch:
                view.last = hb
                view.history = history
            view.heard_at[link] = t
            got.append(hb)
        return got

    def close(self) -> None:
        for s in [*self.pubs.values(), *self.subs.values()]:
            s.close(linger=0)
