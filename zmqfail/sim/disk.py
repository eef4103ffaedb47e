"""A simulated disk for one server: the core's `Disk` port in RAM.

What survives a crash is what was synced: every finished flush, the meta
(written atomically) and finished snapshots. A flush in flight when the node
crashes leaves a random prefix of its records behind (a torn append: the
real recovery cuts a partial frame, never a whole one before it). Disk
faults make the next flush fail, as EIO or a full disk would.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from zmqfail.config import ClusterConfig
from zmqfail.core.ports import Loaded
from zmqfail.core.replay import replay
from zmqfail.errors import LogWriteFailed
from zmqfail.sim.loop import Loop
from zmqfail.txlog.buffer import Batch
from zmqfail.txlog.frames import FRAME_HEADER
from zmqfail.txlog.truncate import Cut

FLUSH_TIME = (0.0003, 0.002)  # seconds a flush takes: base, spread
SNAPSHOT_TIME = (0.005, 0.02)
HISTORY_KEPT = 1000  # failover history entries (the real file keeps some 5,000-10,000)


def frames_of(batch: Batch) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    data, off, size = batch.frames, 0, FRAME_HEADER.size
    while off < len(data):
        length, _crc, lsn = FRAME_HEADER.unpack_from(data, off)
        out.append((lsn, bytes(data[off + size : off + size + length])))
        off += size + length
    return out


def copy_state(state: dict[str, Any]) -> dict[str, Any]:
    """What a fork and a write would keep: a deep copy, as msgpack sees it."""
    out: dict[str, Any] = msgpack.unpackb(
        msgpack.packb(state, use_bin_type=True), raw=False, strict_map_key=False
    )
    return out


class SimDisk:
    def __init__(self, loop: Loop, cfg: ClusterConfig, name: str) -> None:
        self.loop = loop
        self.cfg = cfg
        self.name = name
        self.log: list[tuple[int, bytes]] = []  # synced records, consecutive
        self.snaps: dict[int, tuple[int, dict[str, Any]]] = {}  # lsn -> (epoch, state)
        self.meta: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []  # the failover history, bounded
        self.quarantine: list[tuple[int, bytes]] = []
        self.gen = 0  # a crash makes every pending completion stale
        self.inflight: Batch | None = None
        self.snapshotting = False
        self.fail_flushes = 0  # the next N flushes fail (EIO)
        self.fail_drains = 0  # the next N synchronous writes fail
        self.flushes = 0
        self.slowness = 1.0  # a flush takes this many times FLUSH_TIME (a slow drive)
        # Completions go to the node's current core (set by the server harness).
        self.on_flushed: Callable[[int], None] = lambda lsn: None
        self.on_flush_failed: Callable[[str], None] = lambda err: None
        self.on_snapshot: Callable[[int, bool], None] = lambda lsn, ok: None
        self.on_transfer: Callable[[int, bytes | None], None] = lambda key, data: None

    # ------------------------------------------------------------ the log
    def last_lsn(self) -> int:
        """A snapshot may be ahead of the synced log (it includes records not yet
        flushed): recovery starts from it then, as the real one does."""
        return max(self.log[-1][0] if self.log else 0, max(self.snaps, default=0))

    def _append(self, records: list[tuple[int, bytes]]) -> None:
        for lsn, payload in records:
            if lsn != self.last_lsn() + 1:
                raise AssertionError(f"{self.name}: append {lsn} after {self.last_lsn()}")
            self.log.append((lsn, payload))

    def flush(self, batch: Batch) -> None:
        assert self.inflight is None, "one flush at a time"
        self.inflight = batch
        gen = self.gen
        self.flushes += 1
        fail = self.fail_flushes > 0
        if fail:
            self.fail_flushes -= 1

        def done() -> None:
            if gen != self.gen or self.inflight is not batch:
                return
            self.inflight = None
            if fail:
                self.on_flush_failed(f"{self.name}: simulated EIO writing the log")
                return
            self._append(frames_of(batch))
            self.on_flushed(batch.last_lsn)

        self.loop.after(self.loop.jitter(*FLUSH_TIME) * self.slowness, done)

    def drain(self, batch: Batch | None) -> None:
        if self.inflight is not None:
            self._append(frames_of(self.inflight))
            self.inflight = None
        if self.fail_drains > 0:
            self.fail_drains -= 1
            raise LogWriteFailed(f"sim:{self.name}", 5, "simulated EIO in a synchronous write")
        if batch is not None:
            if self.fail_flushes > 0:
                self.fail_flushes -= 1
                raise LogWriteFailed(f"sim:{self.name}", 5, "simulated EIO writing the log")
            self._append(frames_of(batch))

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.meta = copy_state(meta)

    def append_history(self, entry: dict[str, Any]) -> None:
        self.history.append(copy_state(entry))  # synced: it survives a crash
        del self.history[:-HISTORY_KEPT]

    def read_history(self) -> list[dict[str, Any]]:
        return [copy_state(e) for e in self.history]

    # ------------------------------------------------- rewriting the log
    def truncate_after(self, lsn: int, why: str) -> Cut:
        cut = [(n, p) for n, p in self.log if n > lsn]
        self.log = [(n, p) for n, p in self.log if n <= lsn]
        self.quarantine.extend(cut)
        dropped = [s for s in self.snaps if s > lsn]
        for s in dropped:
            del self.snaps[s]
        where = Path(f"sim-{self.name}-quarantine") if cut else None
        first, last = (cut[0][0], cut[-1][0]) if cut else (0, 0)
        return Cut(lsn, len(cut), first, last, where, len(dropped))

    def load(self, meta: dict[str, Any]) -> Loaded:
        cuts: list[Cut] = []
        for _ in range(3):
            snap_lsn = max(self.snaps, default=0)
            snapshot = None
            if snap_lsn:
                epoch, state = self.snaps[snap_lsn]
                snapshot = (snap_lsn, epoch, copy_state(state))
            records = [(n, p) for n, p in self.log if n > snap_lsn]
            meta_epoch = meta.get("epoch", 0)
            epoch = max(
                meta_epoch if isinstance(meta_epoch, int) else 0, snapshot[1] if snapshot else 0
            )
            got = replay(self.cfg, self.name, epoch, snapshot, records, self.last_lsn(), meta)
            if isinstance(got, Loaded):
                got.cuts = cuts
                return got
            lsn, _exc = got
            cuts.append(self.truncate_after(lsn - 1, "does-not-apply"))
        raise AssertionError(f"{self.name}: the log does not replay")

    def install(self, lsn: int, epoch: int, state: dict[str, Any]) -> None:
        self.log = []
        self.snaps = {lsn: (epoch, copy_state(state))}

    def reopen(self, next_lsn: int) -> None:
        assert self.last_lsn() == next_lsn - 1, (self.name, self.last_lsn(), next_lsn)

    # ---------------------------------------------------------- children
    def can_snapshot(self) -> bool:
        return not self.snapshotting

    def snapshot(self, lsn: int, epoch: int, state_of: Callable[[], dict[str, Any]]) -> bool:
        if self.snapshotting:
            return False
        self.snapshotting = True
        state = copy_state(state_of())  # the fork's copy-on-write image
        gen = self.gen

        def done() -> None:
            if gen != self.gen:
                return
            self.snapshotting = False
            # The real writer keeps the newest two; older log stays (it archives).
            self.snaps[lsn] = (epoch, state)
            for old in sorted(self.snaps)[:-2]:
                del self.snaps[old]
            self.on_snapshot(lsn, True)

        self.loop.after(self.loop.jitter(*SNAPSHOT_TIME), done)
        return True

    def transfer(self, key: int, state_of: Callable[[], dict[str, Any]]) -> None:
        data: bytes = msgpack.packb(state_of(), use_bin_type=True)
        gen = self.gen

        def done() -> None:
            if gen == self.gen:
                self.on_transfer(key, data)

        self.loop.after(self.loop.jitter(*SNAPSHOT_TIME), done)

    # ------------------------------------------------------------- faults
    def replace(self) -> None:
        """The server's disk is swapped for an empty one (a failed drive): it
        comes back as a fresh server that must copy everything from its peer."""
        self.crash()
        self.log, self.snaps, self.meta = [], {}, {}
        self.history, self.quarantine = [], []

    def crash(self) -> None:
        """The process dies: what was not synced is gone, except that a flush in
        flight may have reached the platter in part."""
        if self.inflight is not None:
            recs = frames_of(self.inflight)
            keep = self.loop.rng.randrange(len(recs) + 1)
            self._append(recs[:keep])
            self.inflight = None
        self.snapshotting = False
        self.gen += 1
