"""Every socket of one node, and where the faults an operator injects
(`node/faults.py`) take effect.

The node core never sees a cut link: a cut channel simply delivers nothing
(cut `in`), sends nothing (cut `out`) or both, here, at the edge (a REP that
took a request while cut answers it after the heal, since a REP cannot take
the next one before). A
delayed link holds this node's outbound replication records for a while, as a
slow network's send queue would (and they die with the process, as a send
queue does). Reading takes at most a byte budget per socket per turn, so a
flood of large frames delays the loop by milliseconds, not into a failover.
Nothing here decides anything about failover.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import zmq

from zmqfail.config import ClusterConfig, NodeConfig
from zmqfail.core.ports import Outbox
from zmqfail.errors import NodeError
from zmqfail.node.faults import Faults
from zmqfail.protocol import READ_BUDGET, Channel, Probe, limit_socket
from zmqfail.replication import LINKS
from zmqfail.security import Curve, ServerKeys

if TYPE_CHECKING:
    from zmqfail.witness.etcd import EtcdWitness

Ctx = zmq.Context[zmq.Socket[bytes]]
Sock = zmq.Socket[bytes]

MAX_FRAMES = 512  # frames taken from a socket per turn, so no channel starves
# Replication bytes a backup takes per turn. Holding and then applying a
# record costs it 40-60 us, and a commit waits for the turn to end: 4 MiB
# (READ_BUDGET) of records made a catching-up backup's turn 0.3-0.7 s, past
# the primary's link timeout, and each timeout reset the link and pushed
# everything again. 256 KiB (some 800 order records of 310 bytes, one or
# two push frames of at most 500) is a turn of tens of ms; the rest waits in
# the queue and the commit answer says so (core/follower.py).
RECORDS_BUDGET = 256 << 10
# Heartbeats queued per SUB at most. They are read only in the detector's
# turns (NodeCore.hears_beats), so each read takes all that can be queued:
# after a long stall the backlog goes in one tick, not over several ticks
# in which a peer's old beats would look like fresh ones.
BEAT_HWM = 1000
CLIENTS = "clients"
WITNESS = "witness"


class Channels:
    def __init__(
        self,
        ctx: Ctx,
        cfg: ClusterConfig,
        me: NodeConfig,
        poller: zmq.Poller,
        gap_ack: Callable[[], bytes],
        keys: ServerKeys | None = None,
    ) -> None:
        self.ctx = ctx
        self.keys = keys  # CURVE on the channels [security] names (None: all plain)
        self._gap_ack = gap_ack  # a valid "gap" answer, for a REP that owes one
        self.cfg = cfg
        self.me = me
        self.faults = Faults()
        self.poller = poller
        self._own: list[Sock] = []
        self.bad_framing = 0  # client messages that were not [identity, payload]
        self.undeliverable = 0
        self.frontend = self._bound(zmq.ROUTER, me.client, Channel.CLIENTS, curve=Curve.CLIENTS)
        self.frontend.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.frontend.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.frontend.setsockopt(zmq.SNDHWM, 100_000)
        self.frontend.setsockopt(zmq.RCVHWM, 100_000)
        self.control = self._bound(zmq.ROUTER, me.control, Channel.CONTROL, curve=Curve.CONTROL)
        self.pull: dict[str, Sock] = {}
        self.rep: dict[str, Sock] = {}
        self.pub: dict[str, Sock] = {}
        self.sub: dict[str, Sock] = {}
        self.link_of: dict[Sock, str] = {}
        self.owed: set[str] = set()  # REP links owing an answer to a request taken while cut
        self.last_answer: dict[str, bytes] = {}
        for link in LINKS:
            ends = me.link(link)
            repl = Curve.REPLICATION
            pull = self._bound(zmq.PULL, ends.records, Channel.REPL_RECORDS, curve=repl)
            pull.setsockopt(zmq.RCVHWM, 10_000)
            rep = self._bound(zmq.REP, ends.ack, Channel.REPL_ACK, curve=repl)
            pub = self._bound(zmq.PUB, ends.heartbeat, Channel.HEARTBEAT, poll=False, curve=repl)
            pub.setsockopt(zmq.SNDHWM, 100)
            sub = self._socket(zmq.SUB, Channel.HEARTBEAT)
            sub.setsockopt(zmq.RCVHWM, BEAT_HWM)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            for peer in cfg.peers(me.name):
                # One SUB, several servers: each connect dials with that peer's key.
                self._dial(sub, repl, peer.name)
                sub.connect(peer.link(link).heartbeat)
            # Not polled: read when the failure detector runs (NodeCore.hears_beats).
            self.pull[link], self.rep[link], self.pub[link], self.sub[link] = pull, rep, pub, sub
            for s in (pull, rep, sub):
                self.link_of[s] = link
        # Step 420: one DEALER per peer to its client frontend, to ask whether it
        # lives when it falls silent on the links. IMMEDIATE: a probe for a peer
        # that is not connected is dropped at once, not queued to arrive late.
        self.probe: dict[str, Sock] = {}
        self.probe_of: dict[Sock, str] = {}
        for peer in cfg.peers(me.name):
            dealer = self._socket(zmq.DEALER, Channel.CLIENTS)
            dealer.setsockopt(zmq.IMMEDIATE, 1)
            dealer.setsockopt(zmq.SNDHWM, 4)
            dealer.setsockopt(zmq.RCVHWM, 64)
            self._dial(dealer, Curve.CLIENTS, peer.name)
            dealer.connect(peer.client)
            self.poller.register(dealer, zmq.POLLIN)
            self.probe[peer.name] = dealer
            self.probe_of[dealer] = peer.name
        self._probe_frame = Probe(me.name).encode()
        # The witness (optional): one DEALER; asks for a witness that is not
        # connected are dropped (IMMEDIATE): they are repeated anyway.
        self.witness: Sock | None = None
        self.etcd: EtcdWitness | None = None
        if cfg.witness is not None and cfg.witness.etcd is not None:
            # etcd plays the witness: asks go to a thread, answers come back
            # on an inproc socket polled here like the DEALER (witness/etcd.py).
            from zmqfail.witness.etcd import EtcdWitness

            self.etcd = EtcdWitness(ctx, cfg)
            self.witness = self.etcd.answers
            self.poller.register(self.witness, zmq.POLLIN)
        elif cfg.witness is not None:
            self.witness = self._socket(zmq.DEALER, Channel.CLIENTS)
            self.witness.setsockopt(zmq.IMMEDIATE, 1)
            self.witness.setsockopt(zmq.SNDHWM, 16)
            self._dial(self.witness, Curve.WITNESS, "witness")
            self.witness.connect(cfg.witness.endpoint)
            self.poller.register(self.witness, zmq.POLLIN)
        # Replication to backups, open only while this node leads.
        self.push: dict[tuple[str, str], Sock] = {}
        self.req: dict[tuple[str, str], Sock] = {}
        self.owner: dict[Sock, tuple[str, str]] = {}
        self.delayed: deque[tuple[float, tuple[str, str], bytes]] = deque()

    # ------------------------------------------------------------- sockets
    def _socket(self, kind: int, channel: Channel | None) -> Sock:
        s: Sock = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        if channel is not None:
            limit_socket(s, channel)
        self._own.append(s)
        return s

    def _dial(self, sock: Sock, curve: Curve, peer: str) -> None:
        if self.keys is not None:
            self.keys.dial(sock, curve, peer)

    def _bound(
        self,
        kind: int,
        endpoint: str,
        channel: Channel | None,
        poll: bool = True,
        curve: Curve | None = None,
    ) -> Sock:
        s = self._socket(kind, channel)
        if self.keys is not None and curve is not None:
            self.keys.serve(s, curve)
        try:
            s.bind(endpoint)
        except zmq.ZMQError as exc:
            raise NodeError(f"cannot bind {endpoint}: {exc.strerror}") from None
        if poll:
            self.poller.register(s, zmq.POLLIN)
        return s

    def open_replication(self) -> None:
        if self.push:
            return
        for peer in self.cfg.peers(self.me.name):
            for link in LINKS:
                self._open(peer.name, link)

    def close_replication(self) -> None:
        for key in list(self.req):
            self._close(key)
        self.delayed.clear()

    def _open(self, peer: str, link: str) -> None:
        ends = self.cfg.node(peer).link(link)
        push: Sock = self.ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.setsockopt(zmq.SNDHWM, 10_000)
        push.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for a peer not connected
        self._dial(push, Curve.REPLICATION, peer)
        push.connect(ends.records)
        req: Sock = self.ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        limit_socket(req, Channel.REPL_ACK)
        self._dial(req, Curve.REPLICATION, peer)
        req.connect(ends.ack)
        self.push[(peer, link)] = push
        self.req[(peer, link)] = req
        self.owner[req] = (peer, link)
        self.poller.register(req, zmq.POLLIN)

    def _close(self, key: tuple[str, str]) -> None:
        req = self.req.pop(key)
        self.poller.unregister(req)
        del self.owner[req]
        req.close(linger=0)
        self.push.pop(key).close(linger=0)

    def reset(self, peer: str, link: str) -> None:
        """A REQ is stuck after a lost reply, and a PUSH may hold records lost on a
        reset connection: close both (LINGER 0) and start over."""
        if (peer, link) in self.req:
            self._close((peer, link))
            self.delayed = deque(d for d in self.delayed if d[1] != (peer, link))
            self._open(peer, link)

    # ------------------------------------------------------------- reading
    def read_frontend(self) -> list[tuple[bytes, bytes]]:
        """[identity, payload] messages from clients; anything else is counted."""
        fe = self.frontend
        got: list[tuple[bytes, bytes]] = []
        budget = READ_BUDGET
        cut = CLIENTS in self.faults.deaf
        for _ in range(MAX_FRAMES):
            if budget <= 0:
                break  # the rest waits for the next turn: heartbeats go out meanwhile
            try:
                ident = fe.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            # Two frames from a DEALER client. Read them one by one (cheaper than
            # recv_multipart on the hot path); anything longer is drained and counted.
            two = bool(fe.getsockopt(zmq.RCVMORE))
            payload = fe.recv(zmq.NOBLOCK) if two else b""
            budget -= len(payload)
            extra = False
            while fe.getsockopt(zmq.RCVMORE):
                fe.recv(zmq.NOBLOCK)
                extra = True
            if cut:
                continue
            if extra or not two:
                self.bad_framing += 1  # no reply: the framing is unknown
                continue
            got.append((ident, payload))
        return got

    def read_records(self, link: str) -> tuple[list[bytes], bool]:
        """Replication frames, and whether more wait unread (the budget)."""
        sock = self.pull[link]
        got: list[bytes] = []
        budget = RECORDS_BUDGET
        more = False
        for _ in range(64):
            if budget <= 0:
                more = True
                break
            try:
                data = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            budget -= len(data)
            if link not in self.faults.deaf:
                got.append(data)
        else:
            more = True
        if more:
            more = bool(int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN)
        return got, more

    def read_commit(self, link: str) -> list[bytes] | None:
        """The parts of one commit request, or None (nothing, or taken while cut).
        Read without blocking: poll may wake us for a frame libzmq then drops."""
        if link in self.owed:
            return None  # a REP takes nothing before it answered
        try:
            parts = self.rep[link].recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None
        if link in self.faults.deaf:
            self.owed.add(link)
            return None
        return parts

    def read_ack(self, sock: Sock) -> tuple[str, str, list[bytes]] | None:
        peer, link = self.owner[sock]
        try:
            parts = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None
        if link in self.faults.deaf:
            return None
        return peer, link, parts

    def read_probe_replies(self, sock: Sock) -> tuple[str, list[bytes]]:
        """Answers from one peer's client frontend to our probes."""
        got: list[bytes] = []
        for _ in range(64):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if CLIENTS not in self.faults.deaf and len(parts) == 1:
                got.append(parts[0])
        return self.probe_of[sock], got

    def read_witness(self) -> list[bytes]:
        got: list[bytes] = []
        if self.witness is None:
            return got
        for _ in range(64):
            try:
                parts = self.witness.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if WITNESS not in self.faults.deaf and len(parts) == 1:
                got.append(parts[0])
        return got

    def read_heartbeats(self, link: str) -> list[bytes]:
        sub = self.sub[link]
        got: list[bytes] = []
        for _ in range(2 * BEAT_HWM):  # what is queued, and what comes meanwhile
            try:
                data = sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if link not in self.faults.deaf:
                got.append(data)
        return got

    # ------------------------------------------------------------- sending
    def carry(self, out: Outbox, now: float) -> list[str]:
        """Send everything in the box (then empty it). Returns the peers a push
        could not be queued for: the commit answer will show the gap."""
        failed: list[str] = []
        mute = self.faults.mute
        fe = self.frontend
        if out.client:
            if CLIENTS in mute:
                self.undeliverable += len(out.client)  # nothing leaves on a cut channel
            else:
                for ident, data in out.client:
                    try:
                        fe.send(ident, zmq.NOBLOCK | zmq.SNDMORE)
                        fe.send(data, zmq.NOBLOCK)
                    except zmq.ZMQError:
                        # Client gone or its queue full: it will time out and resend,
                        # and the dedup table answers the resend from the stored reply.
                        self.undeliverable += 1
        if self.witness is not None and WITNESS not in mute:
            for data in out.witness:
                if self.etcd is not None:
                    self.etcd.submit(data)
                    continue
                with contextlib.suppress(zmq.ZMQError):
                    self.witness.send(data, zmq.NOBLOCK)
        if CLIENTS not in mute:
            for peer in out.probe:
                with contextlib.suppress(zmq.ZMQError):
                    self.probe[peer].send(self._probe_frame, zmq.NOBLOCK)
        for link, data in out.answer:
            if link in mute:
                self.owed.add(link)
                continue
            self.last_answer[link] = data
            with contextlib.suppress(zmq.ZMQError):
                self.rep[link].send(data, zmq.NOBLOCK)
        for link, data in out.beat:
            if link not in mute:
                with contextlib.suppress(zmq.ZMQError):
                    self.pub[link].send(data, zmq.NOBLOCK)
        for peer, link in out.reset:
            self.reset(peer, link)
        for peer, link, data in out.push:
            if link in mute or (peer, link) not in self.push:
                continue  # lost on the way, as on a real cut
            delay = self.faults.delays.get(link)
            if delay:
                self.delayed.append((now + delay, (peer, link), data))
                continue
            try:
                self.push[(peer, link)].send(data, zmq.NOBLOCK)
            except zmq.Again:
                failed.append(peer)
        for peer, link, data in out.commit:
            if link in mute or (peer, link) not in self.req:
                continue  # the request times out as on a real cut
            with contextlib.suppress(zmq.ZMQError):
                self.req[(peer, link)].send(data, zmq.NOBLOCK)
        out.clear()
        self._release_delayed(now)
        self._pay_owed()
        return failed

    def _release_delayed(self, now: float) -> None:
        while self.delayed and self.delayed[0][0] <= now:
            _, key, data = self.delayed.popleft()
            sock = self.push.get(key)
            if sock is not None and key[1] not in self.faults.mute:
                with contextlib.suppress(zmq.Again):
                    sock.send(data, zmq.NOBLOCK)

    def _pay_owed(self) -> None:
        """A REP that took a request while cut answers it once healed (with the
        last answer it gave: to the asker, a late answer; it has moved on)."""
        for link in list(self.owed):
            if link in self.faults.cut:  # either way: wait for the heal
                continue
            self.owed.discard(link)
            data = self.last_answer.get(link) or self._gap_ack()
            with contextlib.suppress(zmq.ZMQError):
                self.rep[link].send(data, zmq.NOBLOCK)

    def send_control(self, ident: bytes, data: bytes) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.control.send_multipart((ident, data), zmq.NOBLOCK)

    def next_deadline(self) -> float | None:
        ds = [d for d in (self.faults.next_deadline(),) if d is not None]
        if self.delayed:
            ds.append(self.delayed[0][0])
        return min(ds) if ds else None

    def close(self) -> None:
        if self.etcd is not None:
            self.etcd.close()
        self.close_replication()
        for s in self._own:
            s.close(linger=0)
