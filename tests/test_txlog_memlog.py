"""MemLog: ordered append, range reads, trimming that never drops unflushed records."""

from __future__ import annotations

import pytest

from zmqfail.txlog.memlog import MemLog, Trimmed

pytestmark = pytest.mark.timeout(30)


def filled(n: int, size: int = 10, first: int = 1) -> MemLog:
    m = MemLog(first)
    for lsn in range(first, first + n):
        m.append(lsn, bytes([lsn % 256]) * size)
    return m


def test_empty() -> None:
    m = MemLog(5)
    assert (m.first_lsn, m.last_lsn, m.nbytes, len(m)) == (5, 4, 0, 0)
    assert m.get_range(5, 10) == []
    with pytest.raises(Trimmed):
        m.get_range(4, 1)


def test_append_order_and_ranges() -> None:
    m = filled(10)
    assert (m.first_lsn, m.last_lsn, m.nbytes, len(m)) == (1, 10, 100, 10)
    with pytest.raises(ValueError):
        m.append(12, b"x")
    with pytest.raises(ValueError):
        m.append(10, b"x")
    assert m.get_range(3, 2) == [b"\x03" * 10, b"\x04" * 10]
    assert len(m.get_range(8, 100)) == 3
    assert m.get_range(11, 5) == [] and m.get_range(3, 0) == []
    assert m.get(10) == b"\x0a" * 10
    with pytest.raises(KeyError):
        m.get(11)


def test_trim_drops_oldest_within_budget() -> None:
    m = filled(10)
    assert m.trim_to(45, keep_after_lsn=10) == 6
    assert (m.first_lsn, m.last_lsn, m.nbytes) == (7, 10, 40)
    assert m.get_range(7, 1) == [b"\x07" * 10]
    with pytest.raises(Trimmed):
        m.get_range(6, 1)
    m.append(11, b"y")
    assert m.last_lsn == 11 and m.get_range(10, 5) == [b"\x0a" * 10, b"y"]


def test_trim_never_drops_unflushed() -> None:
    m = filled(10)
    assert m.trim_to(0, keep_after_lsn=4) == 4
    assert m.first_lsn == 5 and m.nbytes == 60  # still over budget, on purpose
    assert m.trim_to(0, keep_after_lsn=4) == 0
    assert m.trim_to(0, keep_after_lsn=10) == 6
    assert len(m) == 0 and m.first_lsn == 11 and m.last_lsn == 10
    m.append(11, b"z")
    assert m.get_range(11, 1) == [b"z"]


def test_many_trims_keep_indexing_right() -> None:
    m = MemLog()
    for lsn in range(1, 5001):
        m.append(lsn, lsn.to_bytes(4, "little"))
        m.trim_to(400, keep_after_lsn=lsn - 3)
        assert m.nbytes <= max(400, 12)
        got = m.get_range(m.first_lsn, 3)
        assert [int.from_bytes(b, "little") for b in got] == list(
            range(m.first_lsn, min(m.first_lsn + 3, lsn + 1))
        )
    assert m.last_lsn == 5000 and len(m) == 100


def test_clear() -> None:
    m = filled(3)
    m.clear(100)
    assert (m.first_lsn, m.last_lsn, m.nbytes) == (100, 99, 0)
    m.append(100, b"a")
    assert m.get_range(100, 1) == [b"a"]


def test_unanchored_log_starts_at_first_append() -> None:
    m = MemLog()  # the node does not know where recovery left off when it builds this
    assert m.get_range(1, 5) == []
    m.append(1001, b"a")
    with pytest.raises(ValueError):
        m.append(1003, b"c")
    m.append(1002, b"b")
    assert (m.first_lsn, m.last_lsn) == (1001, 1002)
    assert m.get_range(1001, 5) == [b"a", b"b"]
    with pytest.raises(Trimmed):
        m.get_range(1000, 1)
