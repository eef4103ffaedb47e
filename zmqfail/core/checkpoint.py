"""The checkpoint agent: when the transaction log goes to disk, and snapshots.

Paired, a record has two copies in RAM, so the log is flushed periodically;
alone, our copy is the only one, so every acknowledgement waits for a flush
(`mode`); so does every one with `[flush] durability = "disk"`, paired or not.
Snapshots bound recovery time and let old segments be archived.
It decides; the `Disk` port does the writing, and completions come back
through `on_flushed` / `on_snapshot_done`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from zmqfail.checkpoint import PERIODIC, SYNC
from zmqfail.core.log import NodeLog
from zmqfail.core.ports import Disk

log = logging.getLogger("zmqfail.node")

SNAPSHOT_RETRY = 1.0  # seconds before a failed snapshot is tried again (a full disk)


class CheckpointAgent:
    def __init__(
        self,
        name: str,
        nlog: NodeLog,
        disk: Disk,
        alone: Callable[[], bool],
        commit: Callable[[int], None],
    ) -> None:
        self.name = name
        self.nlog = nlog
        self.disk = disk
        self.alone = alone  # acknowledgements wait for our disk
        self.commit = commit  # release replies up to an LSN
        self.snapshotting = False
        self.snapshots = 0
        self.flushes = 0
        self.retry_at = 0.0  # after a failed snapshot, not before

    def apply_mode(self) -> None:
        self.nlog.policy.set_mode(SYNC if self.alone() or self.nlog.on_disk else PERIODIC)

    def on_flushed(self, lsn: int, now: float) -> None:
        self.nlog.flushed_to(lsn, now)
        self.flushes += 1
        if self.alone():
            self.commit(self.nlog.flushed)

    def on_snapshot_done(self, lsn: int, ok: bool, now: float) -> None:
        self.snapshotting = False
        if ok:
            self.nlog.snapshot_lsn = max(self.nlog.snapshot_lsn, lsn)
            self.snapshots += 1
        else:
            # The disk said which file and why, in one line (node/disk.py).
            log.debug(
                "%s: snapshot at lsn %d failed; will retry in %.0f s",
                self.name,
                lsn,
                SNAPSHOT_RETRY,
            )
            self.retry_at = now + SNAPSHOT_RETRY

    def due(self, now: float) -> None:
        """At the end of every turn: start what is due."""
        nlog = self.nlog
        if (
            not self.snapshotting
            and now >= self.retry_at
            and nlog.snapshot_due()
            and self.disk.can_snapshot()
        ):
            # A busy lone primary always has a flush in flight: waiting for a
            # quiet moment would never snapshot. Flush what is held first
            # (one synchronous write per snapshot) so the snapshot never
            # carries a record the log lacks: the log stays the audit trail.
            self.flush_now(now)
            proc = nlog.proc
            self.snapshotting = self.disk.snapshot(proc.last_lsn, proc.last_epoch, proc.snapshot)
            return
        batch = nlog.flush_due(now)
        if batch is not None:
            self.disk.flush(batch)

    def flush_now(self, now: float) -> None:
        """Make every record durable before going on (takeover, link failure,
        a snapshot, a clean stop). A failed write raises `LogWriteFailed`: the
        shell stops the node."""
        nlog = self.nlog
        self.disk.drain(nlog.take())
        nlog.flushed_to(nlog.held, now)
        if self.alone():
            self.commit(nlog.flushed)
