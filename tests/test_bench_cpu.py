"""`tools/bench cpu`: its arithmetic without processes, and one short run
against a real pair: the tracer must reach both servers, time what each
role does (the primary takes requests, the backup holds and applies
records) and nest its sections as the report prints them. Nothing here is
timed."""

from __future__ import annotations

import pytest
from benchkit.cpu import bench_cpu, per_record
from benchkit.meter import Timing
from benchkit.procs import BenchError, Reaper

pytestmark = pytest.mark.timeout(120)


def test_a_trace_becomes_microseconds_and_calls_per_record() -> None:
    trace = {
        "records": 2_000,
        "process_s": 0.2,
        "sections": {"loop": [0.15, 1], "requests": [0.05, 2_000], "collector": [0.002, 0]},
    }
    row = per_record(trace)
    assert row["process_us"] == 100.0 and row["records"] == 2_000
    assert row["sections"]["loop"] == (75.0, 0.001)
    assert row["sections"]["requests"] == (25.0, 1.0)
    assert row["sections"]["collector"] == (1.0, 0.0)
    with pytest.raises(BenchError, match="no record"):
        per_record({**trace, "records": 0})


@pytest.mark.process
def test_a_short_run_times_each_role_of_the_pair() -> None:
    lines: list[str] = []
    with Reaper() as reaper:
        (row,) = bench_cpu(reaper, [8], Timing(seconds=1.5, warmup=0.3, drain=5.0), lines.append)
    assert row["throughput"] > 0 and row["unanswered"] == 0
    p, b = row["primary"]["sections"], row["backup"]["sections"]
    # Every record but the client's registration came from one request on
    # the primary, and the backup applied each record it held once.
    assert 0.9 <= p["requests"][1] <= 1.0 and 0.9 <= p["processor"][1] <= 1.0, p
    assert 0.9 <= b["apply record"][1] <= 1.0, b
    assert "requests" not in b and "records in" not in p
    for side, whole in ((p, row["primary"]["process_us"]), (b, row["backup"]["process_us"])):
        # Nested sections never hold more CPU than the one around them.
        assert 0 < side["turn"][0] <= side["loop"][0] <= whole, side
    assert p["processor"][0] <= p["requests"][0] <= p["turn"][0]
    assert p["application"][0] <= p["processor"][0]
    assert b["apply record"][0] <= b["apply held"][0]
    assert row["client_us"] is not None and row["client_us"] > 0
    assert lines and "cpu window   8" in lines[0] and "client process" in lines[0]
