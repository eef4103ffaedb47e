"""zmqfail benchmarks (run as `tools/bench`; figures go to docs/benchmarks.md).

Flows, each measured by one closed-loop client process per window, in the same
invocation so ratios are comparable on a noisy 2-core machine:
  single     zmqfail, one node alone: fsync before every acknowledgement
  normal     zmqfail, primary + backup in the normal state, real engine
  aio        the same through the asyncio client, one coroutine per request
             in flight (not part of `compare`)
  disk       the same with [flush] durability = "disk": fsync on both
             servers before every acknowledgement (group commit)
  curve      the normal state with CurveZMQ on clients, replication and
             control (keys made for the run): what encryption costs
  bare       the normal state's socket flow with one frame per request,
             no engine, no log (the ceiling of today's design)
  batched    the same three processes with one frame per batch on every hop
  pysyncobj  PySyncObj (Raft), 2 nodes, ack after commit      } the `bench`
  redis      Redis primary + replica, SET then WAIT 1 0       } extra
Other scenarios:
  compare    all of the above at 1/16/64/256 in flight, a table with ratios
             to the normal state, and a plot (docs/bench-compare.png)
  failover   kill -9 the primary 20 times under load; the outage clients see
  alarms     false alarms against detection time: per failure-detection
             setting an idle and a loaded pair beside --hog N hogs (default
             one per core) for --seconds, then --kills kill -9s of the primary
  shards     1, 2 and 4 shards crossed over two loopback machines, the same
             load each time: aggregate req/s, p50/p99, server CPU a request
             (tools/benchkit/shards.py)
  turns      the normal state with each server's loop turns timed: how much
             of the time primary and backup work at once (tools/benchkit/turns.py)
  idle       a pair with no client: each server's CPU share at rest
             (tools/benchkit/idle.py)
  path       one request in flight through a pair, each server's wake-ups,
             turns and sends timed: where its latency goes (tools/benchkit/path.py)
  cpu        the normal state with each server's loop timed in CPU time, part by
             part, and the client's: CPU a request where (tools/benchkit/cpu.py)
  rejoin     kill -9 the backup of a loaded pair, keep it down for each --down
             seconds, start it again: how long until the pair is NORMAL
             (tools/benchkit/rejoin.py)
  pauses     the normal state with each server's garbage collections timed,
             with its own settings and each --gc setting (tools/benchkit/pauses.py)
  processor  in process, no sockets: the per-request path of the active server
             (dedup, application, record, reply) and the backup's (decode, apply)
Single flows run at 1 and 64 in flight unless --windows says otherwise.
--hog N measures every flow and window twice: quiet, then with N busy-loop
processes alongside. Peers that are not installed are skipped with a note.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchkit.alarms import bench_alarms
from benchkit.cluster import Cluster, load_until_stopped
from benchkit.cpu import bench_cpu
from benchkit.flows import FLOWS
from benchkit.idle import bench_idle
from benchkit.meter import Timing
from benchkit.path import bench_path
from benchkit.pauses import bench_pauses, parse_gc
from benchkit.procs import (
    BenchError,
    Reaper,
    cpu_ticks,
    interrupt_on_signals,
    steal_share,
)
from benchkit.rejoin import bench_rejoin
from benchkit.report import format_table, plot, run_flows
from benchkit.shards import bench_shards
from benchkit.shards import format_rows as format_shards
from benchkit.turns import bench_turns

from zmqfail import config
from zmqfail.cli.demo import random_order
from zmqfail.failover.state import Role, State

ROOT = Path(__file__).resolve().parent.parent
# `aio` is the normal state again through the asyncio client: asked for by name.
COMPARE_FLOWS = [f for f in FLOWS if f != "aio"]
COMPARE_WINDOWS = [1, 16, 64, 256]
DEFAULT_PLOT = ROOT / "docs" / "bench-compare.png"


def print_flush(line: str) -> None:
    print(line, flush=True)


def percentile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(q * len(sorted_vals)))]


def bench_failover(reaper: Reaper, kills: int = 20) -> dict[str, Any]:
    """kill -9 the primary `kills` times under steady load; outage as the client sees it."""
    cl = Cluster(reaper, 2, ["a", "b"])
    try:
        cl.wait_state("a", State.NORMAL)
        with load_until_stopped(reaper, cl.path, 16, "failover client") as finish:
            time.sleep(1.0)
            for i in range(kills):
                primary = cl.primary()
                backup = next(n.name for n in cl.cfg.nodes if n.name != primary)
                os.killpg(cl.procs[primary].pid, signal.SIGKILL)
                cl.kill(primary)
                cl.wait_role(backup, Role.PRIMARY, 30)
                cl.start(primary)
                cl.wait_role(primary, Role.BACKUP, 60, state=State.NORMAL)
                cl.wait_role(backup, Role.PRIMARY, 30, state=State.NORMAL)
                time.sleep(0.5)
                print(f"  kill {i + 1}/{kills}: {primary} -> {backup}", flush=True)
            res = finish()
    finally:
        cl.close()
    outages = sorted((b - a) * 1000 for a, b, _, _ in res["switches"])
    return {
        "scenario": "failover",
        "kills": kills,
        "switches": len(outages),
        "outage_p50_ms": round(percentile(outages, 0.5), 1),
        "outage_p99_ms": round(percentile(outages, 0.99), 1),
        "outage_max_ms": round(max(outages), 1) if outages else None,
        "replies": res["replies"],
        "errors": res["errors"],
        "resends": res["resends"],
    }


def bench_processor(
    seconds: float, requests: int = 50_000, rounds: int = 5
) -> list[dict[str, Any]]:
    """The request path without I/O, over the same pre-built requests each round
    (fresh state each time; best round kept, the machine being noisy): what issue
    10's batching has to keep cheap. 64 clients take turns, as behind a busy
    frontend. `seconds` is not used: a fixed amount of work keeps runs comparable.
    Timed in CPU time of this process: the path is pure CPU work, and the
    shared machine's load would swamp wall-clock figures."""
    from zmqfail.processor import Processor
    from zmqfail.txlog.record import TxRecord

    cfg = config.load_default()
    rng = random.Random(3)
    reqs = [
        (f"c-{i % 64}", i // 64 + 1, random_order(rng, config.DEFAULT_INSTRUMENTS))
        for i in range(requests)
    ]
    best_submit = best_apply = float("inf")
    records: list[bytes] = []
    for _ in range(rounds):
        primary, backup = Processor.create(cfg, "a", 1), Processor.create(cfg, "b", 1)
        records = []
        sessions: dict[str, int] = {}
        for n in range(64):  # every client registers once, before the timed part
            out = primary.register(f"c-{n}", n + 1)
            assert out.record is not None
            records.append(out.record)
            sessions[f"c-{n}"] = out.gate_lsn
        t0 = time.process_time()
        for client_id, msg_id, body in reqs:
            out = primary.submit(client_id, msg_id, body, sessions[client_id])
            if out.record is not None:
                records.append(out.record)
        best_submit = min(best_submit, time.process_time() - t0)
        t0 = time.process_time()
        for data in records:
            backup.apply_record(TxRecord.decode(data))
        best_apply = min(best_apply, time.process_time() - t0)
    return [
        {
            "scenario": "processor",
            "requests": requests,
            "submit_per_s": round(requests / best_submit),
            "apply_per_s": round(len(records) / best_apply),
            "record_bytes": round(sum(map(len, records)) / max(1, len(records)), 1),
        }
    ]


def _windows(text: str) -> list[int]:
    try:
        ws = [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text}") from None
    if not ws or min(ws) < 1:
        raise argparse.ArgumentTypeError("windows must be positive")
    return ws


def _settings(text: str) -> list[tuple[int, int]]:
    """`30x5,30x10`: heartbeat interval (ms) x misses, per alarms setting."""
    out = []
    for part in text.split(","):
        try:
            interval, misses = (int(v) for v in part.strip().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not INTERVALxMISSES") from None
        if interval < 1 or misses < 1:
            raise argparse.ArgumentTypeError("interval and misses must be positive")
        out.append((interval, misses))
    return out


def _seconds_list(text: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of seconds: {text}") from None
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"seconds must not be negative: {text}")
    return out


def _gc_settings(text: str) -> list[tuple[int, int, int]]:
    try:
        return [parse_gc(part) for part in text.split("/")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    scenarios = [
        "failover",
        "processor",
        "alarms",
        "shards",
        "turns",
        "idle",
        "pauses",
        "path",
        "cpu",
        "rejoin",
    ]
    choices = ["compare", *FLOWS, *scenarios]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=" ".join(choices))
    ap.add_argument("--seconds", type=float, default=5.0, help="measured per row (default 5)")
    ap.add_argument("--warmup", type=float, default=1.0, help="before each row (default 1)")
    ap.add_argument("--windows", type=_windows, default=None, help="e.g. 1,64")
    ap.add_argument("--kills", type=int, default=None, help="kill -9s (failover 20, alarms 5)")
    ap.add_argument(
        "--detect", type=_settings, default=None, help="alarms: e.g. 30x5,30x10,30x20 (ms x misses)"
    )
    ap.add_argument(
        "--down",
        type=_seconds_list,
        default=[5.0, 15.0],
        help="rejoin: seconds the backup stays down, e.g. 5,15 (default)",
    )
    ap.add_argument(
        "--gc",
        type=_gc_settings,
        default=[],
        help="pauses: collector thresholds to compare, e.g. 100000,50,1000[/700,10,10]",
    )
    ap.add_argument("--hog", type=int, default=0, metavar="N", help="also measure under N hogs")
    ap.add_argument("--json", dest="json_out", default=None, help="also write results here")
    ap.add_argument("--plot", default=None, help=f"plot file (compare: {DEFAULT_PLOT})")
    args = ap.parse_args(argv)
    args.scenarios = args.scenarios or ["processor", "single", "bare", "normal", "failover"]
    bad = [s for s in args.scenarios if s not in choices]
    if bad:
        ap.error(f"unknown scenario {bad[0]!r} (choose from {', '.join(choices)})")
    args.kills_given = args.kills is not None
    args.kills = 20 if args.kills is None else args.kills
    if args.hog < 0 or args.seconds <= 0 or args.warmup < 0 or args.kills < 1:
        ap.error("--seconds and --kills must be positive, --hog and --warmup not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    compare = "compare" in args.scenarios
    flows = [f for f in FLOWS if (compare and f in COMPARE_FLOWS) or f in args.scenarios]
    windows = args.windows or (COMPARE_WINDOWS if compare else [1, 64])
    timing = Timing(args.seconds, args.warmup)
    load = os.getloadavg()
    ticks0 = cpu_ticks()
    started = datetime.datetime.now().isoformat(sep=" ", timespec="minutes")
    print(f"{started}: load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    interrupt_on_signals()
    out: dict[str, Any] = {"started": started, "load_before": load, "windows": windows}
    try:
        if "processor" in args.scenarios:
            (p,) = bench_processor(args.seconds)
            out["processor"] = p
            print(
                f"processor: {p['requests']:,} requests, best of 5: "
                f"submit {p['submit_per_s']:,}/s, "
                f"backup decode+apply {p['apply_per_s']:,}/s, "
                f"{p['record_bytes']} bytes a record",
                flush=True,
            )
        with Reaper() as reaper, tempfile.TemporaryDirectory(prefix="zmqfail-bench-") as tmp:
            rows, skipped = run_flows(
                flows, windows, timing, args.hog, reaper, Path(tmp), lambda s: print(s, flush=True)
            )
            out.update(rows=rows, skipped=skipped)
            if "alarms" in args.scenarios:
                hogs = args.hog or os.cpu_count() or 2
                kills = args.kills if args.kills_given else 5
                out["alarms"] = [
                    r.as_dict()
                    for r in bench_alarms(
                        reaper, args.seconds, hogs, kills, args.detect, say=print_flush
                    )
                ]
            if "idle" in args.scenarios:
                out["idle"] = bench_idle(reaper, args.seconds, print_flush)
            if "turns" in args.scenarios:
                out["turns"] = bench_turns(reaper, windows, timing, print_flush)
            if "rejoin" in args.scenarios:
                out["rejoin"] = bench_rejoin(reaper, args.down, print_flush)
            if "cpu" in args.scenarios:
                out["cpu"] = bench_cpu(reaper, args.windows or [64], timing, print_flush)
            if "path" in args.scenarios:
                out["path"] = bench_path(reaper, args.seconds, args.warmup, print_flush)
            if "pauses" in args.scenarios:
                settings = [None, *args.gc]
                pause_windows = args.windows or [64]
                out["pauses"] = bench_pauses(reaper, pause_windows, timing, settings, print_flush)
            if "shards" in args.scenarios:
                out["shards"] = bench_shards(reaper, timing, print_flush)
                print(format_shards(out["shards"]), flush=True)
            if "failover" in args.scenarios:
                f = bench_failover(reaper, args.kills)
                out["failover"] = f
                print(
                    f"failover: {f['kills']} kill -9, outage p50 {f['outage_p50_ms']} ms "
                    f"p99 {f['outage_p99_ms']} ms max {f['outage_max_ms']} ms, "
                    f"errors {f['errors']}, resends {f['resends']}",
                    flush=True,
                )
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    out["load_after"] = os.getloadavg()
    out["steal_share"] = round(steal_share(ticks0, cpu_ticks()), 4)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in out['load_after'])}")
    # A virtual machine whose host is busy loses CPU time it never sees as
    # load: every figure of such a run is low, CPU a request high.
    print(f"CPU time stolen by the host during the run: {out['steal_share']:.1%}")
    if rows:
        print("\n" + format_table(rows, skipped))
    if rows and (compare or args.plot):
        title = f"tools/bench compare, {started}, load average {load[0]:.2f} at start"
        print(plot(rows, Path(args.plot) if args.plot else DEFAULT_PLOT, title))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2))
    failed = [s["flow"] for s in skipped if s["status"] == "failed"]
    if failed:
        print(f"bench: {', '.join(failed)} failed (see above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
