"""`tools/bench shards`' arithmetic, without processes: how the clients'
per-shard meters and the servers' CPU readings become a row (the flow itself
is run by `tools/bench shards`, never timed in a test)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from benchkit.meter import Meter, Timing
from benchkit.procs import (
    BenchError,
    Reaper,
    cpu_of,
    cpu_seconds,
    cpu_since,
    cpu_ticks,
    live_pids,
    steal_share,
)
from benchkit.report import measured
from benchkit.shards import _row, format_rows

from zmqfail import config


def client_result(replies: dict[str, list[float]], timing: Timing) -> dict[str, object]:
    """What one client process sends back: per shard, a meter fed with
    replies of these latencies (seconds), all inside the measured span."""
    out = {}
    for shard, lats in replies.items():
        m = Meter(timing, 0.0)
        for i, lat in enumerate(lats):
            t = timing.warmup + 0.001 * i
            m.on_sent(i, t)
            m.on_reply(i, t + lat, True)
        out[shard] = m.result()
    return {"shards": out, "failovers": 0}


def test_a_row_adds_the_shards_and_charges_each_its_own_servers_cpu() -> None:
    cfg = config.loads(config.render_shards(2, 2, 5700), Path("/tmp"))
    timing = Timing(seconds=2.0, warmup=1.0)
    # Two clients; s1 acknowledges 300 in the span, s2 100.
    results = [
        client_result({"s1": [0.001] * 200, "s2": [0.004] * 50}, timing),
        client_result({"s1": [0.001] * 100, "s2": [0.004] * 50}, timing),
    ]
    cpu0 = {"s1-m1": 1.0, "s1-m2": 1.0, "s2-m1": 0.0, "s2-m2": 0.0}
    # s1's primary spent 0.03 s, its backup 0.015 s; s2's primary (s2-m2) 0.02 s.
    cpu1 = {"s1-m1": 1.03, "s1-m2": 1.015, "s2-m1": 0.005, "s2-m2": 0.02}
    primaries = {"s1": "s1-m1", "s2": "s2-m2"}
    row = _row(cfg, 2, primaries, results, timing, cpu0, cpu1)
    assert row["per_shard"]["s1"]["throughput"] == 150  # 300 in 2 s
    assert row["per_shard"]["s2"]["throughput"] == 50
    assert row["throughput"] == 200
    assert row["per_shard"]["s1"]["primary_cpu_us"] == 100.0  # 0.03 s / 300
    assert row["per_shard"]["s1"]["backup_cpu_us"] == 50.0
    assert row["per_shard"]["s2"]["primary_cpu_us"] == 200.0  # 0.02 s / 100
    assert row["per_shard"]["s2"]["backup_cpu_us"] == 50.0
    assert row["cpu_us_per_request"] == 175.0  # 0.07 s / 400
    assert row["node_cores"] == pytest.approx(0.035, abs=0.006)  # 0.07 s over 2 s
    # Latencies merged over both shards: 300 at 1 ms, 100 at 4 ms.
    assert 900 <= row["p50_us"] <= 1100 and 3600 <= row["p99_us"] <= 4400
    row.update(clients=2, window=64, idle_cores=0.01, load_us_per_request=150.0, client_cores=0.1)
    table = format_rows([row])
    assert "s1 150 100+50; s2 50 200+50" in table


def test_cpu_seconds_reads_user_and_system_time_of_the_process() -> None:
    # This process has spent a good part of a second on imports: a wrong
    # field (children's time, a start time) would not agree with os.times.
    t = os.times()
    got = cpu_seconds(os.getpid())
    assert got > 0.1
    assert got == pytest.approx(t.user + t.system, abs=0.05)
    # A process that is gone is a BenchError naming it, not a traceback.
    with pytest.raises(BenchError, match="process 999999999"):
        cpu_seconds(999_999_999)


def test_reaped_children_count_and_a_flow_is_its_live_processes() -> None:
    # A child that burns a fifth of a second and is waited for: counted
    # with `reaped` (a server's snapshot forks), not without.
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass"
    subprocess.run([sys.executable, "-c", burn], check=True, timeout=30)
    me = os.getpid()
    t = os.times()
    assert cpu_seconds(me, reaped=True) - cpu_seconds(me) == pytest.approx(
        t.children_user + t.children_system, abs=0.05
    )
    assert t.children_user + t.children_system >= 0.15
    with Reaper() as reaper:
        hog = reaper.hogs(1)[0]
        assert hog.pid is not None and live_pids(reaper) == [hog.pid]
        pid = hog.pid
        reaper.stop(hog)
        assert live_pids(reaper) == []
        assert cpu_of([pid]) == {}  # gone: not read
    # One that ended between two readings is left out, not subtracted.
    assert cpu_since({1: 2.0, 2: 5.0}, {1: 2.5}) == 0.5


def _idle() -> None:
    time.sleep(120)  # a server at rest: ended by the reaper


def test_a_rows_cpu_is_its_flows_never_the_hogs() -> None:
    """`measured` counts the processes that ran before the hogs started:
    here one idle "server" and no client, while a hog burns a core."""
    with Reaper() as reaper:
        reaper.process(_idle, name="server")

        def run(window: int, timing: Timing) -> dict[str, Any]:
            hog = reaper.procs[-1]  # started by `measured` for the row
            assert hog.pid is not None
            deadline = time.monotonic() + 30
            while cpu_seconds(hog.pid) < 0.3:  # the hog has burned enough to tell
                assert time.monotonic() < deadline, "the hog never ran"
                time.sleep(0.01)
            return {"answered": 1}

        res, cpu = measured(reaper, run, 1, Timing(seconds=1.0), hogs=1)
    assert res == {"answered": 1}
    assert cpu < 0.1, cpu  # the idle server's; a hog counted would be 0.3 or more


def test_the_share_of_cpu_time_the_host_stole() -> None:
    total, stolen = cpu_ticks()
    assert total > 0 and 0 <= stolen <= total
    assert steal_share((1_000, 10), (1_400, 110)) == 0.25  # 100 of 400 ticks
    assert steal_share((1_000, 10), (1_000, 10)) == 0.0  # no time passed: nothing stolen
