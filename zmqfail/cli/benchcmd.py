"""`zmqfail client bench`: drive load from several client processes and report
acknowledged throughput, latency percentiles, errors and every failover the
clients lived through, with the outage each saw.

The live display goes to stderr, the report to stdout, so a redirected report
stays clean; the display is off with --quiet or when stderr is no terminal.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from zmqfail.cli.common import config_option, group, load_config, one_line_errors, shard_option
from zmqfail.cli.params import Number, WholeNumber
from zmqfail.config import ClusterConfig
from zmqfail.errors import ConfigError, ZmqfailError
from zmqfail.loadgen.runner import BenchOptions, run_bench

MAX_CLIENTS = 256  # processes: more would only fight the servers for the CPU
PROGRESS_COLUMNS = ("server", "state", "sent", "ok", "rejected", "errors", "inflight", "resends")


class LiveDisplay:
    """A progress bar for the whole run above one row per client."""

    def __init__(self, console: Console, opts: BenchOptions) -> None:
        self.opts = opts
        self.by_time = opts.duration is not None
        self.progress = Progress(
            TextColumn("[bold]bench"),
            BarColumn(),
            TextColumn("{task.fields[what]}"),
            TimeElapsedColumn(),
            console=console,
        )
        total = opts.duration if opts.duration is not None else float(opts.requests or 0)
        self.task: TaskID = self.progress.add_task("bench", total=total, what="")
        self.live = Live(console=console, refresh_per_second=8, transient=True)

    def __enter__(self) -> LiveDisplay:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(None, None, None)

    def update(self, elapsed: float, progress: dict[int, dict[str, Any]]) -> None:
        rows = [progress[i] for i in sorted(progress)]
        acked = sum(r.get("ok", 0) + r.get("rejected", 0) for r in rows)
        done = acked + sum(r.get("errors", 0) for r in rows)
        rate = acked / elapsed if elapsed > 0 else 0.0
        failovers = max((r.get("failovers", 0) for r in rows), default=0)
        what = f"{acked:,} acked  {rate:,.0f} req/s  failovers {failovers}"
        completed = min(elapsed, self.opts.duration or 0.0) if self.by_time else done
        self.progress.update(self.task, completed=completed, what=what)
        table = Table(box=None, padding=(0, 1))
        table.add_column("client")
        for col in PROGRESS_COLUMNS:
            table.add_column(col, justify="left" if col in ("server", "state") else "right")
        for i, r in enumerate(rows):
            table.add_row(str(i), *(_cell(r.get(c, "")) for c in PROGRESS_COLUMNS))
        self.live.update(Group(self.progress, table))


def _cell(v: object) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


def _mode(s: dict[str, Any], opts: BenchOptions) -> str:
    loop = f"open loop at {opts.rate:,.0f} req/s" if opts.rate else "closed loop"
    amount = f"{opts.duration:g} s" if opts.duration is not None else f"{opts.requests:,} requests"
    return f"{s['clients']} client(s) x window {s['window']}, {loop}, {amount}"


def print_report(console: Console, s: dict[str, Any], opts: BenchOptions) -> None:
    lat = s["latency_ms"]
    out = functools.partial(console.print, soft_wrap=True)  # lines stay whole in a pipe
    out(f"zmqfail bench: {_mode(s, opts)}, seed {s['seed']}")
    out(
        f"acknowledged {s['acknowledged']:,} of {s['requests']:,} requests in "
        f"{s['duration']:.2f} s: {s['throughput']:,.1f} req/s "
        f"({s['ok']:,} ok, {s['rejected']:,} rejected)"
    )
    out(
        f"latency ms: p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  p99 {lat['p99']:.3f}  "
        f"p99.9 {lat['p999']:.3f}  max {lat['max']:.3f}"
    )
    kinds = ", ".join(f"{k} {v:,}" for k, v in s["errors_by_kind"].items())
    out(f"errors: {s['errors']:,}" + (f" ({kinds})" if kinds else ""))
    if s["rejected_by_code"]:
        codes = ", ".join(f"{k} {v:,}" for k, v in s["rejected_by_code"].items())
        out(f"rejected by code: {codes}")
    out(f"resends: {s['resends']:,}")
    if opts.rate:
        out(f"behind schedule (window full when due): {s['behind']:,}")
    events = s["failover_events"]
    out(f"failovers: {len(events)}")
    for e in events:
        out(
            f"  {e['from_server']} -> {e['to_server']} at epoch {e['epoch']}: outage "
            f"{e['outage_ms']:.1f} ms (worst of {e['clients']} client(s), {e['resent']} resent)"
        )
    out(f"orders crossing on arrival: {s['crossed_fraction']:.0%}")


@click.command("bench")
@config_option
@shard_option
@click.option(
    "--clients",
    default=1,
    show_default=True,
    type=WholeNumber(1, MAX_CLIENTS),
    help="Client processes.",
)
@click.option(
    "--window",
    default=16,
    show_default=True,
    type=WholeNumber(1, 1_000_000),
    help="Requests in flight per client.",
)
@click.option(
    "--rate",
    type=Number(0.001, 1e9),
    default=None,
    help="Target req/s across all clients (open loop).",
)
@click.option("--duration", type=Number(0.001, 7 * 86_400), default=None, help="Seconds of load.")
@click.option(
    "--requests",
    type=WholeNumber(1, 10**12),
    default=None,
    help="Requests in all (instead of --duration).",
)
@click.option("--seed", default=1, show_default=True, help="Seed of the order mix.")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="Write JSON here.")
@click.option("--history", type=click.Path(dir_okay=False), default=None, help="JSON lines log.")
@click.option(
    "--drain",
    default=5.0,
    show_default=True,
    type=Number(0, 3600),
    help="Seconds to wait for late replies.",
)
@click.option(
    "--connect-timeout",
    default=5.0,
    show_default=True,
    type=Number(0.01, 3600),
    help="Seconds to find a server.",
)
@click.option(
    "--lost-after",
    default=10.0,
    show_default=True,
    type=Number(0.01, 86_400),
    help="Seconds without any server: give up.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Draw throughput and latency over time, failovers marked, to this PNG "
    "(needs the 'plot' extra: matplotlib).",
)
@click.option("--quiet", is_flag=True, help="No live display.")
@click.option(
    "--app", default=None, help="The application's request mix (default: the config's app)."
)
@one_line_errors
def bench_cmd(
    config_path: str | None,
    shard: str | None,
    clients: int,
    window: int,
    rate: float | None,
    duration: float | None,
    requests: int | None,
    seed: int,
    json_out: str | None,
    history: str | None,
    drain: float,
    connect_timeout: float,
    lost_after: float,
    plot: str | None,
    quiet: bool,
    app: str | None,
) -> None:
    """Drive load against the cluster and report throughput and latency.

    Without --duration or --requests it runs for 10 seconds. With [shards],
    --shard NAME benches that shard with the requests for its keys; without
    it every shard is benched at once (--clients and --window per shard,
    --rate and --requests shared out), each reported, then the sum. Exit
    status 0 unless the bench could not run or a client lost every server."""
    whole = load_config(config_path, shards=True)
    every = whole.sharded and shard is None  # every shard at once (cli/benchshards.py)
    cfg = whole if every else group(whole, shard)  # checks --shard
    if every and (plot is not None or history is not None):
        raise ConfigError("--plot and --history go with --shard NAME: one history per shard")
    if app is not None and app != cfg.app.name:
        raise ConfigError(
            f"--app {app}, but the cluster config runs {cfg.app.name!r} ([cluster] app); "
            f"`zmqfail config init --app {app}` writes a config for it"
        )
    if plot is not None:
        from zmqfail.loadgen.plot import require_matplotlib

        require_matplotlib()
    if shard is not None:
        from zmqfail.cli.shardmix import for_clients

        cfg = for_clients(whole, shard)
    opts = BenchOptions(
        clients=clients,
        window=window,
        rate=rate,
        duration=10.0 if duration is None and requests is None else duration,
        requests=requests,
        seed=seed,
        history=Path(history) if history else None,
        drain=drain,
        connect_timeout=connect_timeout,
        lost_after=lost_after,
    )
    opts.validate()
    if every:
        from zmqfail.cli.benchshards import bench_every_shard

        bench_every_shard(whole, config_path, opts, json_out)
        return
    with tempfile.TemporaryDirectory(prefix="zmqfail-bench-") as tmp:
        if plot is not None and opts.history is None:
            # The picture is drawn from the history: record one, not kept.
            opts = dataclasses.replace(opts, history=Path(tmp) / "history.jsonl")
        _run(cfg, opts, quiet, json_out, plot)


@click.command("plot")
@click.argument("history", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--title", default=None, help="Title of the picture (default: the file's name).")
@one_line_errors
def plot_cmd(history: str, out: str, title: str | None) -> None:
    """Draw a recorded history (`client bench --history FILE`) to a PNG:
    throughput and latency over time with every failover marked, and the
    latency distribution. For a drill recorded earlier, or one drawn again."""
    from zmqfail.loadgen.plot import draw, require_matplotlib
    from zmqfail.loadgen.timeline import load

    path = Path(history)
    if not path.is_file():
        raise ZmqfailError(f"no history file {path}")
    require_matplotlib()
    draw(load(path), Path(out), title or f"zmqfail: {path.name}")
    click.echo(f"plot: {out}")


def _run(
    cfg: ClusterConfig, opts: BenchOptions, quiet: bool, json_out: str | None, plot: str | None
) -> None:
    err = Console(stderr=True)
    if quiet or not sys.stderr.isatty():
        run = run_bench(cfg, opts)
    else:
        with LiveDisplay(err, opts) as display:
            run = run_bench(cfg, opts, display.update)
    s = run.summary
    if json_out:
        Path(json_out).write_text(json.dumps(s, indent=2, sort_keys=True) + "\n")
    print_report(Console(), s, opts)
    if plot is not None and opts.history is not None:
        if not opts.history.exists():  # a lost client leaves no merged history
            raise ZmqfailError("no history to plot: the bench ended early")
        from zmqfail.loadgen.plot import draw
        from zmqfail.loadgen.timeline import load

        draw(load(opts.history), Path(plot), f"zmqfail client bench: {_mode(s, opts)}")
        click.echo(f"plot: {plot}")
    if s["lost_clients"]:
        reasons = "; ".join(r.lost for r in run.results if r.lost)
        raise ZmqfailError(f"the bench ended early: {reasons}")
