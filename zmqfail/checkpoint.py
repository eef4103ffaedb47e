"""Checkpoint agent policy: when the transaction log must go to disk.

Pure logic, no clock reads: the node passes ``now``. In the normal state a
record is safe once the backup holds it, so the log is flushed periodically,
whichever criterion comes first (time, record count, bytes, or the memory the
in-RAM log holds). A server running alone has no second copy, so every
acknowledgement waits for a flush (``sync`` mode); one flush covers every
request that arrived meanwhile (group commit).
"""

from __future__ import annotations

from dataclasses import dataclass

from zmqfail.policies import FlushConfig

PERIODIC = "periodic"
SYNC = "sync"


@dataclass(slots=True)
class FlushPolicy:
    cfg: FlushConfig
    mode: str = SYNC
    last_flush: float = 0.0

    def set_mode(self, mode: str) -> None:
        if mode not in (PERIODIC, SYNC):
            raise ValueError(f"unknown flush mode {mode!r}")
        self.mode = mode

    def due(self, now: float, pending_records: int, pending_bytes: int, memory_bytes: int) -> str:
        """The reason a flush is due now, or "" when none is."""
        if pending_records == 0:
            return ""
        if self.mode == SYNC:
            return "before-ack"
        if now - self.last_flush >= self.cfg.interval_ms / 1000.0:
            return "interval"
        if pending_records >= self.cfg.max_records:
            return "records"
        if pending_bytes >= self.cfg.max_bytes:
            return "bytes"
        if memory_bytes >= self.cfg.max_memory_bytes:
            return "memory"
        return ""

    def next_deadline(self, now: float) -> float | None:
        """When a periodic flush falls due by time alone (for the poll timeout)."""
        if self.mode == SYNC:
            return None
        return max(now, self.last_flush + self.cfg.interval_ms / 1000.0)

    def flushed(self, now: float) -> None:
        self.last_flush = now
