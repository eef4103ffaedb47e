"""One simulated server: the real NodeCore, driven as the node shell drives
it, on the simulated network and disk.

It wakes when frames arrive or when the core's next deadline comes, feeds
what arrived (grouped by socket, as the shell reads them), ends the turn, and
routes the outbox. REQ/REP is modelled as ZeroMQ does it: a REP hands the
core one request at a time and owes it an answer; a reset REQ never sees an
answer to a request it sent before. Crash loses the process (the disk keeps
what was synced); pause freezes it (frames wait; its clock jumps on resume).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zmqfail.core.node import NodeCore
from zmqfail.errors import LogWriteFailed
from zmqfail.protocol import Probe
from zmqfail.sim.disk import SimDisk

if TYPE_CHECKING:
    from zmqfail.sim.cluster import Cluster

LINKS = ("main", "failsafe")
# A frame is handled in the loop's next turn, this long after it arrives: the
# real loop takes what arrived meanwhile in one turn, and so does this one.
TURN_DELAY = 0.0003
PROBE_IDENT = b"probe:"  # the identity a server's probe DEALER has at a peer's ROUTER


class SimServer:
    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.loop = cluster.loop
        self.name = name
        self.probe_frame = Probe(name).encode()
        self.disk = SimDisk(self.loop, cluster.cfg, name)
        self.core: NodeCore | None = None
        self.up = False
        self.paused = False
        self.starts = 0
        self.inbox: list[tuple[str, Any]] = []
        self._wake_at: float | None = None
        self._token = 0
        # REP per link: requests waiting (asker, gen, parts), and whom we owe.
        self.rep_queue: dict[str, deque[tuple[str, int, list[bytes]]]] = {
            lk: deque() for lk in LINKS
        }
        self.rep_owed: dict[str, tuple[str, int] | None] = dict.fromkeys(LINKS)
        self.req_gen: dict[tuple[str, str], int] = {}  # (peer, link) -> REQ generation
        self.disk.on_flushed = lambda lsn: self._async(lambda c: c.on_flushed(lsn, self.loop.now))
        self.disk.on_flush_failed = lambda err: self._async(lambda c: c.on_flush_failed(err))
        self.disk.on_snapshot = lambda lsn, ok: self._async(lambda c: c.on_snapshot_done(lsn, ok))
        self.disk.on_transfer = lambda key, data: self._async(
            lambda c: c.on_transfer_ready(key, data)
        )

    # -------------------------------------------------------------- life
    def start(self) -> None:
        disk = self.disk
        meta = dict(disk.meta)
        loaded = disk.load(meta)
        seed = self.cluster.loop.rng.getrandbits(32)
        self.core = NodeCore(
            self.cluster.cfg,
            self.name,
            disk,
            loaded,
            meta,
            self.loop.now,
            rng=random.Random(seed),
            tick=self.cluster.tick,
        )
        self.core.nlog.on_write = self.cluster.recorder(self.name)
        self.up, self.paused = True, False
        self.starts += 1
        self.cluster.net.restarted(self.name)
        self.inbox.clear()
        self._reset_sockets()
        self.wake(self.loop.now)

    def crash(self) -> None:
        self.up = False
        self.core = None
        self.cluster.net.restarted(self.name)
        self.disk.crash()
        self.inbox.clear()
        self._reset_sockets()
        self._token += 1
        self._wake_at = None

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.wake(self.loop.now)

    def _reset_sockets(self) -> None:
        for lk in LINKS:
            self.rep_queue[lk].clear()
            self.rep_owed[lk] = None
        for key in list(self.req_gen):
            self.req_gen[key] += 1

    # ------------------------------------------------------------ input
    def deliver(self, kind: str, item: Any) -> None:
        if not self.up:
            return
        self.inbox.append((kind, item))
        if not kind.startswith("beat:"):
            # A heartbeat waits for the detector's turn, as the real shell,
            # which does not poll its SUBs (NodeCore.hears_beats).
            self.wake(self.loop.now + TURN_DELAY)

    def _async(self, fn: Callable[[NodeCore], None]) -> None:
        """A completion from the disk: handled in the next turn."""
        self.deliver("call", fn)

    def wake(self, when: float) -> None:
        if not self.up or self.paused:
            return
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
        core = self.core
        if core is None or not self.up or self.paused:
            return
        now = self.loop.now
        try:
            self._turn(core, now)
        except LogWriteFailed as exc:
            core.on_flush_failed(str(exc))  # as the real shell does
        if self.core is not core or not self.up:
            return
        self._route(core)
        core.after_send()
        if core.stopping:
            self.cluster.stopped(self)
            return
        self.wake(max(core.next_deadline(now), now + 1e-6))

    def _turn(self, core: NodeCore, now: float) -> None:
        core.begin_turn(now)
        inbox, self.inbox = self.inbox, []
        if not core.hears_beats(now):
            self.inbox = [x for x in inbox if x[0].startswith("beat:")]
            inbox = [x for x in inbox if not x[0].startswith("beat:")]
        for kind, item in self._grouped(inbox):
            if kind == "client":
                core.on_client(item, now)
            elif kind.startswith("records:"):
                core.on_records(kind[8:], item, now)
            elif kind.startswith("beat:"):
                core.on_heartbeats(kind[5:], item, now)
            elif kind == "ack":
                peer, link, parts = item
                core.on_ack(peer, link, parts, now)
            elif kind == "witness":
                core.on_witness(item, now)
            elif kind == "probe-reply":
                peer, data = item
                core.on_probe_reply(peer, [data], now)
            elif kind == "call":
                item(core)
            if self.core is not core or not self.up:
                return  # it stopped (a disk failure)
        for link in LINKS:
            self._next_commit(core, link, now)
        core.end_turn(now)

    @staticmethod
    def _grouped(inbox: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        for kind, item in inbox:
            if kind in ("ack", "call", "commit", "probe-reply"):
                out.append((kind, item))
            elif out and out[-1][0] == kind:
                out[-1][1].append(item)
            else:
                out.append((kind, [item]))
        return out

    def _next_commit(self, core: NodeCore, link: str, now: float) -> None:
        """A REP takes the next request once it answered the last."""
        if self.rep_owed[link] is None and self.rep_queue[link]:
            asker, gen, parts = self.rep_queue[link].popleft()
            self.rep_owed[link] = (asker, gen)
            core.on_commit(link, parts, now)

    # ----------------------------------------------------------- output
    def _route(self, core: NodeCore) -> None:
        out = core.out
        c = self.cluster
        net = c.net
        me = self.name
        for ident, data in out.client:
            client = c.clients_by_ident.get(ident)
            if client is not None:
                sent = _bind(client.on_frame, me, data, self.loop.now)
                net.send(me, client.id, "clients", "rep", sent)
            elif ident.startswith(PROBE_IDENT):
                # An answer to a peer's step-420 probe, over the client network.
                prober = c.servers.get(ident[len(PROBE_IDENT) :].decode())
                if prober is not None:
                    got = _bind(prober.deliver, "probe-reply", (me, data))
                    net.send(me, prober.name, "clients", "probe-rep", got)
        witness = c.witness
        if witness is not None:
            for data in out.witness:
                net.send(me, "w", "clients", "w-ask", _bind(witness.ask, me, data))
        for peer_name in out.probe:
            peer = c.servers[peer_name]
            ident = PROBE_IDENT + me.encode()
            net.send(
                me,
                peer_name,
                "clients",
                "probe",
                _bind(peer.deliver, "client", (ident, self.probe_frame)),
            )
        for link, data in out.beat:
            for peer in c.servers.values():
                if peer is not self:
                    net.send(me, peer.name, link, "hb", _bind(peer.deliver, f"beat:{link}", data))
        for peer_name, link in out.reset:
            self.req_gen[(peer_name, link)] = self.req_gen.get((peer_name, link), 0) + 1
            net.reset_pipe(me, peer_name, f"push:{link}")
        for peer_name, link, data in out.push:
            peer = c.servers[peer_name]
            net.send(
                me, peer_name, link, f"push:{link}", _bind(peer.deliver, f"records:{link}", data)
            )
        for peer_name, link, data in out.commit:
            peer = c.servers[peer_name]
            gen = self.req_gen.get((peer_name, link), 0)
            net.send(me, peer_name, link, f"req:{link}", _bind(peer.request, link, me, gen, data))
        for link, data in out.answer:
            owed = self.rep_owed[link]
            self.rep_owed[link] = None
            if owed is not None:
                asker, gen = owed
                target = c.servers[asker]
                net.send(me, asker, link, f"rep:{link}", _bind(target.answer, link, me, gen, data))
            if self.rep_queue[link]:
                self.wake(self.loop.now)
        out.clear()

    def request(self, link: str, asker: str, gen: int, data: bytes) -> None:
        if not self.up:
            return
        self.rep_queue[link].append((asker, gen, [data]))
        self.wake(self.loop.now)

    def answer(self, link: str, peer: str, gen: int, data: bytes) -> None:
        if self.req_gen.get((peer, link), 0) != gen:
            return  # an answer to a REQ that was reset since: ZeroMQ drops it
        self.deliver("ack", (peer, link, [data]))


def _bind(fn: Callable[..., None], *args: Any) -> Callable[[], None]:
    return lambda: fn(*args)
