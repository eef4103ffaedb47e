"""What the node core asks of the world, and what it hands back.

Two ports, both narrow. The `Outbox` collects the frames the core wants sent
during one turn of the shell's loop (the shell sends them after the turn, in
batches); the `Disk` is called for everything that touches storage. The real
disk (`zmqfail.node.disk`) writes files, fsyncs on a thread and forks for
snapshots; the simulator's keeps bytes in RAM and loses what was not synced
when a node crashes. Completion of the asynchronous calls comes back to the
core as observations (`on_flushed`, `on_snapshot_done`, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from zmqfail.processor import Processor
from zmqfail.txlog.buffer import Batch
from zmqfail.txlog.history import EpochHistory
from zmqfail.txlog.truncate import Cut


@dataclass(slots=True)
class Outbox:
    """Frames to send, by socket kind. The shell drains every list after each
    turn; nothing in here has been sent yet."""

    client: list[tuple[bytes, bytes]] = field(default_factory=list)  # ident, frame
    push: list[tuple[str, str, bytes]] = field(default_factory=list)  # peer, link, frame
    commit: list[tuple[str, str, bytes]] = field(default_factory=list)  # peer, link, frame
    reset: list[tuple[str, str]] = field(default_factory=list)  # peer, link: reopen REQ+PUSH
    answer: list[tuple[str, bytes]] = field(default_factory=list)  # link, frame (REP)
    beat: list[tuple[str, bytes]] = field(default_factory=list)  # link, frame (PUB)
    control: list[tuple[bytes, bytes]] = field(default_factory=list)  # ident, frame
    probe: list[str] = field(default_factory=list)  # peers to probe over the client network
    witness: list[bytes] = field(default_factory=list)  # asks for the witness

    def clear(self) -> None:
        for lst in (
            self.probe,
            self.witness,
            self.client,
            self.push,
            self.commit,
            self.reset,
            self.answer,
            self.beat,
            self.control,
        ):
            lst.clear()


@dataclass(slots=True)
class Loaded:
    """A node's tables and log position as read back from its storage."""

    proc: Processor
    snapshot_lsn: int
    replayed: int = 0
    torn_bytes: int = 0
    cuts: list[Cut] = field(default_factory=list)  # records set aside: they did not apply


class Disk(Protocol):
    """Storage as the core sees it. Synchronous calls return when done (and
    raise OSError on failure); asynchronous ones report back later."""

    def write_meta(self, meta: dict[str, Any]) -> None:
        """Replace the node's metadata durably (before the caller goes on)."""

    def append_history(self, entry: dict[str, Any]) -> None:
        """Append one entry to the node's failover history, durably (before the
        caller goes on); the oldest part is dropped once it grows past its bound."""

    def read_history(self) -> list[dict[str, Any]]:
        """The failover history kept, oldest first."""

    def flush(self, batch: Batch) -> None:
        """Write and fsync a batch; `NodeCore.on_flushed` (or `on_flush_failed`)
        follows. At most one is in flight."""

    def drain(self, batch: Batch | None) -> None:
        """Wait for the flush in flight, then write and fsync `batch` now."""

    def truncate_after(self, lsn: int, why: str) -> Cut:
        """Cut the log after `lsn`, keeping what is cut in quarantine."""

    def load(self, meta: dict[str, Any]) -> Loaded:
        """Read the tables back from the log (after a cut)."""

    def install(self, lsn: int, epoch: int, state: dict[str, Any]) -> None:
        """Replace the log and snapshots by this snapshot (after a cut)."""

    def reopen(self, next_lsn: int) -> None:
        """Start appending at `next_lsn` again (after a cut or an install)."""

    def can_snapshot(self) -> bool:
        """No snapshot is being written (a new one may start)."""

    def snapshot(self, lsn: int, epoch: int, state_of: Callable[[], dict[str, Any]]) -> bool:
        """Start writing the tables' image at `lsn` (copy-on-write); False if one
        is already being written. `NodeCore.on_snapshot_done` follows."""

    def transfer(self, key: int, state_of: Callable[[], dict[str, Any]]) -> None:
        """Build the tables' image for a backup; `NodeCore.on_transfer_ready`
        follows with the encoded state (or None on failure)."""


def state_history(history: EpochHistory, lsn: int) -> list[list[Any]]:
    """The wire form of `history` as of `lsn` (what a snapshot image carries)."""
    h = history.copy()
    h.cut(lsn)
    return h.to_wire()
