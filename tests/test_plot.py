"""`client bench --plot`: the timeline a picture is drawn from (pure), the
picture itself (a PNG that changes with the data), and the one-line error
when matplotlib is missing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import run_zmqfail

from zmqfail import config
from zmqfail.errors import ZmqfailError
from zmqfail.loadgen.plot import MISSING, draw
from zmqfail.loadgen.timeline import bin_width, distribution, load, timeline
from zmqfail.netutil import free_base_port

pytestmark = pytest.mark.timeout(60)
PNG = b"\x89PNG\r\n\x1a\n"


def history(failover_at: float | None, outage: float = 0.16, seconds: float = 4.0) -> list[Any]:
    """Two clients, one request each every 10 ms answered in 1 ms (3 ms for
    client 1), server a at epoch 1; from `failover_at` nothing is answered for
    `outage` seconds, then b answers at epoch 2 (the held requests with it)."""
    events: list[dict[str, Any]] = []
    for c, lat in ((0, 0.001), (1, 0.003)):
        for i in range(int(seconds / 0.01)):
            t = 100.0 + i * 0.01
            events.append({"type": "invoke", "client_id": f"c{c}", "msg_id": i + 1, "time": t})
            done, server, epoch = t + lat, "a", 1
            if failover_at is not None and t + lat >= 100.0 + failover_at:
                server, epoch = "b", 2
                done = max(done, 100.0 + failover_at + outage)
            events.append(
                {
                    "type": "ok",
                    "client_id": f"c{c}",
                    "msg_id": i + 1,
                    "time": done,
                    "server": server,
                    "epoch": epoch,
                    "status": "ok",
                }
            )
    events.sort(key=lambda e: e["time"])
    return events


def test_bins_hold_throughput_latency_and_the_switch() -> None:
    tl = timeline(history(failover_at=2.0))
    assert tl.width == bin_width(4.16) == 0.02
    assert tl.latency_us.total == 800
    # Before the failover: 2 requests per 10 ms = 200/s; p50 1 ms, max 3 ms.
    early = tl.bins[10]
    assert early.rate == pytest.approx(200.0)
    assert early.p50_ms == pytest.approx(1.0, rel=0.02)
    assert early.max_ms == pytest.approx(3.0, rel=0.01)
    # During the outage nothing is acknowledged.
    assert [b.acked for b in tl.bins if 2.01 <= b.start < 2.13] == [0] * 6
    (s,) = tl.switches
    assert (s.from_server, s.to_server, s.epoch) == ("a", "b", 2)
    # From the last reply at epoch 1 (the request of 1.99 s answered in 3 ms) to 2.16 s.
    assert s.at == pytest.approx(2.16) and s.outage_ms == pytest.approx(167.0, abs=0.01)
    assert timeline(history(None)).switches == []


def test_errors_are_counted_apart_and_late_old_replies_are_no_switch() -> None:
    events = [
        {"type": "invoke", "client_id": "c", "msg_id": 1, "time": 0.0},
        {"type": "invoke", "client_id": "c", "msg_id": 2, "time": 0.0},
        {"type": "invoke", "client_id": "c", "msg_id": 3, "time": 0.0},
        {"type": "ok", "client_id": "c", "msg_id": 1, "time": 0.5, "server": "b", "epoch": 2},
        {"type": "ok", "client_id": "c", "msg_id": 2, "time": 0.6, "server": "a", "epoch": 1},
        {"type": "info", "client_id": "c", "msg_id": 3, "time": 1.0},
    ]
    tl = timeline(events)
    assert sum(b.acked for b in tl.bins) == 2 and sum(b.errors for b in tl.bins) == 1
    assert tl.switches == []


def test_the_distribution_reaches_into_the_tail() -> None:
    tl = timeline(history(None))
    pts = distribution(tl.latency_us)
    qs = [q for q, _ in pts]
    assert qs[0] == 0.0 and qs == sorted(qs) and qs[-1] == pytest.approx(100 - 100 / 800)
    assert pts[0][1] == pytest.approx(1.0, rel=0.02) and pts[-1][1] == pytest.approx(3.0, rel=0.01)
    assert sum(1 for q in qs if q >= 90) >= len(qs) // 3  # the tail is not squeezed
    assert distribution(timeline([]).latency_us) == []


def test_a_history_file_is_read_and_bad_lines_are_named(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in history(2.0)))
    assert load(path).switches == timeline(history(2.0)).switches
    path.write_text('{"time": 1}\nnot json\n')
    with pytest.raises(ZmqfailError, match=r"h.jsonl:2: not a history line"):
        load(path)
    path.write_text("")
    with pytest.raises(ZmqfailError, match="holds no events"):
        load(path)


def test_the_picture_is_a_png_drawn_from_the_data(tmp_path: Path) -> None:
    one, two, again = tmp_path / "one.png", tmp_path / "two.png", tmp_path / "again.png"
    draw(timeline(history(failover_at=2.0)), one, "with a failover")
    draw(timeline(history(failover_at=None)), two, "with a failover")
    draw(timeline(history(failover_at=2.0)), again, "with a failover")
    for p in (one, two, again):
        data = p.read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000
    assert one.read_bytes() != two.read_bytes()  # different data, different picture
    assert one.read_bytes() == again.read_bytes()  # same data, same picture
    with pytest.raises(ZmqfailError, match="cannot write"):
        draw(timeline(history(None)), tmp_path / "no" / "such" / "dir.png", "t")


def test_without_matplotlib_plot_is_one_line_before_the_bench_runs(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nsys.modules['matplotlib'] = None  # as if not installed\n"
    )
    cfg = tmp_path / "zmqfail.toml"
    cfg.write_text(config.render(nodes=2, base_port=free_base_port(30)))
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    args = ("client", "bench", "--config", str(cfg), "--requests", "5", "--quiet")
    res = run_zmqfail(*args, "--plot", str(tmp_path / "x.png"), env=env, timeout=30)
    assert res.returncode == 1
    assert res.stderr == f"zmqfail: error: {MISSING}\n"  # not "no active server": nothing ran
    assert not (tmp_path / "x.png").exists()


def test_client_plot_draws_a_recorded_history(tmp_path: Path) -> None:
    hist, out = tmp_path / "h.jsonl", tmp_path / "drill.png"
    hist.write_text("".join(json.dumps(e) + "\n" for e in history(2.0)))
    res = run_zmqfail("client", "plot", str(hist), str(out), "--title", "drill", timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"plot: {out}\n"
    data = out.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000  # drawn by the same `draw` as above
    res = run_zmqfail("client", "plot", str(tmp_path / "none.jsonl"), str(out), timeout=60)
    assert (res.returncode, res.stderr) == (
        1,
        f"zmqfail: error: no history file {tmp_path}/none.jsonl\n",
    )
