"""Running flows at several windows, and what comes out: rows with ratios to
zmqfail's normal state, a markdown table, and a plot of throughput against p99."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .flows import FLOWS, Run, open_flow
from .meter import Timing, ratio, summarize
from .peers import INSTALL_EXTRA, Skip
from .procs import BenchError, Reaper, cpu_of, cpu_since, live_pids

BASE_FLOW = "normal"  # every ratio is to zmqfail's normal state in the same run


def run_flows(
    names: list[str],
    windows: list[int],
    timing: Timing,
    hogs: int,
    reaper: Reaper,
    workdir: Path,
    say: Callable[[str], None],
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Each flow set up once and measured at each window, quiet and (with
    ``hogs``) right after under that many busy-loop processes. A flow that
    cannot run here is skipped, one that fails is noted (its measured rows
    stay), and the others go on: a long run is not lost to one of them."""
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for name in names:
        try:
            with open_flow(name, reaper, workdir) as run:
                for w in windows:
                    for n in (0, hogs) if hogs else (0,):
                        res, cpu = measured(reaper, run, w, timing, n)
                        row = {"flow": name, "window": w, "hogs": n, **summarize(res)}
                        row["cpu_us"] = cpu_per_request(cpu, res)
                        rows.append(row)
                        say(format_row(row))
        except Skip as exc:
            skipped.append({"flow": name, "status": "skipped", "reason": str(exc)})
            say(f"{name:>9}: skipped: {exc}")
        except BenchError as exc:
            skipped.append({"flow": name, "status": "failed", "reason": str(exc)})
            say(f"{name:>9}: failed: {exc}")
    add_ratios(rows)
    return rows, skipped


def measured(
    reaper: Reaper,
    run: Run,
    window: int,
    timing: Timing,
    hogs: int,
) -> tuple[dict[str, Any], float]:
    """One row: the client's result, and the CPU seconds the flow spent on
    it: the processes that ran before any hog started (the flow's servers),
    and the client's own (`cpu_s` in its result)."""
    servers = live_pids(reaper)
    cpu0 = cpu_of(servers)
    with reaper.hogging(hogs):  # none when 0
        res = run(window, timing)
        cpu = cpu_since(cpu0, cpu_of(servers))
    return res, cpu + res.get("cpu_s", 0.0)


def cpu_per_request(cpu_s: float, res: dict[str, Any]) -> float | None:
    """CPU microseconds a request answered, over every process of the flow
    (servers, their reaped children, the client; start-up and drain
    included): on two cores, what bounds throughput."""
    answered = res.get("answered", 0)
    return round(cpu_s * 1e6 / answered, 1) if answered else None


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """x_normal_*: this row over normal state at the same window and hogs;
    x_quiet: a hogged row's throughput over the same flow's quiet one."""
    by_key = {(r["flow"], r["window"], r["hogs"]): r for r in rows}
    for r in rows:
        base = by_key.get((BASE_FLOW, r["window"], r["hogs"]))
        for k in ("throughput", "p50_us", "p99_us"):
            r[f"x_normal_{k}"] = ratio(r[k], base[k] if base else None)
        quiet = by_key.get((r["flow"], r["window"], 0))
        r["x_quiet"] = ratio(r["throughput"], quiet["throughput"]) if quiet and r["hogs"] else None


def _us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} us"


def _cpu(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} us"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def format_row(r: dict[str, Any]) -> str:
    hog = f" +{r['hogs']} hogs" if r["hogs"] else ""
    return (
        f"{r['flow']:>9} window {r['window']:>3}{hog}: {r['throughput']:>7,} req/s  "
        f"p50 {_us(r['p50_us']):>9}  p99 {_us(r['p99_us']):>9}  "
        f"CPU {_cpu(r.get('cpu_us'))}/req  unanswered {r['unanswered']}  errors {r['errors']}"
        + (f"  FAILOVERS {r['failovers']}" if r.get("failovers") else "")
    )


def format_table(rows: list[dict[str, Any]], skipped: list[dict[str, str]]) -> str:
    """A markdown table, ready for docs/benchmarks.md."""
    hogged = any(r["hogs"] for r in rows)
    head = ["flow", "in flight"] + (["hogs"] if hogged else [])
    head += ["req/s", "x normal", "p50", "x normal", "p99", "x normal", "CPU a request"]
    head += ["x quiet"] if hogged else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: (list(FLOWS).index(r["flow"]), r["window"], r["hogs"])):
        cells = [r["flow"], str(r["window"])] + ([str(r["hogs"])] if hogged else [])
        cells += [f"{r['throughput']:,}", _x(r["x_normal_throughput"])]
        cells += [_us(r["p50_us"]), _x(r["x_normal_p50_us"])]
        cells += [_us(r["p99_us"]), _x(r["x_normal_p99_us"]), _cpu(r.get("cpu_us"))]
        cells += [_x(r["x_quiet"])] if hogged else []
        lines.append("| " + " | ".join(cells) + " |")
    lines += [f"\n{s['flow']}: {s['status']}: {s['reason'].splitlines()[0]}" for s in skipped]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> str:
    """Throughput against p99, one line per flow through its windows; returns
    what was done, in one line (the plot is skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"no plot: matplotlib is not installed: {INSTALL_EXTRA}"
    fig, ax = plt.subplots(figsize=(9, 7))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(FLOWS):
        for hogs in sorted({r["hogs"] for r in rows}):
            pts = sorted(
                (r for r in rows if r["flow"] == name and r["hogs"] == hogs and r["p99_us"]),
                key=lambda r: r["window"],
            )
            if not pts:
                continue
            xs = [r["throughput"] for r in pts]
            ys = [r["p99_us"] / 1000 for r in pts]
            label = FLOWS[name] + (f" (+{hogs} hogs)" if hogs else "")
            style = "--" if hogs else "-"
            ax.plot(xs, ys, style, marker="o", color=colors[i % len(colors)], label=label)
            for r, x, y in zip(pts, xs, ys, strict=True):
                ax.annotate(str(r["window"]), (x, y), textcoords="offset points", xytext=(4, 4))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("acknowledged requests/s (log)")
    ax.set_ylabel("p99 latency, ms (log)")
    ax.set_title(title + "\n(point labels: requests in flight; lower right is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot: {os.path.relpath(path)}"
