"""Small durability helpers shared by the log, snapshot and meta writers.

A file's data is only safe after ``fsync`` on the file, and its *name* is only
safe after ``fsync`` on the directory holding it; forgetting the second half is
the classic way to lose a freshly created segment or a renamed snapshot in a
power cut. Keeping these in one place makes every writer follow the same
pattern.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

# A node's data (every client's orders and sessions, its epoch and history)
# is read and written only by the node's user, who also runs the operator
# tools on it; nothing in it is executed. umask may only tighten these.
FILE_MODE = 0o600
DIR_MODE = 0o700


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (creates, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path) -> None:
    """Create ``path`` (and parents) so that the new entries survive a crash.

    Each directory we create is only reachable if its parent's entry is durable,
    so the parent of every created level is fsynced.
    """
    if path.is_dir():
        return
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        fsync_dir(d.parent)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` may write less than asked (signals, nearly full disk); loop."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_file(path: Path, data: bytes) -> None:
    """Create or replace ``path`` with ``data`` at FILE_MODE (not durable:
    for files that a crash may lose, such as a pid file or a copy)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see either the old or the new file.

    The temporary file lives in the same directory (rename is only atomic within
    one file system) and starts with a dot so directory scans never mistake a
    leftover for a real file.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
