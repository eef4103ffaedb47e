"""The node's storage, as the core's `Disk` port: the log writer on its own
thread, the meta file, snapshots and table images from forked children, and
cutting the log back when histories part.

fsync releases the GIL, so while one batch is being made durable the loop
keeps processing the next (group commit overlapped with the CPU); the writer
reports on an inproc socket the loop polls. Snapshots and table images are
written by a forked child (a copy-on-write image of the tables at one LSN):
a stall of a few hundred ms would look like death to peers and clients.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import zmq

from zmqfail.config import ClusterConfig
from zmqfail.core.checkpoint import SNAPSHOT_RETRY
from zmqfail.core.ports import Loaded
from zmqfail.errors import LogWriteFailed
from zmqfail.node import clock, tables
from zmqfail.node.flusher import Flusher
from zmqfail.txlog import histfile
from zmqfail.txlog.buffer import Batch
from zmqfail.txlog.frames import log_dir
from zmqfail.txlog.fsutil import write_file
from zmqfail.txlog.retention import Retention
from zmqfail.txlog.segments import DiskLog, LogIO, what_next
from zmqfail.txlog.snapshot import (
    META_NAME,
    snap_dir,
    snapshot_name,
    write_meta,
    write_snapshot,
)
from zmqfail.txlog.truncate import Cut, truncate_after

log = logging.getLogger("zmqfail.node")


@dataclass(slots=True)
class Child:
    """A forked child writing a snapshot (key 0) or a table image (key > 0)."""

    pid: int
    key: int
    lsn: int
    path: Path
    started: float


class RealDisk:
    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        cfg: ClusterConfig,
        name: str,
        next_lsn: int,
        on_new_notify: Callable[[zmq.Socket[bytes] | None, zmq.Socket[bytes]], None],
        io: LogIO | None = None,
        on_flush: Callable[[float], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.name = name
        self.data_dir = cfg.node(name).data_dir
        self._on_new_notify = on_new_notify  # (old, new) flusher notify sockets to poll
        self._io = io  # the log's file calls (metrics time each fsync)
        self._on_flush = on_flush  # seconds one background flush took (metrics)
        self.retention: Retention = cfg.retention.for_node(cfg.node(name))
        self.children: list[Child] = []
        self._late: list[tuple[int, bool]] = []  # snapshots waited for outside reap()
        self.disklog: DiskLog | None = None
        self.flusher: Flusher | None = None
        self.reopen(next_lsn)

    # ------------------------------------------------------------- the log
    def reopen(self, next_lsn: int) -> None:
        old = self.flusher.notify if self.flusher is not None else None
        self._close_log()
        self.disklog = DiskLog(self.data_dir, self.cfg.flush.segment_bytes, next_lsn, self._io)
        self.flusher = Flusher(self.ctx, self.disklog, self.name)
        self._on_new_notify(old, self.flusher.notify)

    def _close_log(self) -> None:
        if self.flusher is not None:
            self.flusher.close()
            self.flusher = None
        if self.disklog is not None:
            self.disklog.close()
            self.disklog = None

    @property
    def notify(self) -> zmq.Socket[bytes]:
        assert self.flusher is not None
        return self.flusher.notify

    def flush(self, batch: Batch) -> None:
        assert self.flusher is not None
        self.flusher.submit(batch)

    def flushed(self) -> list[int]:
        """Completions since the last call: flushed LSNs (-1: the write failed)."""
        done: list[int] = []
        if self.flusher is None:
            return done
        while (got := self.flusher.recv_done()) is not None:
            done.append(got[0])
            if got[0] >= 0 and self._on_flush is not None:
                self._on_flush(got[1])
        return done

    @property
    def error(self) -> str:
        return self.flusher.error if self.flusher is not None else ""

    def drain(self, batch: Batch | None) -> None:
        """Wait for the write in flight, then write `batch` (if any) durably now."""
        flusher = self.flusher
        assert flusher is not None and self.disklog is not None
        deadline = clock.now() + 30.0
        while flusher.busy and clock.now() < deadline:
            if flusher.notify.poll(100):
                done = flusher.recv_done()
                if done is not None and done[0] < 0:
                    raise LogWriteFailed(str(self.data_dir), None, flusher.error)
        if batch is not None:
            self.disklog.write(batch, sync=True)

    def write_meta(self, meta: dict[str, Any]) -> None:
        """The epoch and the right to lead live here: a node that cannot record
        them must stop (LogWriteFailed), not serve on what it could not write."""
        try:
            write_meta(self.data_dir, meta)
        except OSError as exc:
            path = self.data_dir / META_NAME
            todo = what_next(exc.errno, self.data_dir, self.data_dir)
            raise LogWriteFailed(
                str(path),
                exc.errno,
                f"{path}: writing the node's meta file failed: {exc.strerror or exc}; "
                f"the previous one is intact. Next: {todo}",
            ) from None

    def append_history(self, entry: dict[str, Any]) -> None:
        histfile.append(self.data_dir, entry)

    def read_history(self) -> list[dict[str, Any]]:
        return histfile.read(self.data_dir).entries

    # ------------------------------------------------- rewriting the log
    def truncate_after(self, lsn: int, why: str) -> Cut:
        self._wait_children(snapshots_only=True)
        self._close_log()
        return truncate_after(self.data_dir, lsn, reason=why)

    def load(self, meta: dict[str, Any]) -> Loaded:
        self._close_log()
        return tables.load(self.cfg, self.data_dir, self.name, meta)

    def install(self, lsn: int, epoch: int, state: dict[str, Any]) -> None:
        self._wait_children(snapshots_only=True)
        self._close_log()
        for d, pattern in ((log_dir(self.data_dir), "*.zfl"), (snap_dir(self.data_dir), "*.zfs")):
            for f in d.glob(pattern) if d.exists() else []:
                f.unlink()
        write_snapshot(self.data_dir, lsn, epoch, state, self.retention)

    # --------------------------------------------------------- children
    def can_snapshot(self) -> bool:
        return not any(c.key == 0 for c in self.children)

    def snapshot(self, lsn: int, epoch: int, state_of: Callable[[], dict[str, Any]]) -> bool:
        if not self.can_snapshot():
            return False
        data_dir, retention = self.data_dir, self.retention
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                write_snapshot(data_dir, lsn, epoch, state_of(), retention)
                code = 0
            except OSError as exc:
                # The parent words the message (logging from a forked child can
                # deadlock): the errno is the exit code.
                code = exc.errno if exc.errno and 1 < exc.errno < 126 else 1
            finally:
                os._exit(code)
        self.children.append(Child(pid, 0, lsn, data_dir, clock.now()))
        return True

    def transfer(self, key: int, state_of: Callable[[], dict[str, Any]]) -> None:
        path = self.data_dir / f"transfer-{key}-{os.getpid()}.tmp"
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                write_file(path, msgpack.packb(state_of(), use_bin_type=True))
                code = 0
            finally:
                os._exit(code)
        self.children.append(Child(pid, key, 0, path, clock.now()))

    def reap(self) -> tuple[list[tuple[int, bool]], list[tuple[int, bytes | None]]]:
        """Children that finished: (snapshot lsn, ok) and (image key, bytes or None)."""
        snaps, self._late = self._late, []
        images: list[tuple[int, bytes | None]] = []
        for child in list(self.children):
            done, status = os.waitpid(child.pid, os.WNOHANG)
            if done == 0:
                continue
            self.children.remove(child)
            code = os.waitstatus_to_exitcode(status)
            ok = code == 0
            if child.key == 0:
                took = clock.now() - child.started
                if ok:
                    log.info("%s: snapshot at lsn %d in %.3fs", self.name, child.lsn, took)
                else:
                    self._snapshot_failed(child.lsn, code)
                snaps.append((child.lsn, ok))
            else:
                data: bytes | None = None
                with contextlib.suppress(OSError):
                    data = child.path.read_bytes() if ok else None
                with contextlib.suppress(OSError):
                    child.path.unlink()
                images.append((child.key, data))
            # Objects alive now are long-lived tables: keep the cyclic GC off them.
            gc.freeze()
        return snaps, images

    def _snapshot_failed(self, lsn: int, code: int) -> None:
        """One line: the file, why, that nothing is at risk, what to do."""
        path = snap_dir(self.data_dir) / snapshot_name(lsn)
        why = os.strerror(code) if code > 1 else f"the writer exited with status {code}"
        log.error(
            "%s: %s: writing the snapshot failed: %s; nothing is lost (the log holds every "
            "record it would cover) and the node retries in %.0f s. Next: %s",
            self.name,
            path,
            why,
            SNAPSHOT_RETRY,
            what_next(code if code > 1 else None, snap_dir(self.data_dir), self.data_dir),
        )

    def _wait_children(self, snapshots_only: bool = False) -> None:
        for child in list(self.children):
            if snapshots_only and child.key != 0:
                continue
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child.pid, 0)
            self.children.remove(child)
            if child.key == 0:
                # Its snapshot may be of a history being cut: count it as not made.
                self._late.append((child.lsn, False))
            else:
                with contextlib.suppress(OSError):
                    child.path.unlink()

    def close(self) -> None:
        self._wait_children()
        self._close_log()
