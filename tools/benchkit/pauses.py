"""`tools/bench pauses`: how long the servers' garbage collector stops them.

A collection stops the whole loop: nothing is read, answered or replicated
until it ends, so its length adds to the latency of every request in flight,
and one as long as the failure detector's dead time would look like a dead
server. A pair in the normal state is loaded as in the `normal` flow, each
server's collections timed by a tracer (`gc.callbacks`, thread CPU time, so
that being descheduled on a busy machine does not count as collecting:
benchkit/traced.py), once with the server's own collector settings
(`zmqfail.node.server.GC_THRESHOLDS`) and once per `--gc` setting given to
compare (the tracer makes the server's own call set that instead).

Reported per row: acknowledged req/s and the client's p50, p99, p99.9 and
worst latency; per server the collections of each generation in the
measured span, the longest of each, and the share of the span spent in
them; and, to compare the collector with what else stops the loop, the
server's longest turn (wall time) and the time of each snapshot fork (one
every 200,000 records by default: on the 2-core machine, a 16 s span at 64
in flight held one per server).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from zmqfail.loadgen.histogram import Histogram

from .meter import Timing, summarize
from .procs import BenchError, Reaper
from .traced import run_loaded

GC_VAR = "ZMQFAIL_BENCH_GC"

# Installed as sitecustomize.py for the servers of the run only.
TRACER = """
import gc
if TRACING:
    _want = os.environ.get("ZMQFAIL_BENCH_GC")
    if _want:
        _t = tuple(int(x) for x in _want.split(","))
        _set = gc.set_threshold
        gc.set_threshold = lambda *a: _set(*_t)
        _set(*_t)
    _runs = []
    _start = [0.0, 0.0]
    def _timed(phase, info):
        if phase == "start":
            _start[0], _start[1] = time.perf_counter(), time.thread_time()
        else:
            _runs.append((info["generation"], _start[0], time.thread_time() - _start[1]))
    gc.callbacks.append(_timed)
    import zmqfail.node.server as _srv
    _turns = []
    _real_turn = _srv.Node._turn
    def _turn(self, events, now):
        t = time.perf_counter()
        _real_turn(self, events, now)
        _turns.append((t, time.perf_counter() - t))
    _srv.Node._turn = _turn
    _forks = []
    _real_fork = os.fork
    def _fork():
        t = time.perf_counter()
        pid = _real_fork()
        if pid:
            _forks.append((t, time.perf_counter() - t))
        return pid
    os.fork = _fork
    def _trace():
        return {"thresholds": gc.get_threshold(), "runs": _runs, "turns": _turns, "forks": _forks}
    trace_at_exit(_trace)
"""


def parse_gc(text: str) -> tuple[int, int, int]:
    """'2000,20,100' -> (2000, 20, 100): the three thresholds of gc.set_threshold."""
    wrong = f"{text!r}: thresholds are three whole numbers, the first positive (2000,20,100)"
    try:
        t = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(wrong) from None
    if len(t) != 3 or t[0] < 1 or min(t) < 0:
        raise ValueError(wrong)
    return t[0], t[1], t[2]


def summarize_runs(
    runs: Sequence[Sequence[float]],
    lo: float,
    hi: float,
    turns: Sequence[Sequence[float]],
    forks: Sequence[Sequence[float]],
) -> dict[str, Any]:
    """Collections that began inside [lo, hi]: count and longest (ms) per
    generation, and the share of the span they took; the longest loop turn
    (wall time: a collection, a fork, or the machine) and the snapshot forks
    (each fork's own time; the copy-on-write faults after it land in the
    turns that follow)."""
    inside = [(int(g), cpu) for g, t, cpu in runs if lo <= t < hi]
    count = [sum(1 for g, _ in inside if g == gen) for gen in range(3)]
    longest = [max((cpu for g, cpu in inside if g == gen), default=0.0) * 1e3 for gen in range(3)]
    return {
        "collections": count,
        "longest_ms": [round(x, 1) for x in longest],
        "share": round(sum(cpu for _, cpu in inside) / (hi - lo), 4),
        "turns": sum(1 for t, _ in turns if lo <= t < hi),
        "longest_turn_ms": round(max((d for t, d in turns if lo <= t < hi), default=0.0) * 1e3, 1),
        "forks_ms": [round(d * 1e3, 1) for t, d in forks if lo <= t < hi],
    }


def bench_pauses(
    reaper: Reaper,
    windows: list[int],
    timing: Timing,
    settings: list[tuple[int, int, int] | None],
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """One row per window and setting (None: the servers' own)."""
    rows = []
    for window in windows:
        for setting in settings:
            env = {GC_VAR: ",".join(map(str, setting))} if setting else {}
            run = run_loaded(reaper, TRACER, env, window, timing, "pauses")
            r, traces, t0 = run.result, run.traces, run.started
            lo, hi = t0 + timing.warmup, t0 + timing.warmup + timing.seconds
            hist = Histogram.from_dict(r["hist"])
            row: dict[str, Any] = {
                "window": window,
                "setting": "own" if setting is None else "given",
                **summarize(r),
                "p999_us": round(hist.percentile(0.999)) if hist.total else None,
                "max_us": hist.max if hist.total else None,
                "servers": {},
            }
            for name, trace in sorted(traces.items()):
                if setting is not None and tuple(trace["thresholds"]) != setting:
                    raise BenchError(f"pauses: server {name} ran with {trace['thresholds']}")
                row["servers"][name] = {
                    "thresholds": list(trace["thresholds"]),
                    **summarize_runs(trace["runs"], lo, hi, trace["turns"], trace["forks"]),
                }
            say(format_pauses(row))
            rows.append(row)
    return rows


def format_pauses(r: dict[str, Any]) -> str:
    gc = next(iter(r["servers"].values()))["thresholds"]
    lines = [
        f"   pauses window {r['window']:3d}, gc {','.join(map(str, gc))} ({r['setting']}): "
        f"{r['throughput']:7,} req/s  p50 {r['p50_us']} us  p99 {r['p99_us']} us  "
        f"p99.9 {r['p999_us']} us  max {r['max_us']} us"
    ]
    for name, s in r["servers"].items():
        lines.append(
            f"      {name}: collections {'/'.join(map(str, s['collections']))} (gen 0/1/2), "
            f"longest {'/'.join(f'{x:.1f}' for x in s['longest_ms'])} ms, "
            f"{s['share']:.1%} of the span; longest turn {s['longest_turn_ms']:.1f} ms"
            + (
                f"; snapshot forks {', '.join(f'{x:.1f}' for x in s['forks_ms'])} ms"
                if s["forks_ms"]
                else ""
            )
        )
    return "\n".join(lines)
