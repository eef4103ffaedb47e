"""DiskLog append/write, segment format, recovery of torn tails, corruption detection."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest

from zmqfail.errors import LogCorrupt
from zmqfail.txlog.buffer import Batch
from zmqfail.txlog.frames import FRAME_HEADER, SEG_HEADER, SEG_VERSION, list_segments, log_dir
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.recovery import recover
from zmqfail.txlog.segments import DiskLog

pytestmark = pytest.mark.timeout(30)

HDR = SEG_HEADER.size
FH = FRAME_HEADER.size


def payload(lsn: int, size: int = 40) -> bytes:
    return TxRecord(
        lsn, 1, "c1", lsn, {"op": "buy", "pad": "x" * size}, [["set", lsn]], "ok", {"id": lsn}
    ).encode()


def write_log(
    data_dir: Path, first: int, last: int, segment_bytes: int = 1 << 20, per_batch: int = 3
) -> list[tuple[int, bytes]]:
    log = DiskLog(data_dir, segment_bytes, first)
    out = []
    for lsn in range(first, last + 1):
        p = payload(lsn)
        log.append(lsn, p)
        out.append((lsn, p))
        if log.pending_records >= per_batch:
            b = log.take()
            assert b is not None
            log.write(b, sync=True)
    b = log.take()
    if b is not None:
        log.write(b, sync=True)
    log.close()
    return out


def segs(data_dir: Path) -> list[Path]:
    return [s.path for s in list_segments(log_dir(data_dir))]


def frame_offsets(path: Path) -> list[int]:
    data = path.read_bytes()
    offs, off = [], HDR
    while off < len(data):
        offs.append(off)
        (length,) = struct.unpack_from("<I", data, off)
        off += FH + length
    return offs


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def test_round_trip(tmp_path: Path) -> None:
    recs = write_log(tmp_path, 1, 20)
    r = recover(tmp_path)
    assert r.records == recs
    assert r.last_lsn == 20 and r.truncated_bytes == 0 and r.snapshot is None
    # Format: header fields and the crc of one frame, checked independently.
    data = segs(tmp_path)[0].read_bytes()
    assert data[:8] == b"ZMQFLOG1"
    assert struct.unpack_from("<HHQ", data, 8) == (SEG_VERSION, 0, 1)
    length, crc, lsn = struct.unpack_from("<IIQ", data, HDR)
    assert lsn == 1 and data[HDR + FH : HDR + FH + length] == recs[0][1]
    assert crc == zlib.crc32(struct.pack("<Q", 1) + recs[0][1])


def test_append_take_counters_and_order(tmp_path: Path) -> None:
    log = DiskLog(tmp_path, 1 << 20, 1)
    assert log.take() is None
    log.append(1, b"abc")
    log.append(2, b"")
    assert log.pending_records == 2 and log.pending_bytes == 2 * FH + 3
    with pytest.raises(ValueError):
        log.append(4, b"x")
    b = log.take()
    assert isinstance(b, Batch)
    assert (b.first_lsn, b.last_lsn, b.count, b.nbytes) == (1, 2, 2, len(b.frames))
    assert log.pending_records == 0 and log.pending_bytes == 0 and log.take() is None
    log.append(3, b"z")
    b2 = log.take()
    assert b2 is not None
    with pytest.raises(ValueError):  # out of order: b must go first
        log.write(b2, sync=False)
    log.write(b, sync=False)
    assert log.written_lsn == 2 and log.flushed_lsn == 0
    log.write(b2, sync=True)
    assert log.written_lsn == 3 and log.flushed_lsn == 3
    log.close()
    assert recover(tmp_path).records == [(1, b"abc"), (2, b""), (3, b"z")]


def test_reopen_continues_and_checks_next_lsn(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 5)
    with pytest.raises(ValueError):
        DiskLog(tmp_path, 1 << 20, 9)
    r = recover(tmp_path)
    log = DiskLog(tmp_path, 1 << 20, r.last_lsn + 1)
    assert log.flushed_lsn == 5
    log.append(6, b"six")
    b = log.take()
    assert b is not None
    log.write(b, sync=True)
    log.close()
    assert [lsn for lsn, _ in recover(tmp_path).records] == [1, 2, 3, 4, 5, 6]
    assert len(segs(tmp_path)) == 1


def test_rotation_across_segments(tmp_path: Path) -> None:
    recs = write_log(tmp_path, 1, 60, segment_bytes=600, per_batch=2)
    files = segs(tmp_path)
    assert len(files) >= 5
    firsts = [s.first_lsn for s in list_segments(log_dir(tmp_path))]
    assert firsts[0] == 1 and firsts == sorted(firsts)
    for f in files[:-1]:
        # Rotation happens at batch boundaries before the limit is crossed.
        assert f.stat().st_size <= 600
    assert recover(tmp_path).records == recs
    # Reopen with a new log and keep going in the last segment / new ones.
    more = write_log(tmp_path, 61, 80, segment_bytes=600, per_batch=2)
    assert recover(tmp_path).records == recs + more


def test_reopen_full_segment_rotates(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 10, segment_bytes=1 << 20)
    log = DiskLog(tmp_path, 200, 11)  # existing segment already over the new limit
    assert log.current_segment.name == "seg-00000000000000000011.zfl"
    log.close()
    assert len(segs(tmp_path)) == 2
    r = recover(tmp_path)
    assert r.last_lsn == 10 and len(r.records) == 10


def _cut(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


@pytest.mark.parametrize("where", ["mid_header", "mid_payload", "one_byte", "bad_crc", "zeros"])
def test_torn_tail_truncated_then_log_keeps_working(tmp_path: Path, where: str) -> None:
    recs = write_log(tmp_path, 1, 10)
    seg = segs(tmp_path)[0]
    size = seg.stat().st_size
    last = frame_offsets(seg)[-1]
    if where == "mid_header":
        _cut(seg, last + 7)
    elif where == "mid_payload":
        _cut(seg, size - 5)
    elif where == "one_byte":
        _cut(seg, last + 1)
    elif where == "bad_crc":
        flip(seg, last + 5)  # the crc field of the final frame
    else:
        with open(seg, "ab") as f:
            f.write(bytes(100))
    damaged = seg.stat().st_size
    r = recover(tmp_path)
    expect = recs if where == "zeros" else recs[:-1]
    good = size if where == "zeros" else last
    assert r.records == expect
    assert r.last_lsn == expect[-1][0]
    assert seg.stat().st_size == good
    assert r.truncated_bytes == damaged - good > 0
    # Append more after the repair, recover again.
    more = write_log(tmp_path, r.last_lsn + 1, r.last_lsn + 5)
    r2 = recover(tmp_path)
    assert r2.records == expect + more and r2.truncated_bytes == 0


def test_truncated_bytes_reported(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 4)
    seg = segs(tmp_path)[0]
    size = seg.stat().st_size
    _cut(seg, size - 3)
    last = frame_offsets(seg)[-1]
    r = recover(tmp_path)
    assert r.truncated_bytes == size - 3 - last
    assert [lsn for lsn, _ in r.records] == [1, 2, 3]


def test_empty_last_segment_ok_and_headerless_removed(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 30, segment_bytes=600, per_batch=2)
    files = segs(tmp_path)
    n = len(files)
    r = recover(tmp_path)
    nxt = log_dir(tmp_path) / f"seg-{r.last_lsn + 1:020d}.zfl"
    DiskLog(tmp_path, 1 << 20, r.last_lsn + 1).close()  # creates nothing: last has room
    nxt.write_bytes(SEG_HEADER.pack(b"ZMQFLOG1", SEG_VERSION, 0, r.last_lsn + 1))
    r2 = recover(tmp_path)
    assert r2.records == r.records and nxt.exists()
    nxt.write_bytes(b"ZMQFLO")  # crash while creating the file
    r3 = recover(tmp_path)
    assert not nxt.exists() and r3.records == r.records and r3.truncated_bytes == 6
    assert len(segs(tmp_path)) == n


def test_mid_log_crc_corruption_raises_with_offset(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 10)
    seg = segs(tmp_path)[0]
    offs = frame_offsets(seg)
    flip(seg, offs[4] + FH + 3)  # payload byte of the 5th frame; more frames follow
    before = seg.read_bytes()
    with pytest.raises(LogCorrupt) as ei:
        recover(tmp_path)
    assert ei.value.path == str(seg) and ei.value.offset == offs[4]
    assert "crc" in ei.value.reason
    assert seg.read_bytes() == before  # refused, not "repaired"


def test_corruption_in_non_last_segment_raises(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 40, segment_bytes=600, per_batch=2)
    files = segs(tmp_path)
    assert len(files) >= 3
    victim = files[1]
    offs = frame_offsets(victim)
    flip(victim, offs[-1] + FH + 1)  # last frame of a NON-last segment: not a torn tail
    with pytest.raises(LogCorrupt) as ei:
        recover(tmp_path)
    assert ei.value.path == str(victim) and ei.value.offset == offs[-1]


def test_truncated_non_last_segment_raises(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 40, segment_bytes=600, per_batch=2)
    victim = segs(tmp_path)[0]
    offs = frame_offsets(victim)
    _cut(victim, offs[-1] + 3)
    with pytest.raises(LogCorrupt) as ei:
        recover(tmp_path)
    assert ei.value.path == str(victim) and ei.value.offset == offs[-1]


def test_bad_header_in_non_last_segment_raises(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 40, segment_bytes=600, per_batch=2)
    victim = segs(tmp_path)[1]
    flip(victim, 2)
    with pytest.raises(LogCorrupt) as ei:
        recover(tmp_path)
    assert ei.value.path == str(victim) and ei.value.offset == 0


def test_lsn_gap_between_segments_raises(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 40, segment_bytes=600, per_batch=2)
    files = segs(tmp_path)
    files[1].unlink()  # a whole segment lost
    with pytest.raises(LogCorrupt) as ei:
        recover(tmp_path)
    assert ei.value.path == str(files[2]) and "gap" in ei.value.reason


def test_lsn_gap_inside_segment_raises(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 6)
    seg = segs(tmp_path)[0]
    data = seg.read_bytes()
    offs = frame_offsets(seg)
    # Remove frame 3 cleanly: every remaining frame has a valid crc, lsn jumps 2 -> 4.
    seg.write_bytes(data[: offs[2]] + data[offs[3] :])
    with pytest.raises(LogCorrupt) as ei:
        recover(tmp_path)
    assert ei.value.offset == offs[2] and "gap" in ei.value.reason


def test_lsn_regression_inside_segment_raises(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 4)
    seg = segs(tmp_path)[0]
    data = seg.read_bytes()
    offs = frame_offsets(seg)
    dup = data[offs[1] : offs[2]]  # frame of lsn 2 repeated after lsn 4, then more data
    seg.write_bytes(data + dup + data[offs[3] :])
    with pytest.raises(LogCorrupt) as ei:
        recover(tmp_path)
    assert ei.value.offset == len(data) and "regression" in ei.value.reason


def test_absurd_length_is_corruption(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 4)
    seg = segs(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    last = frame_offsets(seg)[-1]
    struct.pack_into("<I", data, last, (64 << 20) + 1)
    seg.write_bytes(bytes(data))
    with pytest.raises(LogCorrupt) as ei:
        recover(tmp_path)
    assert ei.value.offset == last and "absurd" in ei.value.reason


def test_log_must_start_at_one_without_snapshot(tmp_path: Path) -> None:
    write_log(tmp_path, 5, 8)
    with pytest.raises(LogCorrupt) as ei:
        recover(tmp_path)
    assert "snapshot" in ei.value.reason


def test_disklog_refuses_damaged_tail(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 3)
    seg = segs(tmp_path)[0]
    _cut(seg, seg.stat().st_size - 2)
    with pytest.raises(LogCorrupt):
        DiskLog(tmp_path, 1 << 20, 4)


def test_leftover_segment_temp_file_ignored(tmp_path: Path) -> None:
    recs = write_log(tmp_path, 1, 3)
    (log_dir(tmp_path) / ".seg-00000000000000000004.zfl.tmp").write_bytes(b"junk")
    assert recover(tmp_path).records == recs
    more = write_log(tmp_path, 4, 5, segment_bytes=100)
    assert recover(tmp_path).records == recs + more


def test_fresh_dir_recovers_empty(tmp_path: Path) -> None:
    r = recover(tmp_path / "nothing-here")
    assert r.records == [] and r.last_lsn == 0 and r.snapshot is None and r.epoch == 0


def test_write_after_close_refused(tmp_path: Path) -> None:
    log = DiskLog(tmp_path, 1 << 20, 1)
    log.append(1, b"a")
    b = log.take()
    assert b is not None
    log.close()
    log.close()
    with pytest.raises(ValueError):
        log.write(b, sync=True)
    assert os.path.getsize(segs(tmp_path)[0]) == HDR


def test_main_thread_appends_while_flusher_writes(tmp_path: Path) -> None:
    import queue
    import threading

    log = DiskLog(tmp_path, 4096, 1)
    q: queue.Queue[Batch | None] = queue.Queue()
    errors: list[BaseException] = []

    def flusher() -> None:
        try:
            while (b := q.get()) is not None:
                log.write(b, sync=b.last_lsn % 7 == 0)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=flusher)
    t.start()
    for lsn in range(1, 3001):
        log.append(lsn, payload(lsn, lsn % 50))
        if lsn % 5 == 0 or lsn % 13 == 0:
            q.put(log.take())
    assert log.take() is None  # 3000 % 5 == 0: everything was handed over
    q.put(None)
    t.join(20)
    assert not errors and not t.is_alive()
    assert log.written_lsn == 3000
    log.close()
    assert log.flushed_lsn == 3000  # close() syncs the rest
    r = recover(tmp_path)
    assert [lsn for lsn, _ in r.records] == list(range(1, 3001))
    assert r.records[-1][1] == payload(3000, 0)
    assert len(segs(tmp_path)) > 10


def test_a_log_of_the_format_before_sessions_is_refused_at_start(tmp_path: Path) -> None:
    """Its writes have no register record: they would not replay. Refused with
    the file and a reason, nothing changed, rather than set aside as a history
    that does not apply."""
    write_log(tmp_path, 1, 5)
    seg = segs(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    struct.pack_into("<H", data, 8, 1)  # a version-1 header
    seg.write_bytes(bytes(data))
    with pytest.raises(LogCorrupt, match="unsupported segment format version 1"):
        recover(tmp_path)
    assert seg.read_bytes() == bytes(data)
