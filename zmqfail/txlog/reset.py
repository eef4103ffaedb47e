"""`zmqfail log reset`: make a server with damaged data copy its peer's state.

Deleting a damaged log would destroy the evidence and, if the operator picked
the wrong server, the only copy of acknowledged records. So nothing is
deleted: ``log/`` and ``snap/`` move into ``DATA_DIR/damaged-<UTC time>/`` and
the metadata is rewritten so that the node, when started, may not lead and
must resynchronise: it waits for its active peer and takes a snapshot or
records from it. The archive (the audit trail) stays where it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zmqfail.errors import LogCorrupt, ZmqfailError
from zmqfail.txlog.frames import LOG_DIRNAME
from zmqfail.txlog.fsutil import DIR_MODE, FILE_MODE, fsync_dir, write_file
from zmqfail.txlog.recovery import has_data
from zmqfail.txlog.snapshot import META_NAME, SNAP_DIRNAME, read_meta, write_meta

LOCK_NAME = "LOCK"  # the node holds an flock on DATA_DIR/LOCK while it runs
DAMAGED_PREFIX = "damaged-"


@dataclass(frozen=True, slots=True)
class ResetResult:
    aside: Path  # where the damaged files went
    moved: tuple[str, ...]  # names moved (log, snap, a copy of meta.zfm)
    epoch: int
    meta_note: str  # "" or why the old metadata could not be kept


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """Hold the node's own lock, so no node starts (or runs) during the reset."""
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pidfile = data_dir / "node.pid"
            pid = pidfile.read_text().strip() if pidfile.exists() else "?"
            raise ZmqfailError(
                f"{data_dir} is in use by a running node (pid {pid}): stop it first"
            ) from None
        yield
    finally:
        os.close(fd)


def _aside_dir(data_dir: Path, now: float) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    path = data_dir / f"{DAMAGED_PREFIX}{stamp}"
    n = 1
    while path.exists():
        path = data_dir / f"{DAMAGED_PREFIX}{stamp}-{n}"
        n += 1
    return path


def reset_data_dir(data_dir: Path, now: float | None = None) -> ResetResult:
    """Move the log and snapshots aside and mark the node as one that must resync."""
    if not data_dir.is_dir():
        raise ZmqfailError(f"data dir {data_dir} does not exist or is not a directory")
    if not has_data(data_dir):
        raise ZmqfailError(
            f"{data_dir} holds no zmqfail data (no {META_NAME}, log/ or snap/): nothing to reset"
        )
    with _exclusive(data_dir):
        note = ""
        try:
            meta: dict[str, Any] = read_meta(data_dir)
        except LogCorrupt as exc:
            meta = {}
            note = f"the old metadata was unreadable ({exc.reason}); its epoch is lost"
        aside = _aside_dir(data_dir, time.time() if now is None else now)
        aside.mkdir(mode=DIR_MODE)
        moved: list[str] = []
        for name in (LOG_DIRNAME, SNAP_DIRNAME):
            src = data_dir / name
            if src.exists():
                os.replace(src, aside / name)
                moved.append(name)
        meta_path = data_dir / META_NAME
        if meta_path.exists():
            write_file(aside / META_NAME, meta_path.read_bytes())
            moved.append(f"copy of {META_NAME}")
        fsync_dir(aside)
        fsync_dir(data_dir)
        epoch = meta.get("epoch", 0)
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            note = note or f"the old metadata held a bad epoch {epoch!r}"
            epoch = 0
        # Read-modify-write: keys this module does not know about survive.
        write_meta(data_dir, {**meta, "epoch": epoch, "active": False, "resync": True})
    return ResetResult(aside, tuple(moved), epoch, note)
