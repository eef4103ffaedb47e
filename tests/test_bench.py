"""`zmqfail client bench`: its pure parts (histogram, order mix, outage
extraction, merging) without sockets, then real runs against real nodes,
one of them with the primary killed mid-run."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, MakeCluster

from zmqfail import config
from zmqfail.apps.orders import Engine, OrdersConfig
from zmqfail.apps.orders.prices import PriceCodec
from zmqfail.cluster import Cluster
from zmqfail.errors import ConfigError
from zmqfail.failover.state import Role, State
from zmqfail.loadgen.histogram import Histogram, bucket_bounds, bucket_of
from zmqfail.loadgen.history import completion_type, merge_parts
from zmqfail.loadgen.orders import OrderMix
from zmqfail.loadgen.outage import Outage, OutageTracker, merge_outages
from zmqfail.loadgen.results import ClientResult, summarize
from zmqfail.loadgen.runner import BenchOptions, split
from zmqfail.loadgen.timeline import load
from zmqfail.netutil import free_base_port

pytestmark = pytest.mark.timeout(120)

INSTRUMENTS = config.DEFAULT_INSTRUMENTS


# ------------------------------------------------------------------ histogram
def exact_percentile(values: list[int], q: float) -> int:
    s = sorted(values)
    return s[max(1, math.ceil(q * len(s) - 1e-9)) - 1]


def test_buckets_are_monotonic_and_narrow() -> None:
    prev = -1
    for v in [*range(0, 5000), *(int(1.07**k) for k in range(130, 400))]:
        b = bucket_of(v)
        assert b >= prev
        prev = b
        lo, hi = bucket_bounds(b)
        assert lo <= v <= hi
        assert (hi - lo) <= lo / 128
    with pytest.raises(ValueError):
        bucket_of(-1)


def test_percentiles_within_one_percent_of_exact() -> None:
    rng = random.Random(42)
    values = [int(rng.lognormvariate(7, 1.5)) for _ in range(50_000)]
    values += [rng.randint(0, 300) for _ in range(5_000)]
    h = Histogram()
    h.record_all(values)
    for q in (0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0):
        exact = exact_percentile(values, q)
        assert abs(h.percentile(q) - exact) <= 0.01 * exact, q
    assert h.max == max(values)
    assert h.percentile(1.0) == max(values)
    assert h.min == min(values)
    assert h.total == len(values)
    assert h.mean() == pytest.approx(sum(values) / len(values))


def test_merge_equals_combined_and_survives_shipping() -> None:
    rng = random.Random(7)
    a_vals = [rng.randint(0, 2_000_000) for _ in range(3000)]
    b_vals = [int(rng.expovariate(1 / 500)) for _ in range(4000)]
    a, b, both = Histogram(), Histogram(), Histogram()
    a.record_all(a_vals)
    b.record_all(b_vals)
    both.record_all(a_vals + b_vals)
    merged = Histogram.from_dict(json.loads(json.dumps(a.to_dict())))
    merged.merge(b)
    merged.merge(Histogram())
    assert merged.counts == both.counts
    assert (merged.total, merged.min, merged.max, merged.sum) == (
        both.total,
        both.min,
        both.max,
        both.sum,
    )
    for q in (0.5, 0.99, 0.999):
        assert merged.percentile(q) == both.percentile(q)
    assert Histogram().percentile(0.5) == 0.0


# ------------------------------------------------------------------ order mix
def drive_engine(mix: OrderMix, n: int, client_id: str = "c1") -> list[tuple[dict[str, Any], Any]]:
    """Feed the mix's bodies to a real engine (pure, no sockets), like a server would."""
    engine = Engine(OrdersConfig())
    out = []
    for _ in range(n):
        body = mix.next_body()
        o = engine.execute(client_id, body)
        engine.apply(o.changes)
        if o.status == "ok":
            mix.on_ok(body, o.result)
        out.append((body, o))
    return out


def test_order_mix_is_deterministic_per_seed() -> None:
    a = [b for b, _ in drive_engine(OrderMix(5, INSTRUMENTS), 2000)]
    b = [b for b, _ in drive_engine(OrderMix(5, INSTRUMENTS), 2000)]
    c = [b for b, _ in drive_engine(OrderMix(6, INSTRUMENTS), 2000)]
    assert a == b
    assert a != c


def test_order_mix_bodies_are_valid_and_realistic() -> None:
    codec = PriceCodec(2)
    runs = drive_engine(OrderMix(1, INSTRUMENTS), 6000)
    kinds: Counter[str] = Counter()
    crossed = limits = 0
    for body, o in runs:
        if body["op"] == "cancel":
            kinds["cancel"] += 1
            assert o.status == "ok" or o.result["code"] == "order_closed"
            continue
        assert body["op"] == "new" and body["instrument"] in INSTRUMENTS
        assert body["side"] in ("buy", "sell") and body["qty"] > 0
        kinds[body["type"]] += 1
        if body["type"] == "limit":
            assert codec.parse(body["price"]) is not None
            limits += 1
            crossed += bool(o.result["filled"])
        else:
            assert "price" not in body
        assert o.status == "ok", o.result
    assert {body["instrument"] for body, _ in runs if body["op"] == "new"} == set(INSTRUMENTS)
    assert 0.25 < crossed / limits < 0.45, crossed / limits
    assert 0.02 < kinds["market"] / len(runs) < 0.08
    assert 0.05 < kinds["cancel"] / len(runs) < 0.2


def test_cancels_only_name_known_open_ids_once() -> None:
    mix = OrderMix(3, ("ABC",), price_decimals=0)
    assert all(mix.next_body()["op"] == "new" for _ in range(200))  # nothing known yet
    known: set[int] = set()
    for oid in range(1, 50):
        status = "filled" if oid % 3 == 0 else "new"  # a filled order is no candidate
        mix.on_ok({"op": "new"}, {"order_id": oid, "status": status})
        if status == "new":
            known.add(oid)
    mix.on_ok({"op": "cancel"}, {"order_id": 999, "status": "cancelled"})
    cancelled = [
        b["order_id"] for b in (mix.next_body() for _ in range(2000)) if b["op"] == "cancel"
    ]
    assert cancelled and set(cancelled) <= known
    assert len(cancelled) == len(set(cancelled))
    assert mix.price(100) == "100"


# ------------------------------------------------------------------ outages
@dataclass(frozen=True)
class F:
    started: float
    ended: float
    from_server: str
    to_server: str
    epoch: int
    resent: int


def test_outage_runs_from_last_old_reply_to_first_new_reply() -> None:
    t = OutageTracker()
    t.batch(1.0, [("a", 1)], [])
    t.batch(1.1, [("a", 1), ("a", 1)], [])
    t.batch(1.45, [], [F(1.3, 1.45, "a", "b", 2, 8)])  # switched, no reply yet
    assert t.pending
    t.batch(1.5, [("b", 2)], [])
    t.batch(1.6, [("b", 2)], [])
    (o,) = t.finish()
    assert o.key == ("a", "b", 2) and o.answered and o.resent == 8
    assert o.outage_ms == pytest.approx(400.0)


def test_outage_batches_with_the_switch_inside() -> None:
    t = OutageTracker()
    t.batch(1.0, [("a", 1)], [])
    # Old replies in the batch that also records the switch came before it.
    t.batch(1.2, [("a", 1)], [F(1.15, 1.19, "a", "b", 2, 0)])
    t.batch(1.3, [("b", 2)], [])
    # Same server again (it came back): its replies in the batch count as after.
    t.batch(1.4, [("b", 2)], [F(1.35, 1.39, "b", "b", 2, 1)])
    # Switch at the end of the run with no reply from the new server.
    t.batch(2.0, [], [F(1.9, 1.95, "b", "a", 3, 4)])
    a, b, c = t.finish()
    assert a.outage_ms == pytest.approx(100.0)
    assert b.outage_ms == pytest.approx(100.0)
    assert not c.answered and c.outage_ms == pytest.approx(550.0)


def test_merge_outages_reports_each_switch_once_with_the_worst() -> None:
    def o(frm: str, to: str, epoch: int, ms: float, started: float) -> Outage:
        return Outage(frm, to, epoch, ms, 3, started, started + 0.1)

    events = merge_outages(
        [
            [o("a", "b", 2, 180.0, 5.0), o("b", "a", 3, 90.0, 9.0)],
            [o("a", "b", 2, 240.5, 5.1)],
            [],
        ]
    )
    assert [(e.from_server, e.to_server, e.epoch) for e in events] == [("a", "b", 2), ("b", "a", 3)]
    assert events[0].outage_ms == 240.5 and events[0].clients == 2 and events[0].resent == 6
    assert events[1].outage_ms == 90.0 and events[1].clients == 1


# ------------------------------------------------------------------ merging
def test_summarize_counts_acknowledged_and_errors_apart() -> None:
    r1 = ClientResult(0, "c0", started=10.0, finished=12.0, invoked=100, ok=90, resends=4)
    r1.rejected_by_code = {"order_closed": 5}
    r1.errors_by_kind = {"no_reply": 5}
    r1.latency_us.record_all([1000] * 95)
    r1.outages = [Outage("a", "b", 2, 200.0, 4, 11.0, 11.2)]
    r2 = ClientResult(1, "c1", started=10.0, finished=11.0, invoked=50, ok=50)
    r2.latency_us.record_all([3000] * 50)
    r2.outages = [Outage("a", "b", 2, 150.0, 0, 11.0, 11.2)]
    s = summarize([r1, r2], window=8, seed=3)
    assert s["acknowledged"] == 145 and s["requests"] == 150
    assert s["throughput"] == pytest.approx(72.5)
    assert s["errors"] == 5 and s["errors_by_kind"] == {"no_reply": 5}
    assert s["rejected_by_code"] == {"order_closed": 5} and s["resends"] == 4
    assert s["failovers"] == [200.0]
    assert s["latency_ms"]["max"] == 3.0
    assert s["latency_ms"]["p50"] == pytest.approx(1.0, rel=0.01)
    assert s["clients"] == 2 and s["window"] == 8 and s["duration"] == 2.0


def test_history_parts_merge_by_time(tmp_path: Path) -> None:
    parts = [tmp_path / "h.part0", tmp_path / "h.part1"]
    parts[0].write_text("".join(json.dumps({"time": t}) + "\n" for t in (1.0, 3.0, 5.0)))
    parts[1].write_text("".join(json.dumps({"time": t}) + "\n" for t in (2.0, 4.0)))
    out = tmp_path / "h"
    assert merge_parts([*parts, tmp_path / "missing"], out) == 5
    assert [json.loads(x)["time"] for x in out.read_text().splitlines()] == [1, 2, 3, 4, 5]
    assert [completion_type(s) for s in ("ok", "rejected", "error", "stale")] == [
        "ok",
        "ok",
        "fail",
        "info",
    ]


def test_options() -> None:
    assert split(10, 3) == [4, 3, 3] and sum(split(2000, 7)) == 2000
    BenchOptions(requests=5).validate()
    for bad in (
        BenchOptions(),
        BenchOptions(requests=5, duration=1.0),
        BenchOptions(requests=5, clients=0),
        BenchOptions(requests=5, window=0),
        BenchOptions(duration=1.0, rate=-1.0),
    ):
        with pytest.raises(ConfigError):
            bad.validate()


# ------------------------------------------------------------------ live runs
def bench_args(cfg_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "zmqfail", "client", "bench", "--config", str(cfg_path), *extra]


@pytest.fixture
def bench_procs() -> Iterator[Callable[[list[str], Path], subprocess.Popen[bytes]]]:
    """Bench processes, in their own process group each; killed if still running."""
    started: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            args,
            stdout=open(log, "wb"),  # noqa: SIM115 - owned by the child
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)


def start_cluster(cluster_dir: Callable[..., Path], cluster: MakeCluster) -> tuple[Path, Cluster]:
    cfg_path = cluster_dir()
    cl = cluster(cfg_path)
    cl.start("a", "b")
    cl.wait_all(lambda rows: all(r.state is State.NORMAL for r in rows), "a normal pair", 30)
    return cfg_path, cl


def read_history(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_history(events: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Every invoke has exactly one completion, after it; returns the completions."""
    times = [e["time"] for e in events]
    assert times == sorted(times)
    invokes = {(e["client_id"], e["msg_id"]): e for e in events if e["type"] == "invoke"}
    done: dict[tuple[str, int], dict[str, Any]] = {}
    for e in events:
        if e["type"] == "invoke":
            continue
        key = (e["client_id"], e["msg_id"])
        assert key in invokes and key not in done, e
        assert e["time"] >= invokes[key]["time"]
        done[key] = e
    assert done.keys() == invokes.keys()
    return done


def test_bench_against_a_pair(
    cluster_dir: Callable[..., Path], cluster: MakeCluster, tmp_path: Path, bench_procs: Any
) -> None:
    cfg_path, _ = start_cluster(cluster_dir, cluster)
    out, hist = tmp_path / "bench.json", tmp_path / "history.jsonl"
    args = ["--clients", "2", "--window", "8", "--requests", "2000"]
    p = bench_procs(
        bench_args(cfg_path, *args, "--json-out", str(out), "--history", str(hist), "--quiet"),
        tmp_path / "bench.log",
    )
    assert p.wait(timeout=90) == 0, (tmp_path / "bench.log").read_text()
    report = (tmp_path / "bench.log").read_text()
    assert "req/s" in report and "p99.9" in report
    assert report.count("p99.9") == 1 and report.count("acknowledged") == 1  # printed once
    s = json.loads(out.read_text())
    assert isinstance(s["throughput"], float) and s["throughput"] > 0
    assert set(s["latency_ms"]) >= {"p50", "p90", "p99", "p999", "max"}
    assert all(isinstance(v, float) for v in s["latency_ms"].values())
    assert 0 < s["latency_ms"]["p50"] <= s["latency_ms"]["p99"] <= s["latency_ms"]["max"]
    assert isinstance(s["errors"], int) and isinstance(s["errors_by_kind"], dict)
    assert isinstance(s["resends"], int) and isinstance(s["failovers"], list)
    if s["failovers"]:
        # On a busy machine a stall of a (or of the client) longer than the
        # client timeout makes a client look again, and find a again: only
        # after a request really waited that long, never on a quiet pair.
        timeout_ms = config.load(cfg_path).failover.client_timeout_ms
        assert s["latency_ms"]["max"] >= timeout_ms, s
    assert s["requests"] == 2000 and s["acknowledged"] == 2000 and s["errors"] == 0
    assert s["ok"] + sum(s["rejected_by_code"].values()) == 2000
    assert set(s["rejected_by_code"]) <= {"order_closed"}
    events = read_history(hist)
    assert len({e["client_id"] for e in events}) == 2
    done = check_history(events)
    assert len(done) == 2000
    for e in done.values():
        assert e["type"] == "ok" and e["server"] == "a" and e["epoch"] == 1
    assert all("body" in e for e in events if e["type"] == "invoke")
    assert not list(tmp_path.glob("history.jsonl.part*"))
    # --plot without --history records one for the picture and keeps nothing else.
    png = tmp_path / "run.png"
    p = bench_procs(
        bench_args(cfg_path, "--requests", "300", "--plot", str(png), "--quiet"),
        tmp_path / "plot.log",
    )
    assert p.wait(timeout=90) == 0, (tmp_path / "plot.log").read_text()
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_bench_lives_through_a_primary_kill(
    cluster_dir: Callable[..., Path], cluster: MakeCluster, tmp_path: Path, bench_procs: Any
) -> None:
    cfg_path, cl = start_cluster(cluster_dir, cluster)
    out, hist, png = tmp_path / "bench.json", tmp_path / "history.jsonl", tmp_path / "run.png"
    # A bench that would run ten minutes, ended by Ctrl-C once b has served a
    # while after the kill: a bench of fixed length (it was 6 s) kept both
    # cores busy for seconds after the failover it is here for.
    args = ["--clients", "2", "--window", "8", "--duration", "600", "--plot", str(png)]
    p = bench_procs(
        bench_args(cfg_path, *args, "--json-out", str(out), "--history", str(hist), "--quiet"),
        tmp_path / "bench.log",
    )
    st = cl.wait_until(
        "a", lambda s: (s.last_lsn or 0) > 1000, "past lsn 1000 (the bench going)", 60
    )
    cl.kill("a")
    floor = (st.last_lsn or 0) + 500
    cl.wait_until(
        "b",
        lambda s: s.role is Role.PRIMARY and (s.committed_lsn or 0) > floor,
        f"b primary and past commit {floor}",
        60,
    )
    os.killpg(p.pid, signal.SIGINT)
    assert p.wait(timeout=90) == 0, (tmp_path / "bench.log").read_text()
    s = json.loads(out.read_text())
    # One move from a to b. On a loaded machine a client may also time out on
    # a stalled but live server, look around and come back to it (from and to
    # the same server: no takeover); that is all else a run may show.
    moves = [e for e in s["failover_events"] if e["from_server"] != e["to_server"]]
    assert [(e["from_server"], e["to_server"]) for e in moves] == [("a", "b")], moves
    assert 0 < moves[0]["outage_ms"] < 5000
    assert s["errors"] == 0 and s["errors_by_kind"] == {}
    assert s["acknowledged"] == s["requests"] > 1000
    done = check_history(read_history(hist))
    assert all(e["type"] == "ok" for e in done.values())
    assert {e["server"] for e in done.values()} == {"a", "b"}
    epochs = {e["server"]: e["epoch"] for e in done.values()}
    assert epochs["b"] > epochs["a"]
    # The picture: drawn from this run's history, the failover in it.
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    (switch,) = load(hist).switches
    assert (switch.from_server, switch.to_server) == ("a", "b")
    assert f"plot: {png}" in (tmp_path / "bench.log").read_text()


def test_bench_without_a_server_fails_in_one_line(tmp_path: Path, bench_procs: Any) -> None:
    cfg_path = tmp_path / "zmqfail.toml"
    cfg_path.write_text(config.render(nodes=2, base_port=free_base_port(25)))
    p = bench_procs(
        bench_args(cfg_path, "--requests", "10", "--connect-timeout", "0.5", "--quiet"),
        tmp_path / "bench.log",
    )
    assert p.wait(timeout=60) == 1
    lines = (tmp_path / "bench.log").read_text().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zmqfail: error: no active server"), lines


def test_ctrl_c_stops_a_long_bench_which_drains_and_reports(
    cluster_dir: Callable[..., Path], cluster: MakeCluster, tmp_path: Path, bench_procs: Any
) -> None:
    """Ctrl-C (SIGINT to the bench's process group, as a terminal sends it)
    ends a run meant to last ten minutes: the clients stop sending, every
    request in flight is answered, and the report and history are written."""
    cfg_path, cl = start_cluster(cluster_dir, cluster)
    out, hist = tmp_path / "bench.json", tmp_path / "history.jsonl"
    args = ["--clients", "2", "--window", "8", "--duration", "600", "--quiet"]
    p = bench_procs(
        bench_args(cfg_path, *args, "--json-out", str(out), "--history", str(hist)),
        tmp_path / "bench.log",
    )
    cl.wait_until("a", lambda s: (s.committed_lsn or 0) > 200, "past commit 200 (load flowing)", 60)
    os.killpg(p.pid, signal.SIGINT)
    assert p.wait(timeout=60) == 0, (tmp_path / "bench.log").read_text()
    s = json.loads(out.read_text())
    assert s["acknowledged"] > 200 and s["errors"] == 0
    done = check_history(read_history(hist))  # every request sent has its outcome
    assert len(done) == s["requests"]
