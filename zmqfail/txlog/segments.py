"""The append side of the on-disk transaction log (format: ``frames``).

The node's main thread must never wait for the disk, so work is split in two:
``append``/``take`` run on the main thread and only touch an in-memory buffer;
``write`` runs on the single flusher thread and only touches the file and the
``written_lsn``/``flushed_lsn`` counters. ``take`` hands the whole buffer over
by swapping in a fresh one, so the two sides never share a mutable object.
Plain attribute reads/writes of ints are atomic under the GIL, which is all
the main thread needs to watch the counters. Group commit (how many records
one fsync covers) is the caller's decision: one ``write(sync=True)`` makes a
whole batch durable.

Only use this after ``recovery.recover`` has run on the directory: it refuses
to append to a segment with a damaged tail rather than guess.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

from zmqfail.errors import LogCorrupt, LogWriteFailed
from zmqfail.txlog.buffer import Batch, LogBuffer
from zmqfail.txlog.frames import (
    SEG_HEADER,
    SegmentFile,
    list_segments,
    log_dir,
    read_segment,
    segment_header,
    segment_name,
)
from zmqfail.txlog.fsutil import FILE_MODE, ensure_dir, fsync_dir, write_all

_FULL = (errno.ENOSPC, errno.EDQUOT)


def what_next(err: int | None, where: Path, data_dir: Path) -> str:
    """What an operator does after a failed write in ``where`` (a directory of
    the node's ``data_dir``): free space, or check the disk and restore."""
    if err in _FULL:
        return (
            f"free space on the file system of {where}, then start the node again "
            "(it recovers every record it flushed and rejoins its peer)"
        )
    return (
        f"the disk may be failing: check it (dmesg), then start the node again, or "
        f"restore this server from its peer on sound storage with "
        f"`zmqfail log reset --data-dir {data_dir}`"
    )


class LogIO:
    """The calls DiskLog makes on segment files, in one place so that a test can
    put a failing disk under one log (ENOSPC, EIO after so many bytes) without
    touching the ``os`` module the rest of the process uses."""

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> None:
        write_all(fd, data)

    def fsync(self, fd: int) -> None:
        # Plain fsync: fdatasync would also do for appends (it flushes the size),
        # but measured no faster on ext4 here, and needs no argument about metadata.
        os.fsync(fd)


class DiskLog:
    def __init__(
        self, data_dir: Path, segment_bytes: int, next_lsn: int, io: LogIO | None = None
    ) -> None:
        if next_lsn < 1:
            raise ValueError(f"next_lsn must be >= 1, got {next_lsn}")
        if segment_bytes <= SEG_HEADER.size:
            raise ValueError(f"segment_bytes too small: {segment_bytes}")
        self.io = io or LogIO()  # replaceable while running: tests inject disk faults
        self._data_dir = data_dir
        self._dir = log_dir(data_dir)
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()  # guards file state against close() during write()
        self._fd = -1
        self._path = self._dir
        self._size = 0
        self._has_frames = False
        self._broken: str | None = None
        self._closed = False
        ensure_dir(self._dir)

        # Main-thread (append/take) state: a node's core keeps its own buffer
        # and hands batches to `write`; tools and tests append here.
        self._buffer = LogBuffer(next_lsn)
        # Flusher-thread (write) state.
        self.written_lsn = next_lsn - 1
        self.flushed_lsn = next_lsn - 1

        segs = list_segments(self._dir)
        if not segs:
            self._create_segment(next_lsn)
            return
        last = segs[-1]
        scan = read_segment(last, min_lsn=next_lsn)  # keep no payloads
        if scan.damage is not None:
            d = scan.damage
            raise LogCorrupt(str(last.path), d.offset, f"{d.reason} (run recovery first)")
        if scan.next_lsn != next_lsn:
            raise ValueError(
                f"{last.path} ends before lsn {scan.next_lsn}, but next_lsn is {next_lsn}"
            )
        self._open(last.path, scan.size, scan.count > 0)
        try:
            # The previous run may have died with written-but-unsynced data in
            # the page cache; make it durable so flushed_lsn is true from the start.
            self.io.fsync(self._fd)
            if self._size >= segment_bytes and self._has_frames:
                self._rotate(next_lsn)
        except BaseException:
            self.close()
            raise

    # -- main thread -------------------------------------------------------

    @property
    def next_lsn(self) -> int:
        """The lsn the next ``append`` must carry."""
        return self._buffer.next_lsn

    @property
    def pending_records(self) -> int:
        return self._buffer.pending_records

    @property
    def pending_bytes(self) -> int:
        return self._buffer.pending_bytes

    def append(self, lsn: int, payload: bytes) -> None:
        self._buffer.append(lsn, payload)

    def take(self) -> Batch | None:
        return self._buffer.take()

    # -- flusher thread ----------------------------------------------------

    def write(self, batch: Batch, sync: bool) -> None:
        """Write (and with ``sync`` make durable) one batch.

        Raises LogWriteFailed, naming the file and what to do, when the disk
        refuses; the caller must then acknowledge nothing that is not flushed.
        """
        with self._lock:
            self._check_usable()
            if batch.first_lsn != self.written_lsn + 1:
                raise ValueError(
                    f"batch starts at lsn {batch.first_lsn}, expected {self.written_lsn + 1}"
                )
            try:
                if self._has_frames and self._size + batch.nbytes > self._segment_bytes:
                    self._rotate(batch.first_lsn)
                before = self._size
                try:
                    self.io.write(self._fd, batch.frames)
                except OSError as exc:
                    self._undo_partial(before, exc)
                    raise
                self._size = before + batch.nbytes
                self._has_frames = True
                self.written_lsn = batch.last_lsn
                if sync:
                    self._sync()
            except OSError as exc:
                raise self._failed(exc) from exc

    def sync(self) -> None:
        """Make everything written so far durable (e.g. before a snapshot)."""
        with self._lock:
            self._check_usable()
            if self.flushed_lsn < self.written_lsn:
                try:
                    self._sync()
                except OSError as exc:
                    raise self._failed(exc) from exc

    def close(self) -> None:
        """Sync and close; stop the flusher thread first."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._broken is None and self._fd >= 0 and self.flushed_lsn < self.written_lsn:
                    self._sync()
            finally:
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1

    @property
    def current_segment(self) -> Path:
        return self._path

    # -- internals ---------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError("DiskLog is closed")
        if self._broken is not None:
            raise LogWriteFailed(
                str(self._path),
                None,
                f"{self._path}: log unusable after an earlier failure: {self._broken}",
            )

    def _failed(self, exc: OSError) -> LogWriteFailed:
        """One message: which file, what failed, what is safe, what to do next."""
        what = exc.strerror or str(exc)
        head = (
            f"{self._path}: writing the transaction log failed: {what}; "
            f"nothing after lsn {self.flushed_lsn} is on disk here"
        )
        todo = what_next(exc.errno, self._dir, self._data_dir)
        return LogWriteFailed(str(self._path), exc.errno, f"{head}. Next: {todo}")

    def _sync(self) -> None:
        try:
            self.io.fsync(self._fd)
        except OSError as exc:
            # After a failed fsync the kernel may have dropped the dirty pages and
            # a retry would "succeed" without the data: never trust this file again.
            self._broken = f"fsync failed: {exc}"
            raise
        self.flushed_lsn = self.written_lsn

    def _undo_partial(self, size: int, exc: OSError) -> None:
        # A half-written frame would look like a torn tail in the middle of the
        # log once more frames follow; cut it so the batch can be retried.
        try:
            os.ftruncate(self._fd, size)
        except OSError:
            self._broken = f"write failed ({exc}) and the partial frame could not be cut"

    def _open(self, path: Path, size: int, has_frames: bool) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
        self._path = path
        self._size = size
        self._has_frames = has_frames

    def _create_segment(self, first_lsn: int) -> None:
        # Header written to a temp name and renamed, so a segment file either
        # does not exist or has a complete header; then the name is made durable.
        path = self._dir / segment_name(first_lsn)
        tmp = self._dir / f".{path.name}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(tmp, flags, FILE_MODE)
        try:
            self.io.write(fd, segment_header(first_lsn))
            self.io.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        if path.exists():
            os.unlink(tmp)
            raise FileExistsError(f"segment {path} already exists")
        os.replace(tmp, path)
        fsync_dir(self._dir)
        self._open(path, SEG_HEADER.size, False)

    def _rotate(self, first_lsn: int) -> None:
        # The old segment must be durable before any later segment can be:
        # recovery treats damage in a non-last segment as corruption.
        self._sync()
        os.close(self._fd)
        self._fd = -1
        try:
            self._create_segment(first_lsn)
        except OSError as exc:
            self._broken = f"creating segment {segment_name(first_lsn)} failed: {exc}"
            raise

    def segments(self) -> list[SegmentFile]:
        return list_segments(self._dir)
