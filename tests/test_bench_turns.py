"""`tools/bench turns`: its interval arithmetic without processes, and one
short run against a real pair (that the tracer reaches the servers and
each writes its turns on a clean stop). Nothing here is timed."""

from __future__ import annotations

import pytest
from benchkit.meter import Timing
from benchkit.procs import Reaper
from benchkit.turns import bench_turns, busy_share, overlap_share, summarize_turns

pytestmark = pytest.mark.timeout(120)


def test_shares_of_busy_and_overlapping_turns() -> None:
    a = [[0.0, 1.0, 16], [2.0, 3.0, 0], [3.5, 3.75, 4]]
    b = [[0.5, 2.5, 0], [3.0, 3.6, 0]]
    assert busy_share(a, 0.0, 4.0) == pytest.approx(2.25 / 4)
    assert busy_share(b, 0.0, 4.0) == pytest.approx(2.6 / 4)
    # [0.5, 1] and [2, 2.5] and [3.5, 3.6]
    assert overlap_share(a, b, 0.0, 4.0) == pytest.approx(1.1 / 4)
    assert overlap_share(b, a, 0.0, 4.0) == pytest.approx(1.1 / 4)
    # Clipped to the span: only [0.5, 1] of the overlap lies in [0, 1].
    assert overlap_share(a, b, 0.0, 1.0) == pytest.approx(0.5)
    row = summarize_turns(a, b, 0.0, 4.0)
    assert row["records_per_turn"] == 10.0 and row["primary_turns_per_s"] == 1  # 3 / 4 s


@pytest.mark.process
def test_a_short_run_traces_both_servers() -> None:
    lines: list[str] = []
    with Reaper() as reaper:
        (row,) = bench_turns(reaper, [8], Timing(seconds=1.6, warmup=0.3, drain=5.0), lines.append)
    assert row["throughput"] > 0 and row["unanswered"] == 0
    assert 0 < row["primary_busy"] < 1 and 0 < row["backup_busy"] < 1
    assert 0 <= row["both_busy"] <= min(row["primary_busy"], row["backup_busy"])
    assert 1 <= row["records_per_turn"] <= 8
    assert lines and "turns window   8" in lines[0]


@pytest.mark.process
def test_an_idle_run_measures_both_servers() -> None:
    from benchkit.idle import bench_idle

    lines: list[str] = []
    with Reaper() as reaper:
        row = bench_idle(reaper, 1.0, lines.append)  # several clock ticks of CPU each
    assert set(row["cpu_share"]) == {"a", "b"}
    assert all(0 < v < 1 for v in row["cpu_share"].values()), row  # a live pair turns
    assert lines and lines[0].startswith("idle pair, CPU share per server: a ")
