"""Crash recovery, plus read-only iteration and verification of a data dir.

The rules separate what a crash can do from what it cannot:

* A crash can only damage the *end* of the *last* segment (an append that did
  not finish), because appends are sequential and a segment is fsynced before
  the next one is created. Such a torn tail (incomplete frame header, length
  running past EOF, crc mismatch on a final frame with nothing after it, or a
  zero-filled tail) never held an acknowledged record, so ``recover`` cuts it
  off in place and carries on. A last segment whose header is incomplete (crash
  while creating it) is removed.
* Anything else (a bad frame followed by more data, damage in a non-last
  segment, an lsn gap or regression, a bad header on a non-last segment, a log
  starting after the snapshot's lsn + 1) means acknowledged data may be gone,
  so it raises ``LogCorrupt`` with the file and byte offset, and a human
  decides.
* A damaged newest snapshot raises too, instead of silently using an older one
  (see ``snapshot.newest_snapshot``).

Every ``LogCorrupt`` from ``recover`` says what to do next (restore from the
peer with ``zmqfail log reset``), and every cut of a torn tail is logged with
its file, so no damage is repaired or refused without a word.

``iter_records`` and ``verify`` never modify anything, so they are safe on a
live node's directory or on evidence being investigated. They read the
archive (``retention``) as well as the live log: the whole audit trail.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zmqfail.errors import LogCorrupt, ProtocolError
from zmqfail.txlog.frames import SegmentFile, SegmentScan, list_segments, log_dir, read_segment
from zmqfail.txlog.fsutil import fsync_dir
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.retention import ARCHIVE_DIRNAME
from zmqfail.txlog.snapshot import (
    META_NAME,
    Snapshot,
    list_snapshots,
    load_snapshot,
    newest_snapshot,
    read_meta,
)

log = logging.getLogger("zmqfail.txlog")

_MAX_PROBLEMS = 50


def restore_advice(data_dir: Path) -> str:
    """What an operator does about a data dir the node cannot start from."""
    return (
        "acknowledged records may be damaged, so the node will not start from this data. "
        f"If its peer is serving: `zmqfail log reset --data-dir {data_dir}` moves the damaged "
        "files aside, and the node copies its peer's state when started again. "
        f"`zmqfail log verify --data-dir {data_dir}` lists all damage"
    )


def has_data(data_dir: Path, archive: Path | None = None) -> bool:
    """Does this directory hold anything a zmqfail node wrote?"""
    arch = archive if archive is not None else data_dir / ARCHIVE_DIRNAME
    return bool(
        (data_dir / META_NAME).exists()
        or list_segments(log_dir(data_dir))
        or list_snapshots(data_dir)
        or list_segments(arch)
    )


@dataclass(slots=True)
class Recovery:
    snapshot: Snapshot | None  # the newest one, already checked
    records: list[tuple[int, bytes]]  # after the snapshot, consecutive
    last_lsn: int  # max(snapshot lsn, last log lsn); 0 for a fresh dir. Next append: +1
    truncated_bytes: int  # torn tail bytes cut (including a removed header-less segment)
    epoch: int  # max of the snapshot's epoch and meta["epoch"]; records may carry higher
    meta: dict[str, Any] = field(default_factory=dict)
    removed: list[Path] = field(default_factory=list)  # files deleted by recovery


def _gap(scan_path: Path, expect: int, first: int) -> LogCorrupt:
    what = "gap" if first > expect else "regression"
    return LogCorrupt(
        str(scan_path),
        0,
        f"lsn {what} between segments: expected {expect}, segment starts at {first}",
    )


def recover(data_dir: Path) -> Recovery:
    """Bring the log to a consistent state after a crash and return what to replay.

    Modifies the directory only to cut a torn tail, remove a header-less last
    segment, or delete segments that lie entirely below the snapshot's lsn when
    the log ends before it (the snapshot carries those records; keeping them
    would leave a gap in front of the next append). Damage it must not repair
    raises ``LogCorrupt`` naming the file and saying what to do next.
    """
    try:
        return _recover(data_dir)
    except LogCorrupt as exc:
        raise LogCorrupt(exc.path, exc.offset, exc.reason, restore_advice(data_dir)) from None


def _recover(data_dir: Path) -> Recovery:
    snap = newest_snapshot(data_dir)
    snap_lsn = snap.lsn if snap is not None else 0
    meta = read_meta(data_dir)
    epoch = snap.epoch if snap is not None else 0
    meta_epoch = meta.get("epoch")
    if isinstance(meta_epoch, int) and meta_epoch > epoch:
        epoch = meta_epoch

    ldir = log_dir(data_dir)
    segs = list_segments(ldir)
    records: list[tuple[int, bytes]] = []
    truncated = 0
    removed: list[Path] = []
    if segs and not 1 <= segs[0].first_lsn <= snap_lsn + 1:
        first = segs[0].first_lsn
        covered = f"the newest snapshot covers up to {snap_lsn}" if snap else "there is no snapshot"
        raise LogCorrupt(
            str(segs[0].path),
            0,
            f"log starts at lsn {first} but {covered}: records before it are missing "
            "(a snapshot or segment deleted?)",
        )
    expect: int | None = None
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if expect is not None and seg.first_lsn != expect:
            raise _gap(seg.path, expect, seg.first_lsn)
        scan = read_segment(seg, min_lsn=snap_lsn + 1)
        d = scan.damage
        if d is not None:
            if not (last and d.torn):
                raise LogCorrupt(str(seg.path), d.offset, d.reason)
            if not scan.header_ok:
                log.warning(
                    "%s: removed: the newest segment has no complete header (%s), a crash "
                    "while creating it; it held no record",
                    seg.path,
                    d.reason,
                )
                os.unlink(seg.path)
                fsync_dir(ldir)
                removed.append(seg.path)
                truncated += scan.size
                break
            log.warning(
                "%s: cut a torn tail of %d bytes at offset %d (%s): an append a crash "
                "interrupted, never acknowledged",
                seg.path,
                scan.torn_bytes,
                d.offset,
                d.reason,
            )
            _truncate(seg.path, scan.end)
            truncated += scan.torn_bytes
        records.extend(scan.records)
        expect = scan.next_lsn
    log_last = expect - 1 if expect is not None else 0

    if expect is not None and log_last < snap_lsn:
        live = [s for s in segs if s.path not in removed]
        for s in live:
            os.unlink(s.path)
            removed.append(s.path)
        if live:
            fsync_dir(ldir)
        log_last = 0
    return Recovery(snap, records, max(snap_lsn, log_last), truncated, epoch, meta, removed)


def _truncate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class TornTail:
    path: Path
    offset: int
    nbytes: int
    reason: str


def _archived(
    data_dir: Path, archive: Path | None, live: list[SegmentFile]
) -> tuple[list[SegmentFile], list[SegmentFile]]:
    """Archived segments older than the live log, and those the live log supersedes
    (same or later lsns: this server resynchronised since they were archived)."""
    arch = list_segments(archive if archive is not None else data_dir / ARCHIVE_DIRNAME)
    if not live:
        return arch, []
    first = live[0].first_lsn
    return [s for s in arch if s.first_lsn < first], [s for s in arch if s.first_lsn >= first]


def iter_records(
    data_dir: Path,
    from_lsn: int = 0,
    on_torn_tail: Callable[[TornTail], None] | None = None,
    *,
    to_lsn: int | None = None,
    archive: Path | None = None,
    include_archive: bool = True,
    on_gap: Callable[[str], None] | None = None,
) -> Iterator[tuple[int, bytes]]:
    """Yield every (lsn, payload) from ``from_lsn`` to ``to_lsn``, read-only:
    the archive (default ``DATA_DIR/archive``), then the live log; snapshots are
    not included.

    Stops cleanly before a torn tail of the last segment (reporting it through
    ``on_torn_tail``) because a live writer may be in the middle of an append;
    any other damage raises ``LogCorrupt`` after the good records before it.
    Records missing between archived segments, or between the archive and the
    live log, are history this server never kept (it caught up from a
    snapshot, or segments were dropped before): reported through ``on_gap``.
    A gap inside the live log is damage and raises.
    """
    live = list_segments(log_dir(data_dir))
    arch, superseded = _archived(data_dir, archive, live) if include_archive else ([], [])
    if superseded and on_gap is not None:
        on_gap(
            f"{superseded[0].path.parent}: {len(superseded)} archived segment(s) from lsn "
            f"{superseded[0].first_lsn} on overlap the live log (this server resynchronised "
            "from its peer since); the live log's records are shown"
        )
    end = to_lsn if to_lsn is not None else float("inf")
    segs = [(seg, False) for seg in arch] + [(seg, True) for seg in live]
    expect: int | None = None
    prev_live = False
    for i, (seg, is_live) in enumerate(segs):
        if seg.first_lsn > end:
            return
        nxt = segs[i + 1][0].first_lsn if i + 1 < len(segs) else None
        if nxt is not None and nxt <= from_lsn:
            expect = None
            continue  # wholly before from_lsn; gaps in skipped history are not our business
        if expect is not None and seg.first_lsn != expect:
            if seg.first_lsn < expect or (is_live and prev_live):
                raise _gap(seg.path, expect, seg.first_lsn)
            if on_gap is not None:
                on_gap(
                    f"{seg.path}: lsn {expect}..{seg.first_lsn - 1} are in neither this "
                    "server's log nor its archive (it caught up from a snapshot, or they "
                    "were dropped)"
                )
        scan = _read(seg, from_lsn, data_dir, archive)
        for lsn, payload in scan.records:
            if lsn > end:
                return
            yield lsn, payload
        d = scan.damage
        if d is not None:
            if is_live and nxt is None and d.torn:
                if on_torn_tail is not None:
                    on_torn_tail(TornTail(seg.path, d.offset, scan.torn_bytes, d.reason))
                return
            raise LogCorrupt(str(seg.path), d.offset, d.reason)
        expect = scan.next_lsn
        prev_live = is_live


def _read(seg: SegmentFile, min_lsn: int, data_dir: Path, archive: Path | None) -> SegmentScan:
    try:
        return read_segment(seg, min_lsn)
    except FileNotFoundError:
        pass
    # A running node may have archived it since the directory was listed.
    moved = (archive if archive is not None else data_dir / ARCHIVE_DIRNAME) / seg.path.name
    try:
        return read_segment(SegmentFile(moved, seg.first_lsn), min_lsn)
    except FileNotFoundError:
        raise LogCorrupt(
            str(seg.path), 0, "segment vanished while reading (dropped by a running node?)"
        ) from None


@dataclass(slots=True)
class VerifyReport:
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    snapshot_lsn: int | None = None  # newest loadable snapshot
    first_lsn: int = 0  # first record in the archive or the log, 0 if none
    last_lsn: int = 0
    records: int = 0  # in the live log
    segments: int = 0  # in the live log
    archived_records: int = 0
    archived_segments: int = 0
    torn_tail_bytes: int = 0

    def problem(self, text: str) -> None:
        self.ok = False
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(text)
        elif len(self.problems) == _MAX_PROBLEMS:
            self.problems.append("... further problems not listed")


def _check_payloads(rep: VerifyReport, scan: SegmentScan) -> None:
    for lsn, payload in scan.records:
        try:
            rec = TxRecord.decode(payload)
        except ProtocolError as exc:
            rep.problem(f"{scan.path}: lsn {lsn}: payload is not a transaction record: {exc}")
            continue
        if rec.lsn != lsn:
            rep.problem(f"{scan.path}: frame lsn {lsn} holds a record with lsn {rec.lsn}")


def _verify_segments(rep: VerifyReport, segs: list[SegmentFile], live: bool) -> int:
    """Check one run of segments (the archive or the live log); returns its last lsn."""
    expect: int | None = None
    end = 0
    for i, seg in enumerate(segs):
        last = live and i == len(segs) - 1
        if expect is not None and seg.first_lsn != expect:
            if live or seg.first_lsn < expect:
                rep.problem(str(_gap(seg.path, expect, seg.first_lsn)))
            else:
                rep.warnings.append(
                    f"{seg.path}: archive lacks lsn {expect}..{seg.first_lsn - 1} (this server "
                    "caught up from a snapshot, or they were dropped)"
                )
        scan = read_segment(seg)
        _check_payloads(rep, scan)
        if scan.count:
            rep.first_lsn = rep.first_lsn or scan.first_lsn
            rep.last_lsn = scan.next_lsn - 1
            if live:
                rep.records += scan.count
            else:
                rep.archived_records += scan.count
        d = scan.damage
        if d is not None:
            if last and d.torn:
                rep.torn_tail_bytes = scan.torn_bytes
                rep.warnings.append(
                    f"{seg.path}: offset {d.offset}: torn tail of "
                    f"{scan.torn_bytes} bytes ({d.reason}); recovery will cut it"
                )
            else:
                rep.problem(f"{seg.path}: offset {d.offset}: {d.reason}")
        expect = scan.next_lsn if scan.header_ok else None
        if scan.header_ok:
            end = scan.next_lsn - 1
    return end


def verify(data_dir: Path, archive: Path | None = None) -> VerifyReport:
    """Check everything recovery would, and the archive, without modifying a byte.

    Unlike ``recover`` it keeps going after a problem (resynchronising on the
    next segment) so one run lists as much damage as it can. A directory with
    no zmqfail data at all is a problem too: checking the wrong path must not
    say OK.
    """
    rep = VerifyReport()
    if not has_data(data_dir, archive):
        rep.problem(
            f"{data_dir} holds no zmqfail data (no {META_NAME}, log/, snap/ or archive/): "
            "is it a node's data directory?"
        )
        return rep
    snaps = list_snapshots(data_dir)
    for idx, (_lsn, path) in enumerate(reversed(snaps)):
        try:
            snap = load_snapshot(path)
        except LogCorrupt as exc:
            newest = " (newest: recovery will refuse to start)" if idx == 0 else ""
            rep.problem(f"snapshot {exc}{newest}")
            continue
        if rep.snapshot_lsn is None:
            rep.snapshot_lsn = snap.lsn
    try:
        read_meta(data_dir)
    except LogCorrupt as exc:
        rep.problem(f"meta {exc}")

    segs = list_segments(log_dir(data_dir))
    arch, superseded = _archived(data_dir, archive, segs)
    rep.segments = len(segs)
    rep.archived_segments = len(arch)
    if superseded:
        rep.warnings.append(
            f"{superseded[0].path.parent}: {len(superseded)} archived segment(s) from lsn "
            f"{superseded[0].first_lsn} on overlap the live log (this server resynchronised "
            "from its peer since); not checked"
        )
    arch_end = _verify_segments(rep, arch, live=False)
    snap_lsn = rep.snapshot_lsn or 0
    if segs and segs[0].first_lsn > snap_lsn + 1:
        rep.problem(
            f"{segs[0].path}: log starts at lsn {segs[0].first_lsn} but no snapshot "
            f"covers up to {segs[0].first_lsn - 1} (newest snapshot lsn {snap_lsn})"
        )
    elif arch and segs and arch_end + 1 < segs[0].first_lsn:
        rep.warnings.append(
            f"archive ends at lsn {arch_end}, the log starts at {segs[0].first_lsn}: "
            "the records between are in the snapshot only"
        )
    log_end = _verify_segments(rep, segs, live=True)
    if segs and snap_lsn and log_end < snap_lsn:
        rep.warnings.append(
            f"log ends at lsn {log_end}, before the snapshot's {snap_lsn}; "
            "recovery will drop the covered segments"
        )
    return rep
