"""The node's local storage: the checkpoint agent (flushes, snapshots) and the
backup's handling of mirrored records, kept apart from the poll loop.

A mixin of Node: these methods work on the node's transaction log, engine and
disk writer, declared below for the type checker.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import zmq

from zmqfail.checkpoint import FlushPolicy
from zmqfail.config import ClusterConfig
from zmqfail.engine import Engine
from zmqfail.node.flusher import Flusher
from zmqfail.processor import Processor, ReplyGate
from zmqfail.txlog.frames import log_dir
from zmqfail.txlog.memlog import MemLog
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.retention import Retention
from zmqfail.txlog.segments import DiskLog
from zmqfail.txlog.snapshot import write_snapshot

log = logging.getLogger("zmqfail.node")


class Storage:
    cfg: ClusterConfig
    name: str
    data_dir: Path
    ctx: zmq.Context[zmq.Socket[bytes]]
    poller: zmq.Poller
    proc: Processor
    disklog: DiskLog
    memlog: MemLog
    flusher: Flusher
    policy: FlushPolicy
    gate: ReplyGate
    counters: dict[str, int]
    to_apply: list[TxRecord]
    flushed_lsn: int
    committed_lsn: int
    snapshot_lsn: int
    held_epoch: int
    incarnation: int
    exit_code: int
    stopping: bool
    snapshot_child: tuple[int, int, float] | None

    @property
    def alone(self) -> bool:
        raise NotImplementedError

    def _send(self, ident: bytes, data: bytes) -> None:
        raise NotImplementedError

    def _save_meta(self) -> None:
        raise NotImplementedError

    def _retention(self) -> Retention:
        return self.cfg.retention.for_node(self.cfg.node(self.name))

    def hold_record(self, rec: TxRecord, payload: bytes) -> None:
        """Step 253: the mirrored record goes into our RAM log (and the disk
        buffer); the checkpoint agent applies it to the tables after the ack."""
        self.held_epoch = rec.epoch
        self.memlog.append(rec.lsn, payload)
        self.disklog.append(rec.lsn, payload)
        self.to_apply.append(rec)

    def apply_held(self) -> None:
        """Keep the backup warm: apply held records to the tables and queues."""
        if self.to_apply:
            recs, self.to_apply = self.to_apply, []
            for rec in recs:
                self.proc.apply_record(rec)

    def install_snapshot(self, lsn: int, epoch: int, state: dict[str, Any]) -> None:
        """Replace everything local by the primary's state at `lsn` (catch-up from
        too far behind)."""
        self.reset_local(lsn, epoch, state)
        self.counters["snapshots_installed"] += 1
        log.info("%s: installed the primary's snapshot at lsn %d", self.name, lsn)

    def reset_local(self, lsn: int, epoch: int, state: dict[str, Any] | None) -> None:
        """Throw away the local log and tables and start from `state` at `lsn`
        (None: empty at 0). Used for a snapshot install and for a server whose
        log may hold records the new primary never had."""
        engine = (
            Engine.restore(self.cfg.engine, state) if state is not None else Engine(self.cfg.engine)
        )  # validate before destroying anything
        self.to_apply = []
        if self.snapshot_child is not None:
            os.waitpid(self.snapshot_child[0], 0)
            self.snapshot_child = None
        self._wait_flusher_idle()
        self.flusher.close()
        self.disklog.close()
        for d, pattern in ((log_dir(self.data_dir), "*.zfl"), (self.data_dir / "snap", "*.zfs")):
            for f in d.glob(pattern) if d.exists() else []:
                f.unlink()
        if state is not None:
            write_snapshot(self.data_dir, lsn, epoch, state, self._retention())
        self.proc = Processor(engine, self.name, epoch, lsn)
        self.held_epoch = epoch
        self.disklog = DiskLog(self.data_dir, self.cfg.flush.segment_bytes, lsn + 1)
        self.memlog = MemLog(lsn + 1)
        self.poller.unregister(self.flusher.notify)
        self.flusher = Flusher(self.ctx, self.disklog, self.name)
        self.poller.register(self.flusher.notify, zmq.POLLIN)
        self.flushed_lsn = self.committed_lsn = self.snapshot_lsn = lsn
        self.incarnation = random.getrandbits(48)  # held went down: not a late answer
        self._save_meta()

    def flush_now(self) -> None:
        """Make every record durable before going on (takeover, link failure)."""
        self._wait_flusher_idle()
        batch = self.disklog.take()
        if batch is not None:
            self.flusher.submit(batch)
            self._wait_flusher_idle()

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
            self.snapshot_child is None
            and self.proc.last_lsn - self.snapshot_lsn >= self.cfg.flush.snapshot_every_records
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
        if self.alone:
            self._commit(self.flushed_lsn)

    def _commit(self, lsn: int) -> None:
        if lsn > self.committed_lsn:
            self.committed_lsn = lsn
        for ident, data in self.gate.release(self.committed_lsn):
            self._send(ident, data)

    def _snapshot(self) -> None:
        """Write a snapshot from a forked child: the fork is a copy-on-write
        image of the tables at this LSN, so the loop goes on serving (a stall
        of even a few hundred ms would look like death to peers and clients).
        The child touches no socket and leaves with os._exit."""
        lsn, epoch = self.proc.last_lsn, self.proc.epoch
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                write_snapshot(
                    self.data_dir, lsn, epoch, self.proc.engine.snapshot(), self._retention()
                )
                code = 0
            finally:
                os._exit(code)
        self.snapshot_child = (pid, lsn, time.perf_counter())

    def _reap_snapshot(self) -> None:
        if self.snapshot_child is None:
            return
        pid, lsn, t0 = self.snapshot_child
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            return
        self.snapshot_child = None
        if os.waitstatus_to_exitcode(status) == 0:
            self.snapshot_lsn = lsn
            self.counters["snapshots"] += 1
            log.info("%s: snapshot at lsn %d in %.3fs", self.name, lsn, time.perf_counter() - t0)
        else:
            log.error(
                "%s: snapshot at lsn %d failed (status %d); will retry", self.name, lsn, status
            )
        # Objects alive now are long-lived tables: keep the cyclic GC off them.
        gc.freeze()

    def _wait_flusher_idle(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.flusher.busy and time.monotonic() < deadline:
            if self.flusher.notify.poll(100):
                self._on_flushed()
