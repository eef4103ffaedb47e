"""`tools/bench shards`: what N shards give on this machine, and what each costs.

For each shard count (1, 2 and 4 by default) a fresh cluster laid out as
``zmqfail config init --shards N --machines 2`` writes it (shards crossed over
two loopback "machines", every shard a primary and a backup) is started, all
in the normal state, and loaded the same way every time: the same client
processes with the same number of requests in flight in all, each a routing
client (``ShardedClient``) sending orders for every instrument, so the load
spreads evenly over the shards. Only the number of shards changes.

Measured over the same span (after a warm-up): acknowledged requests per
second, in all and per shard; latency p50 and p99 (every client's histogram
merged); and the CPU time each server process spent (from /proc/PID/stat),
per acknowledged request of its shard: what a shard costs, the figure that
says how many shards a machine with more cores could run. Before the load,
the servers' CPU with no load at all (heartbeats and timers): the fixed
price of each shard.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zmqfail import config
from zmqfail.cli.demo import random_order
from zmqfail.client.shards import ShardedClient
from zmqfail.cluster import Cluster as NodeCluster
from zmqfail.cluster import spawn_node
from zmqfail.configtext import PORTS_PER_NODE
from zmqfail.errors import ZmqfailError
from zmqfail.loadgen.histogram import Histogram
from zmqfail.netutil import free_base_port
from zmqfail.protocol import STATUS_OK

from .meter import Meter, Timing, summarize
from .procs import BenchError, Reaper, _reporting, cpu_seconds, cpu_shares, result_of

COUNTS = (1, 2, 4)
CLIENTS = 2  # client processes, for every shard count
WINDOW = 64  # requests in flight per client process, over all shards
READY = 3.0  # seconds from forking the clients to the start: connect first
IDLE = 2.0  # seconds of servers without load, measured before the load


def drive_sharded(
    cfg_path: str, window: int, timing: Timing, seed: int, start_at: float
) -> dict[str, Any]:
    """One client process: a routing client keeping `window` orders in flight
    over every shard (an equal share per shard), from `start_at` (the
    monotonic clock, shared by every process) through the warm-up and the
    measured span; one meter per shard."""
    cfg = config.load(cfg_path)
    rng = random.Random(seed)
    instruments = tuple(sorted(k for sh in cfg.shards for k in sh.keys or ()))
    per = max(1, window // len(cfg.shards))
    clock = time.monotonic
    with ShardedClient(cfg, timeout=10.0, window=per) as sc:
        sc.connect()
        meters = {sh.name: Meter(timing, start_at) for sh in cfg.shards}
        time.sleep(max(0.0, start_at - clock()))
        end = start_at + timing.warmup + timing.seconds
        while clock() < end:
            while sc.outstanding() < window:
                body = random_order(rng, instruments)
                shard = sc.router.route(body)
                if len(sc.client(shard).session.outstanding) >= per:
                    break  # that shard's share is out: wait for its replies
                _, mid = sc.submit(body)
                meters[shard].on_sent(mid, clock())
            for shard, rep in sc.poll(1.0):
                meters[shard].on_reply(rep.msg_id, clock(), rep.status == STATUS_OK)
        drain_end = clock() + timing.drain
        while sc.outstanding() and clock() < drain_end:
            for shard, rep in sc.poll(0.5):
                meters[shard].on_reply(rep.msg_id, clock(), rep.status == STATUS_OK)
        failovers = sum(len(c.failovers) for c in sc.clients.values())
    return {"shards": {n: m.result() for n, m in meters.items()}, "failovers": failovers}


def _collect(
    ps: list[mp.Process], outs: list[mp.Queue[dict[str, Any]]], timeout: float
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    return [
        result_of(p, out, deadline, "shards client", timeout)
        for p, out in zip(ps, outs, strict=True)
    ]


def measure(
    reaper: Reaper, shards: int, timing: Timing, clients: int = CLIENTS, window: int = WINDOW
) -> dict[str, Any]:
    """One shard count: start the crossed cluster, load it, measure, stop it."""
    d = Path(tempfile.mkdtemp(prefix="zmqfail-bench-shards-"))
    path = d / "zmqfail.toml"
    path.write_text(config.render_shards(shards, 2, free_base_port(2 * shards * PORTS_PER_NODE)))

    def spawn(name: str) -> subprocess.Popen[bytes]:
        return reaper.adopt(spawn_node(path, name, d / f"node-{name}.log"))

    cl = NodeCluster(config.load(path), spawn, logs=d)
    failed = True
    try:
        try:
            primaries = {s: st.name for s, st in cl.start_shards(timeout=60).items()}
        except ZmqfailError as exc:
            raise BenchError(f"{shards} shard(s) did not start: {exc}; see {d}") from None
        # What the servers cost with no load at all (heartbeats, timers):
        # the fixed part of a shard's price, apart from the per-request part.
        shares, _span = cpu_shares({n: p.pid for n, p in cl.procs.items()}, IDLE)
        idle = sum(shares.values())
        start_at = time.monotonic() + READY
        outs: list[mp.Queue[dict[str, Any]]] = [mp.Queue() for _ in range(clients)]
        ps = [
            reaper.process(
                _reporting, drive_sharded, (str(path), window, timing, 7 + i, start_at), outs[i]
            )
            for i in range(clients)
        ]
        span_at = start_at + timing.warmup
        time.sleep(max(0.0, span_at - time.monotonic()))
        nodes0 = {n: cpu_seconds(p.pid) for n, p in cl.procs.items()}
        clients0 = [cpu_seconds(p.pid) for p in ps if p.pid is not None]
        time.sleep(max(0.0, span_at + timing.seconds - time.monotonic()))
        nodes1 = {n: cpu_seconds(p.pid) for n, p in cl.procs.items()}
        clients1 = [cpu_seconds(p.pid) for p in ps if p.pid is not None]
        results = _collect(ps, outs, timing.drain + 60)
        for p in ps:
            reaper.stop(p)
        row = _row(cl.cfg, shards, primaries, results, timing, nodes0, nodes1)
        row["clients"], row["window"] = clients, window
        row["idle_cores"] = round(idle, 3)
        # The part of the servers' CPU the load added: per request, beyond idling.
        busy = max(0.0, row["node_cores"] - idle) / max(1, row["throughput"])
        row["load_us_per_request"] = round(busy * 1e6, 1)
        row["client_cores"] = round((sum(clients1) - sum(clients0)) / timing.seconds, 2)
        failed = False
        return row
    finally:
        cl.close()
        if not failed:
            shutil.rmtree(d, ignore_errors=True)


def _row(
    cfg: config.ClusterConfig,
    shards: int,
    primaries: dict[str, str],
    results: list[dict[str, Any]],
    timing: Timing,
    cpu0: dict[str, float],
    cpu1: dict[str, float],
) -> dict[str, Any]:
    """The figures of one shard count from the clients' meters and the CPU readings."""
    hist = Histogram()
    per_shard: dict[str, Any] = {}
    for sh in cfg.shards:
        merged = {"seconds": timing.seconds, "sent": 0, "answered": 0, "in_span": 0, "errors": 0}
        h = Histogram()
        for res in results:
            m = res["shards"][sh.name]
            for k in ("sent", "answered", "in_span", "errors"):
                merged[k] += m[k]
            h.merge(Histogram.from_dict(m["hist"]))
        hist.merge(h)
        s = summarize({**merged, "hist": h.to_dict()})
        primary = primaries[sh.name]
        used = {n: cpu1[n] - cpu0[n] for n in sh.nodes}
        acked = max(1, merged["in_span"])
        per_shard[sh.name] = {
            "throughput": s["throughput"],
            "primary_cpu_us": round(used[primary] / acked * 1e6, 1),
            "backup_cpu_us": round(
                sum(v for n, v in used.items() if n != primary) / acked * 1e6, 1
            ),
            "unanswered": s["unanswered"],
            "errors": s["errors"],
        }
    acked_all = sum(r["throughput"] for r in per_shard.values()) * timing.seconds
    node_cpu = sum(cpu1[n] - cpu0[n] for n in cpu1)
    return {
        "shards": shards,
        "throughput": sum(r["throughput"] for r in per_shard.values()),
        "p50_us": round(hist.percentile(0.50)) if hist.total else None,
        "p99_us": round(hist.percentile(0.99)) if hist.total else None,
        "cpu_us_per_request": round(node_cpu / max(1.0, acked_all) * 1e6, 1),
        "node_cores": round(node_cpu / timing.seconds, 2),
        "failovers": sum(r["failovers"] for r in results),
        "per_shard": per_shard,
    }


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The table docs/benchmarks.md quotes."""
    head = (
        f"{'shards':>6} {'req/s':>8} {'p50 us':>8} {'p99 us':>8} {'CPU us/req':>10} "
        f"{'node cores':>10} {'idle cores':>10} {'load us/req':>11} {'client cores':>12}  "
        "per shard: req/s, CPU us/req primary+backup"
    )
    lines = [head]
    for r in rows:
        each = "; ".join(
            f"{n} {s['throughput']:,} {s['primary_cpu_us']:.0f}+{s['backup_cpu_us']:.0f}"
            for n, s in r["per_shard"].items()
        )
        lines.append(
            f"{r['shards']:>6} {r['throughput']:>8,} {r['p50_us']:>8,} {r['p99_us']:>8,} "
            f"{r['cpu_us_per_request']:>10} {r['node_cores']:>10} {r['idle_cores']:>10} "
            f"{r['load_us_per_request']:>11} {r['client_cores']:>12}  {each}"
        )
    return "\n".join(lines)


def bench_shards(
    reaper: Reaper, timing: Timing, say: Callable[[str], None], counts: tuple[int, ...] = COUNTS
) -> list[dict[str, Any]]:
    """Every shard count in turn, the same load each time."""
    rows = []
    for n in counts:
        row = measure(reaper, n, timing)
        say(
            f"shards {n}: {row['throughput']:,} req/s, p50 {row['p50_us']} us, "
            f"p99 {row['p99_us']} us, {row['cpu_us_per_request']} us CPU a request "
            f"({row['node_cores']} cores of servers)"
        )
        rows.append(row)
    return rows
