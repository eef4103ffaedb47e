"""Property: a log cut at any byte recovers a prefix holding every complete record."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import example_scale, examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmqfail.txlog.frames import FRAME_HEADER, SEG_HEADER, list_segments, log_dir
from zmqfail.txlog.recovery import recover
from zmqfail.txlog.segments import DiskLog

pytestmark = pytest.mark.timeout(30)


def build(data_dir: Path, sizes: list[int], batch: int, segment_bytes: int) -> list[bytes]:
    log = DiskLog(data_dir, segment_bytes, 1)
    payloads = []
    for i, n in enumerate(sizes):
        p = bytes((i * 7 + j) % 251 for j in range(n))
        payloads.append(p)
        log.append(i + 1, p)
        if log.pending_records >= batch:
            b = log.take()
            assert b is not None
            log.write(b, sync=False)
    b = log.take()
    if b is not None:
        log.write(b, sync=False)
    log.close()
    return payloads


def cut_at(data_dir: Path, offset: int) -> int:
    """Cut the log at a global byte offset (segments laid end to end); return how
    many records lie completely before the cut."""
    complete = 0
    pos = 0
    for seg in list_segments(log_dir(data_dir)):
        size = seg.path.stat().st_size
        if pos >= offset:
            seg.path.unlink()
            continue
        keep = offset - pos
        if keep < size:
            with open(seg.path, "r+b") as f:
                f.truncate(keep)
        data = seg.path.read_bytes()
        off = SEG_HEADER.size
        while off + FRAME_HEADER.size <= len(data):
            length = int.from_bytes(data[off : off + 4], "little")
            if off + FRAME_HEADER.size + length > len(data):
                break
            complete += 1
            off += FRAME_HEADER.size + length
        pos += size
    return complete


@pytest.mark.timeout(120 * example_scale())  # an fsync or two per example: waits on the disk
@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(0, 120), min_size=1, max_size=25),
    batch=st.integers(1, 5),
    segment_bytes=st.sampled_from([64, 300, 1 << 20]),
    where=st.floats(0.0, 1.0),
)
def test_truncation_anywhere_recovers_a_prefix(
    sizes: list[int], batch: int, segment_bytes: int, where: float
) -> None:
    d = Path(tempfile.mkdtemp(prefix="zfl-hyp-"))
    try:
        payloads = build(d, sizes, batch, segment_bytes)
        total = sum(p.path.stat().st_size for p in list_segments(log_dir(d)))
        complete = cut_at(d, int(where * total))
        r = recover(d)
        got = [p for _, p in r.records]
        assert got == payloads[: len(got)]  # a prefix, in order
        assert len(got) == complete  # nothing fully written before the cut is lost
        assert r.last_lsn == len(got)
        # The repaired log accepts appends and recovers again.
        log = DiskLog(d, segment_bytes, r.last_lsn + 1)
        log.append(r.last_lsn + 1, b"after")
        b = log.take()
        assert b is not None
        log.write(b, sync=True)
        log.close()
        r2 = recover(d)
        assert [p for _, p in r2.records] == [*got, b"after"] and r2.truncated_bytes == 0
    finally:
        shutil.rmtree(d)


def test_every_offset_of_a_small_log(tmp_path: Path) -> None:
    src = tmp_path / "src"
    payloads = build(src, [5, 0, 17, 3, 30, 1, 9], batch=2, segment_bytes=80)
    files = list_segments(log_dir(src))
    assert len(files) >= 3
    total = sum(s.path.stat().st_size for s in files)
    for offset in range(total + 1):
        d = tmp_path / f"cut-{offset}"
        shutil.copytree(src, d)
        complete = cut_at(d, offset)
        r = recover(d)
        got = [p for _, p in r.records]
        assert got == payloads[:complete], offset
        shutil.rmtree(d)
