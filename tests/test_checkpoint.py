"""Checkpoint agent policy: sync flushes before every ack; periodic flushes on
time, record count, bytes or memory, whichever comes first."""

from __future__ import annotations

import pytest

from zmqfail.checkpoint import PERIODIC, SYNC, FlushPolicy
from zmqfail.config import FlushConfig

pytestmark = pytest.mark.timeout(30)

# Small thresholds; 250 ms is exact in binary floating point.
CFG = FlushConfig(interval_ms=250, max_records=10, max_bytes=1000, max_memory_bytes=5000)
T0 = 8.0
INTERVAL = 0.25


def periodic(last_flush: float = T0) -> FlushPolicy:
    p = FlushPolicy(CFG)
    p.set_mode(PERIODIC)
    p.flushed(last_flush)
    return p


def test_mode_names() -> None:
    assert SYNC == "sync"
    assert PERIODIC == "periodic"


def test_default_mode_is_sync() -> None:
    p = FlushPolicy(CFG)
    assert p.mode == SYNC
    assert p.last_flush == 0.0


@pytest.mark.parametrize("pending", [1, 2, 9, 10, 10_000])
def test_sync_flushes_before_ack_whenever_records_are_pending(pending: int) -> None:
    p = FlushPolicy(CFG)
    p.flushed(T0)
    # Right after a flush, far below every threshold: still due.
    assert p.due(T0, pending, 1, 1) == "before-ack"
    assert p.due(T0 + 1000.0, pending, 10**9, 10**9) == "before-ack"


def test_sync_nothing_pending_is_not_due() -> None:
    p = FlushPolicy(CFG)
    assert p.due(T0, 0, 0, 0) == ""
    assert p.due(T0 + 1000.0, 0, 10**9, 10**9) == ""


def test_sync_has_no_deadline() -> None:
    p = FlushPolicy(CFG)
    assert p.next_deadline(T0) is None
    p.flushed(T0)
    assert p.next_deadline(T0 + 5.0) is None


def test_periodic_below_all_thresholds_is_not_due() -> None:
    p = periodic()
    assert p.due(T0, 1, 0, 0) == ""
    assert p.due(T0 + 0.249, 9, 999, 4999) == ""


def test_periodic_interval() -> None:
    p = periodic()
    assert p.due(T0 + INTERVAL - 0.001, 1, 0, 0) == ""
    assert p.due(T0 + INTERVAL, 1, 0, 0) == "interval"
    assert p.due(T0 + 60.0, 1, 0, 0) == "interval"


def test_flushed_restarts_the_interval() -> None:
    p = periodic()
    assert p.due(T0 + INTERVAL, 1, 0, 0) == "interval"
    p.flushed(T0 + INTERVAL)
    assert p.last_flush == T0 + INTERVAL
    assert p.due(T0 + INTERVAL + 0.1, 1, 0, 0) == ""
    assert p.due(T0 + 2 * INTERVAL, 1, 0, 0) == "interval"


def test_periodic_records_threshold() -> None:
    p = periodic()
    assert p.due(T0, 9, 0, 0) == ""
    assert p.due(T0, 10, 0, 0) == "records"
    assert p.due(T0, 11, 0, 0) == "records"


def test_periodic_bytes_threshold() -> None:
    p = periodic()
    assert p.due(T0, 1, 999, 0) == ""
    assert p.due(T0, 1, 1000, 0) == "bytes"
    assert p.due(T0, 1, 5000, 0) == "bytes"


def test_periodic_memory_threshold() -> None:
    p = periodic()
    assert p.due(T0, 1, 0, 4999) == ""
    assert p.due(T0, 1, 0, 5000) == "memory"
    assert p.due(T0, 1, 0, 10**9) == "memory"


def test_periodic_nothing_pending_is_never_due() -> None:
    p = periodic()
    assert p.due(T0 + 60.0, 0, 10**9, 10**9) == ""


def test_periodic_reports_one_of_the_reached_reasons() -> None:
    p = periodic()
    assert p.due(T0 + 1.0, 10, 1000, 5000) in {"interval", "records", "bytes", "memory"}
    assert p.due(T0, 10, 1000, 5000) in {"records", "bytes", "memory"}


def test_periodic_next_deadline() -> None:
    p = periodic()
    assert p.next_deadline(T0) == T0 + INTERVAL
    assert p.next_deadline(T0 + 0.1) == T0 + INTERVAL
    p.flushed(T0 + 1.0)
    assert p.next_deadline(T0 + 1.0) == T0 + 1.0 + INTERVAL


def test_periodic_next_deadline_never_in_the_past() -> None:
    p = periodic()
    late = T0 + 3.0
    deadline = p.next_deadline(late)
    assert deadline is not None
    assert deadline == late
    assert p.due(deadline, 1, 0, 0) == "interval"


def test_periodic_from_constructor() -> None:
    p = FlushPolicy(CFG, mode=PERIODIC, last_flush=T0)
    assert p.due(T0, 1, 0, 0) == ""
    assert p.next_deadline(T0) == T0 + INTERVAL


def test_switching_modes() -> None:
    p = periodic()
    assert p.due(T0, 1, 0, 0) == ""
    p.set_mode(SYNC)
    assert p.mode == SYNC
    assert p.due(T0, 1, 0, 0) == "before-ack"
    assert p.next_deadline(T0) is None
    p.set_mode(PERIODIC)
    assert p.due(T0, 1, 0, 0) == ""


@pytest.mark.parametrize("mode", ["fast", "", "SYNC", "Periodic", "before-ack"])
def test_set_mode_refuses_unknown_mode(mode: str) -> None:
    p = periodic()
    with pytest.raises(ValueError, match="unknown flush mode"):
        p.set_mode(mode)
    assert p.mode == PERIODIC


def test_thresholds_come_from_config() -> None:
    cfg = FlushConfig(interval_ms=1000, max_records=3, max_bytes=7, max_memory_bytes=11)
    p = FlushPolicy(cfg, mode=PERIODIC, last_flush=0.0)
    assert p.due(0.5, 2, 6, 10) == ""
    assert p.due(0.5, 3, 0, 0) == "records"
    assert p.due(0.5, 1, 7, 0) == "bytes"
    assert p.due(0.5, 1, 0, 11) == "memory"
    assert p.due(1.0, 1, 0, 0) == "interval"
    assert p.next_deadline(0.0) == 1.0
