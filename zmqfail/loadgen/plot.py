"""`client bench --plot FILE.png`: a picture of a run, drawn from its timeline.

Three panels: acknowledged throughput over time, latency over time (p50,
p99 and max per bin, log scale) with every failover marked as the outage
clients saw (shaded, labelled), and the latency distribution (latency at each
percentile, the tail spread out in "nines"). matplotlib is the optional extra
`plot` (`pip install 'zmqfail[plot]'`); it is drawn without pyplot, so no
display and no global state are involved.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from zmqfail.errors import ZmqfailError
from zmqfail.loadgen.timeline import Timeline, distribution

if TYPE_CHECKING:
    from matplotlib.axes import Axes

MISSING = "--plot needs matplotlib: pip install 'zmqfail[plot]'"


def require_matplotlib() -> None:
    """Checked before a bench starts, so a missing library does not cost a run."""
    try:
        found = importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):  # a broken or stubbed-out installation
        found = False
    if not found:
        raise ZmqfailError(MISSING)


def _mark_switches(ax: Axes, tl: Timeline, label: bool) -> None:
    for s in tl.switches:
        begin = max(0.0, s.at - s.outage_ms / 1000.0)
        ax.axvspan(begin, max(s.at, begin + tl.width / 4), color="tab:red", alpha=0.25, lw=0)
        ax.axvline(s.at, color="tab:red", lw=0.8)
        if label:
            ax.annotate(
                f"{s.from_server}→{s.to_server} (epoch {s.epoch})\n{s.outage_ms:.0f} ms",
                xy=(s.at, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(4, -4),
                textcoords="offset points",
                va="top",
                fontsize=8,
                color="tab:red",
            )


def draw(tl: Timeline, path: Path, title: str) -> None:
    """Write the picture of `tl` to `path` (PNG)."""
    require_matplotlib()
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ZmqfailError(f"{MISSING} ({exc})") from None
    fig = Figure(figsize=(10, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    rate_ax, lat_ax, dist_ax = fig.subplots(3, 1, height_ratios=(1, 1, 1))
    t = [b.start + tl.width / 2 for b in tl.bins]
    rate_ax.plot(t, [b.rate for b in tl.bins], color="tab:blue", lw=1)
    rate_ax.set_ylabel("acknowledged req/s")
    rate_ax.set_ylim(bottom=0)
    _mark_switches(rate_ax, tl, label=True)
    errors = [(b.start, b.errors) for b in tl.bins if b.errors]
    if errors:
        ax2 = rate_ax.twinx()
        ax2.bar([x for x, _ in errors], [n for _, n in errors], width=tl.width, color="tab:orange")
        ax2.set_ylabel("errors / unknown", color="tab:orange")
    for field, colour, name in (("max_ms", "tab:gray", "max"), ("p99_ms", "tab:purple", "p99")):
        ys = [getattr(b, field) for b in tl.bins]
        lat_ax.plot(
            t, [y if y is not None else float("nan") for y in ys], color=colour, lw=1, label=name
        )
    lat_ax.plot(
        t,
        [b.p50_ms if b.p50_ms is not None else float("nan") for b in tl.bins],
        color="tab:green",
        lw=1,
        label="p50",
    )
    lat_ax.set_yscale("log")
    lat_ax.set_ylabel("latency ms")
    lat_ax.set_xlabel(f"seconds since the start (bins of {tl.width * 1000:g} ms)")
    lat_ax.legend(loc="upper right", fontsize=8)
    _mark_switches(lat_ax, tl, label=False)
    for ax in (rate_ax, lat_ax):
        ax.set_xlim(0, max(tl.duration, tl.width))
        ax.grid(True, alpha=0.3)
    dist = distribution(tl.latency_us)
    if dist:
        nines = [1.0 / (1.0 - q / 100.0) for q, _ in dist]
        dist_ax.plot(nines, [ms for _, ms in dist], color="tab:blue", lw=1.2)
        ticks = [
            q
            for q in (0.0, 50.0, 90.0, 99.0, 99.9, 99.99, 99.999)
            if 1 / (1 - q / 100) <= nines[-1]
        ]
        dist_ax.set_xscale("log")
        dist_ax.set_xticks([1.0 / (1.0 - q / 100.0) for q in ticks], [f"p{q:g}" for q in ticks])
        dist_ax.set_yscale("log")
        dist_ax.annotate(
            f"max {tl.latency_us.max / 1000:.1f} ms",
            xy=(0.0, 1.0),
            xycoords="axes fraction",
            xytext=(4, -4),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=8,
        )
    dist_ax.set_ylabel("latency ms")
    dist_ax.set_xlabel(f"percentile ({tl.latency_us.total:,} acknowledged requests)")
    dist_ax.minorticks_off()
    dist_ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    try:
        fig.savefig(path, format="png")
    except OSError as exc:
        raise ZmqfailError(f"cannot write {path}: {exc.strerror}") from None
