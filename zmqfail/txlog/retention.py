"""What happens to log segments once a snapshot makes them unnecessary for recovery.

Recovery only needs the log from the older kept snapshot on (``snapshot.prune``);
the segments before it are the audit trail: every order ever processed, which
a trading venue's regulator may ask to see. The policy decides their fate:

* ``archive`` (the default): move them to an archive directory, out of the
  live log. Recovery time stays bounded (it reads only ``log/``) and nothing
  processed is ever lost; ``log dump`` and ``log verify`` read the archive
  too. The price is disk space that grows for ever: ship the archive
  elsewhere or delete old files deliberately.
* ``keep``: leave them in ``log/``. Nothing is lost either, but every start
  reads (checks the crc of) the whole history.
* ``drop``: delete them once they are older than ``drop_after_days`` (0: at
  once, the behaviour before retention existed). Bounded disk, no audit trail.

The decision (which segments, oldest first) is plain Python; moving and
deleting files is the thin part at the end.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from zmqfail.txlog.frames import SegmentFile, list_segments, log_dir
from zmqfail.txlog.fsutil import atomic_write, ensure_dir, fsync_dir

ARCHIVE_DIRNAME = "archive"
REPLACED_DIRNAME = "replaced"  # inside the archive: older copies a new segment displaced
_DAY = 86400.0


class RetentionPolicy(enum.Enum):
    KEEP = "keep"
    ARCHIVE = "archive"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Retention:
    policy: RetentionPolicy = RetentionPolicy.ARCHIVE
    archive_dir: Path | None = None  # None: DATA_DIR/archive
    drop_after_days: float = 0.0

    def archive(self, data_dir: Path) -> Path:
        return self.archive_dir if self.archive_dir is not None else data_dir / ARCHIVE_DIRNAME


DEFAULT_RETENTION = Retention()


def retirable(
    segs: Sequence[tuple[int, float]], covered_lsn: int, retention: Retention, now: float
) -> int:
    """How many of the oldest segments leave the live log.

    ``segs`` is (first lsn, modification time) per segment, oldest first. A
    segment may go when every record in it is at or below ``covered_lsn``
    (the next segment starts at or below ``covered_lsn + 1``); the newest one
    never goes (the writer appends to it). Oldest first and stopping at the
    first that must stay, so the live log is always one contiguous run.
    """
    if retention.policy is RetentionPolicy.KEEP:
        return 0
    n = 0
    for (_first, mtime), (nxt_first, _) in itertools.pairwise(segs):
        if nxt_first - 1 > covered_lsn:
            break
        if (
            retention.policy is RetentionPolicy.DROP
            and now - mtime < retention.drop_after_days * _DAY
        ):
            break
        n += 1
    return n


def retire_segments(
    data_dir: Path, covered_lsn: int, retention: Retention = DEFAULT_RETENTION
) -> list[Path]:
    """Apply ``retention`` to the live log; returns the segments taken out of it."""
    ldir = log_dir(data_dir)
    segs = list_segments(ldir)
    ages: list[tuple[int, float]] = []
    for s in segs:
        try:
            ages.append((s.first_lsn, s.path.stat().st_mtime))
        except FileNotFoundError:
            return []  # another process is pruning this directory right now
    n = retirable(ages, covered_lsn, retention, time.time())
    if n == 0:
        return []
    gone: list[Path] = []
    if retention.policy is RetentionPolicy.ARCHIVE:
        dest = retention.archive(data_dir)
        ensure_dir(dest)
        for seg in segs[:n]:
            _archive_one(seg, dest)
            gone.append(seg.path)
        fsync_dir(dest)
    else:
        for seg in segs[:n]:
            seg.path.unlink(missing_ok=True)
            gone.append(seg.path)
    fsync_dir(ldir)
    return gone


def _same_file(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    return bool(hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest())


def _archive_one(seg: SegmentFile, dest: Path) -> None:
    """Move one segment into the archive without ever having it in neither place."""
    target = dest / seg.path.name
    if target.exists():
        if _same_file(seg.path, target):
            seg.path.unlink()  # an earlier move copied it and died before the unlink
            return
        # Same first lsn, other content: this server's history was rewritten
        # (it resynchronised from a peer). Keep the old copy as evidence.
        aside = dest / REPLACED_DIRNAME
        ensure_dir(aside)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        os.replace(target, aside / f"{seg.path.name}.{stamp}")
        fsync_dir(aside)
    try:
        os.replace(seg.path, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # The archive is on another file system: copy (a segment is at most
        # flush.segment_bytes), make the copy durable, then unlink.
        atomic_write(target, seg.path.read_bytes())
        seg.path.unlink()
