"""`tools/bench pauses`: its arithmetic without processes, and one short run
against a real pair started through the CLI, whose servers must run with
the collector settings the node asks for (a CLI that forgot to set them
would show the interpreter's 700/10/10). Nothing here is timed."""

from __future__ import annotations

import pytest
from benchkit.meter import Timing
from benchkit.pauses import bench_pauses, parse_gc, summarize_runs
from benchkit.procs import Reaper

from zmqfail.node.server import GC_THRESHOLDS

pytestmark = pytest.mark.timeout(120)


def test_collections_inside_the_span_are_counted_by_generation() -> None:
    runs = [[0, 0.5, 0.001], [0, 1.5, 0.002], [1, 2.0, 0.006], [0, 3.9, 0.003], [2, 4.5, 0.1]]
    turns = [[0.2, 0.5], [1.2, 0.004], [3.0, 0.012]]
    forks = [[2.5, 0.009], [4.2, 0.02]]
    s = summarize_runs(runs, 1.0, 4.0, turns, forks)  # the first and the last began outside
    assert s["collections"] == [2, 1, 0]
    assert s["longest_ms"] == [3.0, 6.0, 0.0]
    assert s["share"] == pytest.approx(0.011 / 3, abs=1e-4)
    assert s["turns"] == 2 and s["longest_turn_ms"] == 12.0 and s["forks_ms"] == [9.0]


def test_settings_are_three_whole_numbers() -> None:
    assert parse_gc("2000,20,100") == (2000, 20, 100)
    for bad in ("2000,20", "a,b,c", "0,10,10", "700,-1,10"):
        with pytest.raises(ValueError, match="three whole numbers"):
            parse_gc(bad)


@pytest.mark.process
def test_a_short_run_times_both_servers_collections_under_their_own_settings() -> None:
    lines: list[str] = []
    with Reaper() as reaper:
        (row,) = bench_pauses(
            reaper, [8], Timing(seconds=1.5, warmup=0.3, drain=5.0), [None], lines.append
        )
    assert row["throughput"] > 0 and row["unanswered"] == 0
    assert set(row["servers"]) == {"a", "b"}
    for s in row["servers"].values():
        assert tuple(s["thresholds"]) == GC_THRESHOLDS
        assert s["collections"][0] > 0  # a loaded server collects young objects
        assert s["turns"] > 0 and s["longest_turn_ms"] > 0, s  # its loop was timed too
    assert row["max_us"] >= row["p999_us"] >= row["p99_us"] > 0
    assert lines and "gc 2000,20,100 (own)" in lines[0]
