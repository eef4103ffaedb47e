"""Snapshots (format, atomicity, corruption), pruning, replay after a snapshot, meta."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import msgpack
import pytest

from zmqfail.errors import LogCorrupt
from zmqfail.txlog.frames import list_segments, log_dir
from zmqfail.txlog.recovery import recover
from zmqfail.txlog.segments import DiskLog
from zmqfail.txlog.snapshot import (
    list_snapshots,
    load_snapshot,
    prune,
    read_meta,
    snap_dir,
    write_meta,
    write_snapshot,
)

pytestmark = pytest.mark.timeout(30)

STATE = {"books": {"ABC": [[1, 2, 3]]}, "seq": 7, "blob": b"\x00\x01", "n": [1.5, None]}


def append_range(data_dir: Path, first: int, last: int, segment_bytes: int = 400) -> None:
    log = DiskLog(data_dir, segment_bytes, first)
    for lsn in range(first, last + 1):
        log.append(lsn, f"rec-{lsn}".encode() * 4)
        b = log.take()
        assert b is not None
        log.write(b, sync=False)
    log.close()


def seg_firsts(data_dir: Path) -> list[int]:
    return [s.first_lsn for s in list_segments(log_dir(data_dir))]


def test_snapshot_round_trip_and_format(tmp_path: Path) -> None:
    path = write_snapshot(tmp_path, 42, 3, STATE)
    assert path == tmp_path / "snap" / "snap-00000000000000000042.zfs"
    snap = load_snapshot(path)
    assert (snap.lsn, snap.epoch, snap.state) == (42, 3, STATE)
    data = path.read_bytes()
    magic, ver, _res, lsn, epoch, length, crc = struct.unpack_from("<8sHHQQII", data, 0)
    assert (magic, ver, lsn, epoch, length) == (b"ZMQFSNP1", 1, 42, 3, len(data) - 36)
    assert msgpack.unpackb(data[36:], raw=False) == STATE
    assert crc == zlib.crc32(data[:32] + data[36:])


@pytest.mark.parametrize("offset", [0, 9, 14, 22, 40, -1])
def test_snapshot_corruption_raises(tmp_path: Path, offset: int) -> None:
    path = write_snapshot(tmp_path, 5, 1, STATE)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(LogCorrupt) as ei:
        load_snapshot(path)
    assert ei.value.path == str(path)


def test_snapshot_truncated_raises(tmp_path: Path) -> None:
    path = write_snapshot(tmp_path, 5, 1, STATE)
    data = path.read_bytes()
    for size in (0, 10, 36, len(data) - 1):
        path.write_bytes(data[:size])
        with pytest.raises(LogCorrupt):
            load_snapshot(path)


def test_newest_snapshot_corrupt_makes_recovery_refuse(tmp_path: Path) -> None:
    append_range(tmp_path, 1, 10)
    write_snapshot(tmp_path, 4, 1, {"v": 4})
    newest = write_snapshot(tmp_path, 8, 1, {"v": 8})
    data = bytearray(newest.read_bytes())
    data[-1] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.raises(LogCorrupt) as ei:
        recover(tmp_path)
    assert ei.value.path == str(newest)
    # The documented way out: remove the bad file, recover from the older one.
    newest.unlink()
    r = recover(tmp_path)
    assert r.snapshot is not None and r.snapshot.lsn == 4
    assert [lsn for lsn, _ in r.records] == list(range(5, 11))


def test_leftover_temp_file_ignored_and_cleaned(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 3, 1, {"v": 3})
    junk = snap_dir(tmp_path) / ".snap-00000000000000000009.zfs.abc123.tmp"
    junk.write_bytes(b"ZMQFSNP1 half written")
    assert [lsn for lsn, _ in list_snapshots(tmp_path)] == [3]
    r = recover(tmp_path)
    assert r.snapshot is not None and r.snapshot.lsn == 3 and r.last_lsn == 3
    write_snapshot(tmp_path, 4, 1, {"v": 4})
    assert not junk.exists()


def test_snapshot_plus_replay_only_after_snapshot(tmp_path: Path) -> None:
    append_range(tmp_path, 1, 12)
    write_snapshot(tmp_path, 7, 2, {"upto": 7})
    r = recover(tmp_path)
    assert r.snapshot is not None and r.snapshot.state == {"upto": 7}
    assert [lsn for lsn, _ in r.records] == [8, 9, 10, 11, 12]
    assert r.records[0][1] == b"rec-8" * 4
    assert r.last_lsn == 12 and r.epoch == 2


def test_snapshot_at_log_end_gives_no_records(tmp_path: Path) -> None:
    append_range(tmp_path, 1, 5)
    write_snapshot(tmp_path, 5, 1, {})
    r = recover(tmp_path)
    assert r.records == [] and r.last_lsn == 5
    append_range(tmp_path, 6, 7)
    assert [lsn for lsn, _ in recover(tmp_path).records] == [6, 7]


def test_gap_between_snapshot_and_log_raises(tmp_path: Path) -> None:
    append_range(tmp_path, 1, 30, segment_bytes=200)
    firsts = seg_firsts(tmp_path)
    assert len(firsts) >= 3
    write_snapshot(tmp_path, firsts[1] - 3, 1, {})
    for s in list_segments(log_dir(tmp_path))[:2]:
        s.path.unlink()
    with pytest.raises(LogCorrupt) as ei:
        recover(tmp_path)
    assert ei.value.path.endswith(f"seg-{firsts[2]:020d}.zfl")


def test_log_ending_before_snapshot_is_dropped_and_appends_continue(tmp_path: Path) -> None:
    append_range(tmp_path, 1, 5)
    write_snapshot(tmp_path, 9, 1, {"upto": 9})  # state included records the log lost
    r = recover(tmp_path)
    assert r.last_lsn == 9 and r.records == [] and len(r.removed) == 1
    append_range(tmp_path, 10, 11)
    r2 = recover(tmp_path)
    assert [lsn for lsn, _ in r2.records] == [10, 11] and r2.last_lsn == 11


def test_prune_keeps_two_snapshots_and_segments_after_older(tmp_path: Path) -> None:
    append_range(tmp_path, 1, 60, segment_bytes=200)
    firsts = seg_firsts(tmp_path)
    assert len(firsts) >= 6
    write_snapshot(tmp_path, 10, 1, {"v": 10})
    assert seg_firsts(tmp_path) == firsts  # one snapshot: no log pruning
    write_snapshot(tmp_path, 30, 1, {"v": 30})
    write_snapshot(tmp_path, 50, 1, {"v": 50})
    assert [lsn for lsn, _ in list_snapshots(tmp_path)] == [30, 50]
    left = seg_firsts(tmp_path)
    # Every deleted segment ended at or below 30; the first kept one reaches past it.
    assert left[0] <= 31 and left == [f for f in firsts if f >= left[0]]
    dropped = [f for f in firsts if f < left[0]]
    assert dropped and all(nxt - 1 <= 30 for nxt in firsts[1 : len(dropped) + 1])
    # Fallback stays possible: the older snapshot plus the log is complete.
    r = recover(tmp_path)
    assert [lsn for lsn, _ in r.records] == list(range(51, 61))
    (snap_dir(tmp_path) / "snap-00000000000000000050.zfs").unlink()
    r = recover(tmp_path)
    assert [lsn for lsn, _ in r.records] == list(range(31, 61))


def test_prune_never_deletes_newest_segment(tmp_path: Path) -> None:
    append_range(tmp_path, 1, 20, segment_bytes=200)
    last_first = seg_firsts(tmp_path)[-1]
    write_snapshot(tmp_path, 20, 1, {})
    write_snapshot(tmp_path, 20 + 0, 1, {})  # same lsn: replaces
    write_snapshot(tmp_path, 21, 1, {})
    prune(tmp_path)
    assert seg_firsts(tmp_path) == [last_first]


def test_meta_round_trip(tmp_path: Path) -> None:
    assert read_meta(tmp_path) == {}
    meta = {"epoch": 4, "node": "a", "cluster": "demo"}
    write_meta(tmp_path / "new", meta)
    assert read_meta(tmp_path / "new") == meta
    write_meta(tmp_path / "new", {"epoch": 5})
    assert read_meta(tmp_path / "new") == {"epoch": 5}
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["meta.zfm"]
    r = recover(tmp_path / "new")
    assert r.epoch == 5 and r.meta == {"epoch": 5}


def test_meta_corruption_raises(tmp_path: Path) -> None:
    write_meta(tmp_path, {"epoch": 1})
    path = tmp_path / "meta.zfm"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(LogCorrupt) as ei:
        read_meta(tmp_path)
    assert ei.value.path == str(path)
