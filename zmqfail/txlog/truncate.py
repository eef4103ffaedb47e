"""Cutting a log back to an LSN, keeping what is cut in a quarantine file.

A server whose history departs from the primary it now follows (it served at
an older epoch, or came back from a power loss with records nobody else has)
must drop its records after the point where the two histories part. Those
records may include requests it acknowledged: they are never deleted, but
written to ``DATA_DIR/quarantine/<time>-<why>-<first lsn>/log/`` as a log of
its own (``zmqfail log dump --data-dir`` that directory reads it) before the
log is cut, and the caller reports how many.

Snapshots that include records after the cut are removed too (the tables they
hold are part of the abandoned history); the caller rebuilds its tables from
what remains with ``recovery.recover``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from zmqfail.txlog.frames import (
    encode_frame,
    list_segments,
    log_dir,
    read_segment,
    segment_header,
    segment_name,
)
from zmqfail.txlog.fsutil import FILE_MODE, ensure_dir, fsync_dir
from zmqfail.txlog.snapshot import list_snapshots

QUARANTINE_DIRNAME = "quarantine"


def quarantine_dir(data_dir: Path) -> Path:
    return data_dir / QUARANTINE_DIRNAME


@dataclass(frozen=True, slots=True)
class Cut:
    """What `truncate_after` removed."""

    kept_lsn: int  # the last LSN left in the log
    records: int  # records moved to quarantine
    first_lsn: int  # first and last LSN of those records (0 when none)
    last_lsn: int
    quarantine: Path | None  # the directory holding them (a data dir with a log/)
    snapshots_removed: int


def truncate_after(data_dir: Path, lsn: int, reason: str = "diverged") -> Cut:
    """Remove every record after `lsn` from the log (and every snapshot taken
    after it), writing the removed records to a quarantine file first.

    The log must not be open for writing meanwhile (the node closes its disk
    log first). Raises OSError on a write failure, leaving the log untouched
    unless the quarantine file is durable.
    """
    ldir = log_dir(data_dir)
    segs = list_segments(ldir)
    cut_at: list[tuple[Path, int]] = []  # (segment, byte offset to truncate to)
    drop: list[Path] = []
    removed: list[tuple[int, bytes]] = []
    for seg in segs:
        scan = read_segment(seg)
        if seg.first_lsn > lsn:
            drop.append(seg.path)
            removed.extend(scan.records)
            continue
        if scan.next_lsn - 1 > lsn:
            # Find the byte offset where lsn + 1 starts: header + frames up to lsn.
            offset = len(segment_header(seg.first_lsn))
            for rec_lsn, payload in scan.records:
                if rec_lsn > lsn:
                    removed.append((rec_lsn, payload))
                else:
                    offset += len(encode_frame(rec_lsn, payload))
            cut_at.append((seg.path, offset))
    qpath: Path | None = None
    if removed:
        removed.sort()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        first = removed[0][0]
        qpath = quarantine_dir(data_dir) / f"{stamp}-{reason}-{first}"
        qlog = log_dir(qpath)
        ensure_dir(qlog)
        qseg = qlog / segment_name(first)
        tmp = qseg.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            os.write(fd, segment_header(first))
            for rec_lsn, payload in removed:
                os.write(fd, encode_frame(rec_lsn, payload))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, qseg)
        fsync_dir(qlog)
        fsync_dir(qpath.parent)
    for path, offset in cut_at:
        fd = os.open(path, os.O_RDWR)
        try:
            os.ftruncate(fd, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
    for path in drop:
        path.unlink()
    snaps = 0
    for snap_lsn, spath in list_snapshots(data_dir):
        if snap_lsn > lsn:
            spath.unlink()
            snaps += 1
    if drop:
        fsync_dir(ldir)
    if snaps:
        fsync_dir(spath.parent)
    return Cut(
        lsn,
        len(removed),
        removed[0][0] if removed else 0,
        removed[-1][0] if removed else 0,
        qpath,
        snaps,
    )
