"""`tools/bench turns`: do client, primary and backup work at the same time,
or take turns?

A pair in the normal state is started with every turn of each server's loop
timed (a tracer wraps `Node._turn`: benchkit/traced.py), and one closed-loop
client keeps a window of requests in flight as the `normal` flow does.
Over the middle of the measured span it reports, per window: each server's
share of the wall time spent inside turns, the share with both servers in a
turn at once, and the records the primary wrote per turn that wrote any.

Why these figures: on two cores a normal state whose three processes take
strict turns uses about one core whatever its per-request cost (the
primary's whole batch, then the backup's, then the client's), so its
throughput is the inverse of the sum of their times. Overlap is the share
of that sum the pipeline hides. The figures are ratios of one run, so a busy
machine moves them less than it moves req/s (issue 10).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .meter import Timing, summarize
from .procs import BenchError, Reaper
from .traced import run_loaded

# Installed as sitecustomize.py for the servers of the run only.
TRACER = """
if TRACING:
    import zmqfail.node.server as _srv
    _turns = []
    _real = _srv.Node._turn
    def _turn(self, events, now):
        nlog = self.core.nlog
        before = nlog.held
        t = time.perf_counter()
        _real(self, events, now)
        _turns.append((t, time.perf_counter(), nlog.held - before))
    _srv.Node._turn = _turn
    trace_at_exit(lambda: _turns)
"""
EDGE = 0.3  # seconds left out at each end of the measured span


def busy_share(turns: list[list[float]], lo: float, hi: float) -> float:
    return sum(min(e, hi) - max(s, lo) for s, e, _n in turns if e > lo and s < hi) / (hi - lo)


def overlap_share(a: list[list[float]], b: list[list[float]], lo: float, hi: float) -> float:
    """Share of [lo, hi] with a turn of `a` and one of `b` under way (each
    server's turns never overlap each other: one loop)."""
    both, j = 0.0, 0
    for s, e, _n in a:
        s, e = max(s, lo), min(e, hi)
        if e <= s:
            continue
        while j < len(b) and b[j][1] <= s:
            j += 1
        k = j
        while k < len(b) and b[k][0] < e:
            both += max(0.0, min(e, b[k][1]) - max(s, b[k][0]))
            k += 1
    return both / (hi - lo)


def summarize_turns(
    primary: list[list[float]], backup: list[list[float]], lo: float, hi: float
) -> dict[str, Any]:
    taking = [n for s, _e, n in primary if lo <= s < hi and n > 0]
    return {
        "primary_busy": round(busy_share(primary, lo, hi), 3),
        "backup_busy": round(busy_share(backup, lo, hi), 3),
        "both_busy": round(overlap_share(primary, backup, lo, hi), 3),
        "records_per_turn": round(sum(taking) / len(taking), 1) if taking else 0.0,
        "primary_turns_per_s": round(sum(1 for t in primary if lo <= t[0] < hi) / (hi - lo)),
    }


def bench_turns(
    reaper: Reaper, windows: list[int], timing: Timing, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    rows = []
    for window in windows:
        lo = timing.warmup + EDGE
        hi = timing.warmup + timing.seconds - EDGE
        if hi <= lo:
            raise BenchError("turns: --seconds too short to leave a span to look at")
        run = run_loaded(reaper, TRACER, {}, window, timing, "turns")
        r, traces, primary, backup = run.result, run.traces, run.primary, run.backup
        lo, hi = run.started + lo, run.started + hi
        row: dict[str, Any] = {"window": window, **summarize(r)}
        row.update(summarize_turns(traces[primary], traces[backup], lo, hi))
        say(format_turns(row))
        rows.append(row)
    return rows


def format_turns(r: dict[str, Any]) -> str:
    return (
        f"   turns window {r['window']:3d}: {r['throughput']:7,} req/s  p50 {r['p50_us']} us  "
        f"primary busy {r['primary_busy']:.0%}  backup busy {r['backup_busy']:.0%}  "
        f"both at once {r['both_busy']:.0%}  "
        f"{r['records_per_turn']:.1f} records a primary turn ({r['primary_turns_per_s']:,} turns/s)"
    )
