"""The node's local storage: the checkpoint agent (flushes, snapshots) and the
backup's handling of mirrored records, kept apart from the poll loop.

A mixin of Node: these methods work on the node's transaction log, application and
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
from zmqfail.node import tables
from zmqfail.node.flusher import Flusher
from zmqfail.processor import Processor, ReplyGate
from zmqfail.txlog.frames import log_dir
from zmqfail.txlog.history import EpochHistory, common_prefix
from zmqfail.txlog.memlog import MemLog
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.retention import Retention
from zmqfail.txlog.segments import DiskLog
from zmqfail.txlog.snapshot import read_meta, snap_dir, write_snapshot
from zmqfail.txlog.truncate import Cut, truncate_after

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
    quarantine: list[dict[str, Any]]
    acked_lsn: int | None

    @property
    def alone(self) -> bool:
        raise NotImplementedError

    @property
    def held_lsn(self) -> int:
        return self.memlog.last_lsn

    def _send(self, ident: bytes, data: bytes) -> None:
        raise NotImplementedError

    def _save_meta(self, clean_stop: bool = False) -> None:
        raise NotImplementedError

    def save_meta(self) -> None:
        self._save_meta()

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
                try:
                    self.proc.apply_record(rec)
                except Exception as exc:  # our tables and the primary's differ
                    self._on_apply_failure(rec.lsn, exc)
                    return

    def _on_apply_failure(self, lsn: int, exc: Exception) -> None:
        """A mirrored record does not apply: our tables are not the primary's
        (a history mixed before terms existed, or a bug). Never die of it: set
        the record and what follows aside, rebuild the tables from the log
        before it, and let the primary send the rest again (or a snapshot)."""
        log.critical(
            "%s: mirrored record %d does not apply to the tables (%s: %s); rebuilding "
            "from the log before it",
            self.name,
            lsn,
            type(exc).__name__,
            exc,
        )
        self.diverge_to(lsn - 1, "does not apply")

    def _close_storage(self) -> None:
        """Make everything held durable, then close the disk writer and log."""
        self.to_apply = []
        if self.snapshot_child is not None:
            os.waitpid(self.snapshot_child[0], 0)
            self.snapshot_child = None
        self._wait_flusher_idle()
        batch = self.disklog.take()
        if batch is not None:
            self.disklog.write(batch, sync=True)
        self.flusher.close()
        self.disklog.close()

    def _open_storage(self, proc: Processor, snapshot_lsn: int) -> None:
        lsn = proc.last_lsn
        self.proc = proc
        self.held_epoch = proc.last_epoch
        self.disklog = DiskLog(self.data_dir, self.cfg.flush.segment_bytes, lsn + 1)
        self.memlog = MemLog(lsn + 1)
        self.poller.unregister(self.flusher.notify)
        self.flusher = Flusher(self.ctx, self.disklog, self.name)
        self.poller.register(self.flusher.notify, zmq.POLLIN)
        self.flushed_lsn = self.committed_lsn = lsn
        self.snapshot_lsn = snapshot_lsn
        self.incarnation = random.getrandbits(48)  # held went down: not a late answer
        self._save_meta()

    def diverge_to(self, lsn: int, why: str) -> None:
        """Keep our log up to `lsn` and set the rest aside in quarantine: records
        no other server's history holds. Then rebuild the tables from what is
        kept. The count is reported (log, status): some may have been
        acknowledged, by us as primary or by a primary we followed."""
        epoch = self.proc.epoch
        self._close_storage()
        cut = truncate_after(self.data_dir, lsn, reason=why.split()[0])
        self.note_cut(cut, why, self.acked_lsn)
        loaded = tables.load(self.cfg, self.data_dir, self.name, self._current_meta())
        for extra in loaded.cuts:
            self.note_cut(extra, "does not apply", None)
        loaded.proc.epoch = max(loaded.proc.epoch, epoch)
        self._open_storage(loaded.proc, loaded.snapshot_lsn)

    def _current_meta(self) -> dict[str, Any]:
        meta = read_meta(self.data_dir)
        meta["history"] = self.proc.history.to_wire()
        return meta

    def note_cut(self, cut: Cut, why: str, acked_lsn: int | None) -> None:
        if not cut.records:
            return
        acked: int | None = None
        if acked_lsn is not None:
            acked = max(0, min(acked_lsn, cut.last_lsn) - cut.first_lsn + 1)
        self.counters["quarantined"] += cut.records
        entry = {
            "time": time.time(),
            "why": why,
            "records": cut.records,
            "first_lsn": cut.first_lsn,
            "last_lsn": cut.last_lsn,
            "acknowledged_here": acked,  # None: unknown (we restarted since)
            "file": str(cut.quarantine),
        }
        self.quarantine.append(entry)
        del self.quarantine[:-20]
        told = (
            f"{acked} of them acknowledged by this server"
            if acked is not None
            else "some may have been acknowledged"
        )
        log.error(
            "%s: %s: %d record(s) (lsn %d..%d) held only by this server were set aside "
            "(%s); `zmqfail log dump --data-dir %s` reads them",
            self.name,
            why,
            cut.records,
            cut.first_lsn,
            cut.last_lsn,
            told,
            cut.quarantine,
        )

    def install_snapshot(
        self, lsn: int, epoch: int, state: dict[str, Any], history: EpochHistory
    ) -> None:
        """Replace everything local by the primary's state at `lsn` (catch-up from
        too far behind). Records we hold that the primary's history lacks are set
        aside first, never silently dropped."""
        proc = Processor.create(self.cfg, self.name, epoch, lsn, state)  # validate first
        self.apply_held()
        keep = common_prefix(self.proc.history, self.held_lsn, history, lsn)
        if keep < self.held_lsn:
            self._close_storage()
            self.note_cut(
                truncate_after(self.data_dir, keep, reason="replaced"), "replaced", self.acked_lsn
            )
        else:
            self._close_storage()
        self._discard_files()
        write_snapshot(self.data_dir, lsn, epoch, state, self._retention())
        proc.epoch = max(epoch, self.proc.epoch)
        proc.history = history.copy()
        proc.history.cut(lsn)
        term = proc.history.term_at(lsn)
        proc.last_epoch = term.epoch if term is not None else epoch
        self._open_storage(proc, lsn)
        self.counters["snapshots_installed"] += 1
        log.info("%s: installed the primary's snapshot at lsn %d", self.name, lsn)

    def _discard_files(self) -> None:
        """Remove the local log and snapshots (all of it is in the primary's
        history: `install_snapshot` set aside what was not)."""
        for d, pattern in ((log_dir(self.data_dir), "*.zfl"), (snap_dir(self.data_dir), "*.zfs")):
            for f in d.glob(pattern) if d.exists() else []:
                f.unlink()

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
        lsn, epoch = self.proc.last_lsn, self.proc.last_epoch
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                write_snapshot(self.data_dir, lsn, epoch, self.proc.snapshot(), self._retention())
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
