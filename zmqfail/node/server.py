"""One zmqfail server process: the poll loop that ties the agents together.

Single-threaded on purpose (the engine must be deterministic and the GIL makes
threads no faster for it); only the disk writer runs on its own thread, because
fsync releases the GIL and can overlap the next batch's processing.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from typing import Any

import zmq

from zmqfail.checkpoint import PERIODIC, SYNC, FlushPolicy
from zmqfail.config import ClusterConfig
from zmqfail.engine import Engine
from zmqfail.errors import NodeError, ProtocolError
from zmqfail.node.flusher import Flusher
from zmqfail.processor import Processor, ReplyGate
from zmqfail.protocol import (
    STATUS_ERROR,
    STATUS_NOT_ACTIVE,
    ControlReply,
    ControlRequest,
    Hello,
    Reply,
    Request,
    Welcome,
    decode,
    decode_request,
)
from zmqfail.txlog.memlog import MemLog
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.recovery import recover
from zmqfail.txlog.segments import DiskLog
from zmqfail.txlog.snapshot import write_meta, write_snapshot

log = logging.getLogger("zmqfail.node")

MAX_BATCH = 512  # frames taken from a socket per poll round, so no channel starves


class Node:
    def __init__(
        self,
        cfg: ClusterConfig,
        name: str,
        ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.me = cfg.node(name)
        self.name = name
        self.ctx: zmq.Context[zmq.Socket[bytes]] = ctx or zmq.Context.instance()
        self.data_dir = self.me.data_dir
        self.stopping = False
        self.exit_code = 0
        self.role = "primary" if name == cfg.primary else "backup"
        self.state = "starting"
        self.counters: dict[str, int] = {
            "requests": 0,
            "replies": 0,
            "bad_frames": 0,
            "undeliverable": 0,
            "flushes": 0,
            "snapshots": 0,
        }
        self.started = time.time()
        self._lock_fd = -1
        self._sockets: list[zmq.Socket[bytes]] = []

    # ------------------------------------------------------------------ start
    def open(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        t0 = time.perf_counter()
        rec = recover(self.data_dir)
        if rec.snapshot is not None:
            engine = Engine.restore(self.cfg.engine, rec.snapshot.state)
            last = rec.snapshot.lsn
            epoch = rec.snapshot.epoch
        else:
            engine, last, epoch = Engine(self.cfg.engine), 0, 0
        self.proc = Processor(engine, self.name, max(epoch, rec.epoch), last)
        for _lsn, payload in rec.records:
            self.proc.apply_record(TxRecord.decode(payload))
        if self.proc.epoch == 0:
            self.proc.epoch = 1
        self.snapshot_lsn = rec.snapshot.lsn if rec.snapshot else 0
        log.info(
            "%s: recovered to lsn %d epoch %d in %.3fs (snapshot %d, %d records replayed, "
            "%d torn bytes cut)",
            self.name,
            self.proc.last_lsn,
            self.proc.epoch,
            time.perf_counter() - t0,
            self.snapshot_lsn,
            len(rec.records),
            rec.truncated_bytes,
        )
        write_meta(
            self.data_dir, {"epoch": self.proc.epoch, "node": self.name, "cluster": self.cfg.name}
        )
        self.disklog = DiskLog(self.data_dir, self.cfg.flush.segment_bytes, self.proc.last_lsn + 1)
        self.memlog = MemLog(self.proc.last_lsn + 1)
        self.flushed_lsn = self.proc.last_lsn
        self.committed_lsn = self.proc.last_lsn
        self.policy = FlushPolicy(self.cfg.flush, SYNC)
        self.gate = ReplyGate()
        self.flusher = Flusher(self.ctx, self.disklog, self.name)
        self._bind()
        (self.data_dir / "node.pid").write_text(f"{os.getpid()}\n")
        # Until replication exists the configured primary runs alone: it is the
        # only copy, so it flushes before every acknowledgement.
        if self.role == "primary":
            self.state = "primary_only"
            self.policy.set_mode(SYNC)
        else:
            self.state = "standby"
            self.policy.set_mode(PERIODIC)
        log.info(
            "%s: %s, state %s, clients on %s", self.name, self.role, self.state, self.me.client
        )

    def _lock(self) -> None:
        path = self.data_dir / "LOCK"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = (
                (self.data_dir / "node.pid").read_text().strip()
                if (self.data_dir / "node.pid").exists()
                else "?"
            )
            raise NodeError(
                f"data dir {self.data_dir} is in use by another node (pid {pid})"
            ) from None
        self._lock_fd = fd

    def _socket(self, kind: int) -> zmq.Socket[bytes]:
        s: zmq.Socket[bytes] = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        self._sockets.append(s)
        return s

    def _bind(self) -> None:
        self.frontend = self._socket(zmq.ROUTER)
        self.frontend.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.frontend.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.frontend.setsockopt(zmq.SNDHWM, 100_000)
        self.frontend.setsockopt(zmq.RCVHWM, 100_000)
        self.control = self._socket(zmq.ROUTER)
        for sock, ep in ((self.frontend, self.me.client), (self.control, self.me.control)):
            try:
                sock.bind(ep)
            except zmq.ZMQError as exc:
                raise NodeError(f"cannot bind {ep}: {exc.strerror}") from None
        self.poller = zmq.Poller()
        self.poller.register(self.frontend, zmq.POLLIN)
        self.poller.register(self.control, zmq.POLLIN)
        self.poller.register(self.flusher.notify, zmq.POLLIN)

    # ------------------------------------------------------------------- loop
    @property
    def active(self) -> bool:
        return self.state in ("primary_only", "normal") and self.role == "primary"

    def run(self) -> int:
        while not self.stopping:
            now = time.monotonic()
            deadline = self.policy.next_deadline(now)
            timeout = 50.0 if deadline is None else max(0.0, min(50.0, (deadline - now) * 1e3))
            events = dict(self.poller.poll(int(timeout)))
            if self.flusher.notify in events:
                self._on_flushed()
            if self.frontend in events:
                self._drain_frontend()
            if self.control in events:
                self._drain_control()
            self._maybe_flush()
        self._shutdown()
        return self.exit_code

    def stop(self) -> None:
        self.stopping = True

    def _drain_frontend(self) -> None:
        fe = self.frontend
        for _ in range(MAX_BATCH):
            try:
                frames = fe.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) != 2:
                self.counters["bad_frames"] += 1
                continue
            ident, payload = frames
            self.counters["requests"] += 1
            try:
                msg = decode_request(payload)
            except ProtocolError as exc:
                self.counters["bad_frames"] += 1
                self._send(ident, self._error_reply(0, "bad_frame", str(exc)))
                continue
            if isinstance(msg, Request):
                self._on_request(ident, msg)
            elif isinstance(msg, Hello):
                self._send(ident, Welcome(self.name, self.proc.epoch, self.active).encode())
            else:
                self.counters["bad_frames"] += 1
                self._send(ident, self._error_reply(0, "unexpected", f"{msg.TYPE} not expected"))

    def _error_reply(self, msg_id: int, code: str, message: str) -> bytes:
        result = {"code": code, "message": message}
        return Reply(msg_id, STATUS_ERROR, result, self.proc.epoch, self.name).encode()

    def _on_request(self, ident: bytes, req: Request) -> None:
        if not self.active:
            result = {"code": "not_active", "message": f"{self.name} is {self.role}/{self.state}"}
            self._send(
                ident,
                Reply(req.msg_id, STATUS_NOT_ACTIVE, result, self.proc.epoch, self.name).encode(),
            )
            return
        out = self.proc.submit(req.client_id, req.msg_id, req.body)
        if out.record is not None:
            self.disklog.append(out.gate_lsn, out.record)
            self.memlog.append(out.gate_lsn, out.record)
        data = out.reply
        if out.gate_lsn <= self.committed_lsn:
            self._send(ident, data)
        else:
            self.gate.hold(out.gate_lsn, ident, data)

    def _send(self, ident: bytes, data: bytes) -> None:
        try:
            self.frontend.send_multipart((ident, data), zmq.NOBLOCK)
            self.counters["replies"] += 1
        except zmq.ZMQError:
            # Client gone or its queue full: it will time out and resend, and the
            # dedup table answers the resend from the stored reply.
            self.counters["undeliverable"] += 1

    # ------------------------------------------------------- checkpoint agent
    def _maybe_flush(self) -> None:
        if self.flusher.busy:
            return
        dl = self.disklog
        now = time.monotonic()
        if self.policy.due(now, dl.pending_records, dl.pending_bytes, self.memlog.nbytes):
            batch = dl.take()
            if batch is not None:
                self.flusher.submit(batch)
        elif (
            dl.pending_records == 0
            and self.proc.last_lsn - self.snapshot_lsn >= self.cfg.flush.snapshot_every_records
            and self.flushed_lsn == self.proc.last_lsn
        ):
            self._snapshot()

    def _on_flushed(self) -> None:
        while (done := self.flusher.recv_done()) is not None:
            lsn, _took = done
            if lsn < 0:
                log.critical(
                    "%s: %s; stopping without acknowledging more", self.name, self.flusher.error
                )
                self.exit_code = 3
                self.gate.drop_all()
                self.stopping = True
                return
            self.flushed_lsn = lsn
            self.counters["flushes"] += 1
            self.policy.flushed(time.monotonic())
            self.memlog.trim_to(self.cfg.flush.max_memory_bytes, self.flushed_lsn)
        if self.policy.mode == SYNC:
            self._commit(self.flushed_lsn)

    def _commit(self, lsn: int) -> None:
        if lsn > self.committed_lsn:
            self.committed_lsn = lsn
        for ident, data in self.gate.release(self.committed_lsn):
            self._send(ident, data)

    def _snapshot(self) -> None:
        t0 = time.perf_counter()
        write_snapshot(
            self.data_dir, self.proc.last_lsn, self.proc.epoch, self.proc.engine.snapshot()
        )
        self.snapshot_lsn = self.proc.last_lsn
        self.counters["snapshots"] += 1
        log.info(
            "%s: snapshot at lsn %d in %.3fs",
            self.name,
            self.snapshot_lsn,
            time.perf_counter() - t0,
        )

    # ---------------------------------------------------------------- control
    def _drain_control(self) -> None:
        for _ in range(64):
            try:
                frames = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                continue
            ident, payload = frames
            try:
                req = decode(payload)
                if not isinstance(req, ControlRequest):
                    raise ProtocolError(f"expected a control request, got {req.TYPE}")
                reply = ControlReply(True, self._control(req.command, req.args), "")
            except ProtocolError as exc:
                reply = ControlReply(False, {}, str(exc))
            with contextlib.suppress(zmq.ZMQError):
                self.control.send_multipart((ident, reply.encode()), zmq.NOBLOCK)

    def _control(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        if command == "status":
            return self.status(digest=bool(args.get("digest", False)))
        if command == "stop":
            self.stopping = True
            return {"stopping": True}
        raise ProtocolError(f"unknown control command {command!r}")

    def status(self, digest: bool = False) -> dict[str, Any]:
        st: dict[str, Any] = {
            "name": self.name,
            "role": self.role,
            "state": self.state,
            "epoch": self.proc.epoch,
            "last_lsn": self.proc.last_lsn,
            "committed_lsn": self.committed_lsn,
            "flushed_lsn": self.flushed_lsn,
            "snapshot_lsn": self.snapshot_lsn,
            "flush_mode": self.policy.mode,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 3),
            "counters": dict(
                self.counters,
                applied=self.proc.applied,
                duplicates=self.proc.duplicates,
                stale=self.proc.stale,
            ),
            "engine": self.proc.engine.stats(),
            "held_replies": len(self.gate),
        }
        if digest:
            st["digest"] = self.proc.engine.digest()
        return st

    # --------------------------------------------------------------- shutdown
    def _shutdown(self) -> None:
        """Clean stop: make everything processed durable and answer it, then close."""
        if self.exit_code == 0:
            batch = self.disklog.take()
            if self.flusher.busy:
                deadline = time.monotonic() + 10
                while self.flusher.busy and time.monotonic() < deadline:
                    if self.flusher.notify.poll(100):
                        self._on_flushed()
            if batch is not None and self.exit_code == 0:
                self.disklog.write(batch, sync=True)
                self.flushed_lsn = batch.last_lsn
            if self.policy.mode == SYNC:
                self._commit(self.flushed_lsn)
        self.flusher.close()
        self.disklog.close()
        for s in self._sockets:
            s.close(linger=0)
        with contextlib.suppress(OSError):
            (self.data_dir / "node.pid").unlink()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        log.info(
            "%s: stopped at lsn %d (flushed %d)", self.name, self.proc.last_lsn, self.flushed_lsn
        )
