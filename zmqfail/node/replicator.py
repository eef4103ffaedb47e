"""Primary side of the replication agent: carries out ReplicationTracker's
actions on real sockets (PUSH records + REQ commit, per backup, per link)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from zmqfail.config import NodeConfig
from zmqfail.errors import ProtocolError
from zmqfail.protocol import (
    Channel,
    CommitAck,
    CommitRequest,
    ReplRecords,
    SnapshotImage,
    decode_as,
    limit_socket,
)
from zmqfail.replication import (
    LINKS,
    Commit,
    Push,
    ReplicationTracker,
    ResetLink,
    SendSnapshot,
)
from zmqfail.txlog.memlog import Trimmed

if TYPE_CHECKING:
    from zmqfail.node.server import Node

log = logging.getLogger("zmqfail.replication")


@dataclass(slots=True)
class SnapshotJob:
    """A forked child writing the tables' image for one or more backups."""

    pid: int
    lsn: int
    epoch: int
    path: Path
    waiting: dict[str, str]  # peer -> link
    history: list[Any]  # the log's terms up to lsn, wire form


class Replicator:
    def __init__(self, node: Node, peers: tuple[NodeConfig, ...]) -> None:
        self.node = node
        fo = node.cfg.failover
        self.tracker = ReplicationTracker.for_peers(
            [p.name for p in peers],
            ack_timeout=fo.link_timeout_ms / 1000.0,
            keepalive=fo.heartbeat_interval_ms / 1000.0,
        )
        self.tracker.epoch = node.proc.epoch
        self.tracker.epoch_start = node.proc.last_lsn
        self.peers = {p.name: p for p in peers}
        self.push: dict[tuple[str, str], zmq.Socket[bytes]] = {}
        self.req: dict[tuple[str, str], zmq.Socket[bytes]] = {}
        self.owner: dict[zmq.Socket[bytes], tuple[str, str]] = {}
        self.bad_acks = 0
        self.snapshots_sent = 0
        self.snap_job: SnapshotJob | None = None
        # Fault injection (`delay` control command): frames for a delayed link
        # wait here, in this process, as in a slow network's send queue; they
        # die with the process, as a send queue does.
        self.delayed: deque[tuple[float, tuple[str, str], bytes]] = deque()
        for name in self.peers:
            for link in LINKS:
                self._open(name, link)

    def _open(self, peer: str, link: str) -> None:
        ends = self.peers[peer].link(link)
        push: zmq.Socket[bytes] = self.node.ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.setsockopt(zmq.SNDHWM, 10_000)
        push.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for a peer not connected
        push.connect(ends.records)
        req: zmq.Socket[bytes] = self.node.ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        limit_socket(req, Channel.REPL_ACK)
        req.connect(ends.ack)
        self.push[(peer, link)] = push
        self.req[(peer, link)] = req
        self.owner[req] = (peer, link)
        self.node.poller.register(req, zmq.POLLIN)

    def _reset(self, peer: str, link: str) -> None:
        """A REQ is stuck after a lost reply, and a PUSH may hold records lost on a
        reset connection: close both (LINGER 0) and start over."""
        req = self.req.pop((peer, link))
        self.node.poller.unregister(req)
        del self.owner[req]
        req.close(linger=0)
        self.push.pop((peer, link)).close(linger=0)
        self.delayed = deque(d for d in self.delayed if d[1] != (peer, link))
        self._open(peer, link)

    def sockets(self) -> list[zmq.Socket[bytes]]:
        return list(self.owner)

    # ---------------------------------------------------------------- actions
    def pump(self, now: float) -> None:
        node = self.node
        while self.delayed and self.delayed[0][0] <= now:
            _, key, msg = self.delayed.popleft()
            with contextlib.suppress(zmq.Again):
                self.push[key].send(msg, zmq.NOBLOCK)
        self._finish_snapshot()
        acts = self.tracker.pump(now, node.proc.last_lsn, node.memlog.first_lsn, node.committed_lsn)
        for act in acts:
            if isinstance(act, Push):
                self._push(act)
            elif isinstance(act, Commit):
                if act.link in node.cut_links:
                    continue  # the request times out as on a real cut
                msg = CommitRequest(node.name, node.proc.epoch, act.lsn).encode()
                self.req[(act.peer, act.link)].send(msg)
            elif isinstance(act, ResetLink):
                log.info("%s: %s link to %s timed out; reset", node.name, act.link, act.peer)
                self._reset(act.peer, act.link)
            elif isinstance(act, SendSnapshot):
                self._send_snapshot(act.peer, act.link)

    def _push(self, act: Push) -> None:
        node = self.node
        if act.link in node.cut_links:
            return
        try:
            records = node.memlog.get_range(act.first, act.last - act.first + 1)
        except Trimmed:
            self.tracker.peers[act.peer].sent = self.tracker.peers[act.peer].held
            return
        msg = ReplRecords(node.name, node.proc.epoch, act.first, records).encode()
        delay = node.delays.get(act.link)
        if delay:
            self.delayed.append((node.now + delay, (act.peer, act.link), msg))
            return
        try:
            self.push[(act.peer, act.link)].send(msg, zmq.NOBLOCK)
        except zmq.Again:
            # Peer not connected or its queue is full: the commit answer will
            # show the gap and the records go again.
            self.tracker.peers[act.peer].sent = self.tracker.peers[act.peer].held

    def _send_snapshot(self, peer: str, link: str) -> None:
        """Build the tables' image in a forked child (copy-on-write, at this LSN)
        so the loop keeps serving and heartbeating; send it when it is ready."""
        if self.snap_job is not None:
            self.snap_job.waiting[peer] = link
            return
        node = self.node
        lsn = node.proc.last_lsn
        path = node.data_dir / f"transfer-{lsn}-{os.getpid()}.tmp"
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                path.write_bytes(msgpack.packb(node.proc.snapshot(), use_bin_type=True))
                code = 0
            finally:
                os._exit(code)
        hist = node.proc.history.copy()
        hist.cut(lsn)
        self.snap_job = SnapshotJob(pid, lsn, node.proc.epoch, path, {peer: link}, hist.to_wire())

    def _finish_snapshot(self) -> None:
        job = self.snap_job
        if job is None:
            return
        done, status = os.waitpid(job.pid, os.WNOHANG)
        if done == 0:
            return
        self.snap_job = None
        try:
            state = job.path.read_bytes() if os.waitstatus_to_exitcode(status) == 0 else b""
        except OSError:
            state = b""
        with contextlib.suppress(OSError):
            job.path.unlink()
        for peer, link in job.waiting.items():
            if not state:
                self.tracker.peers[peer].snapshot_pending = False  # try again
                continue
            msg = SnapshotImage(self.node.name, job.epoch, job.lsn, state, job.history).encode()
            try:
                self.push[(peer, link)].send(msg, zmq.NOBLOCK)
            except zmq.Again:
                self.tracker.peers[peer].snapshot_pending = False
                continue
            self.snapshots_sent += 1
            self.tracker.on_snapshot_sent(peer, job.lsn)
            log.info(
                "%s: sent a snapshot at lsn %d (%d bytes) to %s over %s",
                self.node.name,
                job.lsn,
                len(state),
                peer,
                link,
            )

    def on_readable(self, sock: zmq.Socket[bytes], now: float) -> None:
        peer, link = self.owner[sock]
        try:
            parts = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        if link in self.node.cut_links:
            return
        try:
            if len(parts) != 1:
                raise ProtocolError(f"an ack is one frame, got {len(parts)}")
            ack = decode_as(parts[0], CommitAck)
            if ack.sender != peer:
                raise ProtocolError(f"an ack from {peer}'s endpoint names {ack.sender}")
        except ProtocolError:
            self.bad_acks += 1
            return
        if ack.status == "fenced" or ack.epoch > self.node.proc.epoch:
            self.node.on_higher_epoch(ack.epoch, ack.sender)
            return
        self.tracker.on_ack(
            peer,
            link,
            ack.held,
            ack.status == "gap",
            now,
            waiting=ack.status == "wait",
            incarnation=ack.incarnation,
            last_epoch=ack.last_epoch,
        )

    def next_deadline(self) -> float | None:
        return self.delayed[0][0] if self.delayed else None

    def close(self) -> None:
        if self.snap_job is not None:
            os.waitpid(self.snap_job.pid, 0)
            with contextlib.suppress(OSError):
                self.snap_job.path.unlink()
            self.snap_job = None
        for s in [*self.push.values(), *self.req.values()]:
            s.close(linger=0)
