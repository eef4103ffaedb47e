"""The node's transaction log and tables: the one owner of its LSNs.

- `held`: the highest LSN in the RAM transaction log (written here as
  primary, or mirrored from the primary as backup). What a backup's ack
  confirms, and the log position that orders servers.
- `proc.last_lsn`: the highest LSN applied to the tables (a backup applies
  right after it answered, so it may trail `held` for a moment).
- `flushed`: on disk (fsynced), `flushed_epoch` the epoch of the record
  there. `committed`: acknowledged, replies released.
- `snapshot_lsn`: the newest snapshot on disk.

Records go into the RAM log (`memlog`, which the replication agent resends
from) and into the disk buffer (`buffer`, which the checkpoint agent hands to
the disk). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from zmqfail.checkpoint import FlushPolicy
from zmqfail.policies import Durability, FlushConfig
from zmqfail.processor import Processor
from zmqfail.txlog.buffer import Batch, LogBuffer
from zmqfail.txlog.memlog import MemLog
from zmqfail.txlog.record import TxRecord


class NodeLog:
    def __init__(self, proc: Processor, snapshot_lsn: int, flush: FlushConfig) -> None:
        self.flush_cfg = flush
        # `[flush] durability = "disk"`: acknowledged means fsynced on every
        # server (the backup acks its flushed LSN; the primary replies once its
        # own log is flushed too), at the price of a flush per group commit.
        self.on_disk = flush.durability is Durability.DISK
        self.policy = FlushPolicy(flush)
        # Told of every record this node writes as primary (the simulator's
        # checker keeps the ground truth of who wrote what with it).
        self.on_write: Callable[[int, bytes], None] | None = None
        self.reset(proc, snapshot_lsn)

    def reset(self, proc: Processor, snapshot_lsn: int) -> None:
        """Start over from tables read back from disk (start-up, a cut, a snapshot)."""
        lsn = proc.last_lsn
        self.proc = proc
        self.held_epoch = proc.last_epoch  # epoch of the record at `held`
        self.memlog = MemLog(lsn + 1)
        self.buffer = LogBuffer(lsn + 1)
        self.to_apply: list[TxRecord] = []
        self.flushed = self.committed = lsn
        self.flushed_epoch = self.held_epoch
        self._flushing_epoch = self.held_epoch  # of the last record of the batch in flight
        self.snapshot_lsn = snapshot_lsn
        self.flushing = False  # a batch is with the disk

    @property
    def held(self) -> int:
        return self.memlog.last_lsn

    def write(self, lsn: int, payload: bytes) -> None:
        """A record the primary wrote (already applied by the processor)."""
        self.held_epoch = self.proc.epoch
        self.memlog.append(lsn, payload)
        self.buffer.append(lsn, payload)
        if self.on_write is not None:
            self.on_write(lsn, payload)

    def hold(self, rec: TxRecord, payload: bytes) -> None:
        """Step 253: a mirrored record goes into the RAM log and the disk buffer;
        the tables get it after the ack (`apply_held`)."""
        self.held_epoch = rec.epoch
        self.memlog.append(rec.lsn, payload)
        self.buffer.append(rec.lsn, payload)
        self.to_apply.append(rec)

    def apply_held(self) -> tuple[int, Exception] | None:
        """Keep a backup warm: apply held records to the tables. A record that
        does not apply is returned (with what went wrong) and nothing after it
        is applied: the caller sets it aside and rebuilds the tables."""
        if not self.to_apply:
            return None
        recs, self.to_apply = self.to_apply, []
        for rec in recs:
            try:
                self.proc.apply_record(rec)
            except Exception as exc:  # our tables and the primary's differ
                return rec.lsn, exc
        return None

    # ---------------------------------------------------------------- disk
    def flush_due(self, now: float) -> Batch | None:
        """The batch to hand to the disk now, if the policy says one is due."""
        if self.flushing:
            return None
        buf = self.buffer
        if self.policy.due(now, buf.pending_records, buf.pending_bytes, self.memlog.nbytes):
            batch = self.take()
            if batch is not None:
                self.flushing = True
            return batch
        return None

    def take(self) -> Batch | None:
        """Everything the disk buffer holds, up to `held` (so the epoch of its
        last record is `held_epoch`)."""
        batch = self.buffer.take()
        if batch is not None:
            self._flushing_epoch = self.held_epoch
        return batch

    def durable(self) -> tuple[int, int]:
        """(LSN, epoch) of what a backup confirms: held in RAM, or with
        durability "disk" on its disk."""
        if self.on_disk:
            return self.flushed, self.flushed_epoch
        return self.held, self.held_epoch

    def flush_deadline(self, now: float) -> float | None:
        """When a periodic flush falls due by time alone; None with nothing to
        flush (else an idle node would wake every millisecond once the interval
        had passed)."""
        if not self.buffer.pending_records or self.flushing:
            return None
        return self.policy.next_deadline(now)

    def flushed_to(self, lsn: int, now: float) -> None:
        self.flushing = False
        if lsn > self.flushed:
            self.flushed = lsn
            self.flushed_epoch = self._flushing_epoch
        self.policy.flushed(now)
        self.memlog.trim_to(self.flush_cfg.max_memory_bytes, self.flushed)

    def snapshot_due(self) -> bool:
        return self.proc.last_lsn - self.snapshot_lsn >= self.flush_cfg.snapshot_every_records
