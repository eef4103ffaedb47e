"""`tools/bench path`: matching one request to the servers' events without
processes (and refusing a chain that is not its own), and one short run
against a real pair. Nothing here is timed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from benchkit.path import STEPS, Trace, bench_path, match, summarize_path  # noqa: E402
from benchkit.procs import BenchError, Reaper  # noqa: E402

pytestmark = pytest.mark.timeout(120)

# One request: sent at 0-1, the primary wakes at 3, turns 3-5, carries 5-6;
# the backup wakes at 8, turns 8-9, carries 9-10; the primary wakes at 12,
# turns 12-13, carries 13-15; the reply arrives at 18. A tick of the
# primary's at 2 woke nothing and is passed over.
PRIMARY = [
    ("poll", 0.5, 2.0, 0),
    ("poll", 2.0, 3.0, 1),
    ("turn", 3.0, 5.0, 0),
    ("carry", 5.0, 6.0, 0),
    ("poll", 6.0, 12.0, 1),
    ("turn", 12.0, 13.0, 0),
    ("carry", 13.0, 15.0, 0),
]
BACKUP = [("poll", 0.0, 8.0, 2), ("turn", 8.0, 9.0, 0), ("carry", 9.0, 10.0, 0)]
MARK = (0.0, 1.0, 18.0)


def test_one_requests_steps_are_read_off_both_servers_events() -> None:
    steps = match(MARK, Trace(PRIMARY), Trace(BACKUP))
    assert steps == [1.0, 2.0, 2.0, 1.0, 2.0, 1.0, 1.0, 2.0, 1.0, 2.0, 3.0]
    assert len(steps) == len(STEPS) and sum(steps) == MARK[2] - MARK[0]
    row = summarize_path([MARK], PRIMARY, BACKUP)
    assert row["matched"] == 1 and row["p50_us"] == 18_000_000
    assert row["steps_us"]["backup turn (record, commit)"] == 1_000_000


def test_a_chain_that_is_not_the_requests_own_is_left_out() -> None:
    # The reply came before the primary's second carry ended: those events
    # carried something else.
    assert match((0.0, 1.0, 14.0), Trace(PRIMARY), Trace(BACKUP)) is None
    # A backup that woke before the primary sent anything did not wake for it.
    early = [("poll", 0.0, 4.0, 2), ("turn", 4.0, 4.5, 0), ("carry", 4.5, 4.8, 0)]
    assert match(MARK, Trace(PRIMARY), Trace(early)) is None
    with pytest.raises(BenchError, match="no request could be matched"):
        summarize_path([(0.0, 1.0, 14.0)], PRIMARY, BACKUP)


@pytest.mark.process
def test_a_short_run_matches_requests_to_both_servers_events() -> None:
    lines: list[str] = []
    with Reaper() as reaper:
        row = bench_path(reaper, 1.5, 0.3, lines.append)
    assert row["requests"] > 0 and row["matched"] >= row["requests"] // 2, row
    assert set(row["steps_us"]) == set(STEPS)
    assert row["steps_us"]["primary turn (request)"] > 0, row
    assert lines and lines[0].startswith("   path, one in flight: p50 ")
