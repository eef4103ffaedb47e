"""`tools/bench path`: matching one request to the servers' events without
processes (and refusing a chain that is not its own), and one short run
against a real pair. Nothing here is timed."""

from __future__ import annotations

import pytest
from benchkit.path import (
    COMMITTED,
    HELD,
    STEPS,
    Trace,
    bench_path,
    match,
    summarize_path,
)
from benchkit.procs import BenchError, Reaper

pytestmark = pytest.mark.timeout(120)

# One request: sent at 0-1, the primary wakes at 3, writes its record in a
# turn 3-5 and carries 5-6; the backup wakes at 8, holds it in a turn 8-9
# and carries 9-10; the primary wakes at 12, commits in a turn 12-13 and
# carries 13-15; the reply arrives at 18. A tick's turn of the primary at
# 2, and a keepalive answered by the backup at 6-7, did neither and are
# passed over.


def loop(*turns: tuple[float, float, float, float, int]) -> list[tuple[str, float, float, int]]:
    """A server's events from its turns: (slept from, woken at, turn ended,
    carry ended, what the turn did)."""
    events: list[tuple[str, float, float, int]] = []
    for slept, woken, turned, carried, did in turns:
        events += [("poll", slept, woken, 0), ("turn", woken, turned, did)]
        events.append(("carry", turned, carried, 0))
    return events


PRIMARY = loop(
    (0.5, 2.0, 2.1, 2.2, 0), (2.2, 3.0, 5.0, 6.0, HELD), (6.0, 12.0, 13.0, 15.0, COMMITTED)
)
BACKUP = loop((0.0, 6.0, 6.5, 7.0, 0), (7.0, 8.0, 9.0, 10.0, HELD))
MARK = (0.0, 1.0, 18.0)


def test_one_requests_steps_are_read_off_both_servers_events() -> None:
    steps = match(MARK, Trace(PRIMARY), Trace(BACKUP))
    assert steps == [1.0, 2.0, 2.0, 1.0, 2.0, 1.0, 1.0, 2.0, 1.0, 2.0, 3.0]
    assert len(steps) == len(STEPS) and sum(steps) == MARK[2] - MARK[0]
    row = summarize_path([MARK], PRIMARY, BACKUP)
    assert row["matched"] == 1 and row["p50_us"] == 18_000_000
    assert row["steps_us"]["backup turn (record, commit)"] == 1_000_000


def test_a_chain_that_is_not_the_requests_own_is_left_out() -> None:
    # The reply came before the primary's second carry began: those events
    # carried something else.
    assert match((0.0, 1.0, 12.5), Trace(PRIMARY), Trace(BACKUP)) is None
    # A reply that arrives while the carry that sent it is still returning
    # (preempted on a busy machine) is its own; so is a request the primary
    # woke for before the client's send returned.
    assert match((0.0, 1.0, 14.0), Trace(PRIMARY), Trace(BACKUP)) is not None
    late = match((0.0, 3.5, 18.0), Trace(PRIMARY), Trace(BACKUP))
    assert late is not None and late[1] == -0.5
    # A backup already awake (its poll returned before the primary sent)
    # did not wake for this request: its wake-up cannot be measured.
    busy = [("poll", 0.0, 4.0, 0), ("turn", 8.0, 9.0, HELD), ("carry", 9.0, 10.0, 0)]
    assert match(MARK, Trace(PRIMARY), Trace(busy)) is None
    # No turn of the primary's advanced the commit point.
    stuck = [e if e[3] != COMMITTED else (*e[:3], 0) for e in PRIMARY]
    assert match(MARK, Trace(stuck), Trace(BACKUP)) is None
    with pytest.raises(BenchError, match="no request could be matched"):
        summarize_path([(0.0, 1.0, 12.5)], PRIMARY, BACKUP)


@pytest.mark.process
def test_a_short_run_matches_requests_to_both_servers_events() -> None:
    lines: list[str] = []
    with Reaper() as reaper:
        row = bench_path(reaper, 1.5, 0.3, lines.append)
    assert row["requests"] > 0 and row["matched"] >= row["requests"] // 2, row
    assert set(row["steps_us"]) == set(STEPS)
    assert row["steps_us"]["primary turn (request)"] > 0, row
    assert lines and lines[0].startswith("   path, one in flight: p50 ")
