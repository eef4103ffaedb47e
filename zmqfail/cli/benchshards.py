"""`zmqfail client bench` on a config with [shards] and no --shard: every
shard at once, one `client bench --shard NAME` process each, then each
shard's report and the sum.

Each shard's bench is the ordinary one (its own client processes, its share
of the application's mix, its failovers), so a shard failing over is seen in
its own report; the processes start together and the load is split evenly
(--rate and --requests are totals, shared out; --clients and --window are
per shard). Latency percentiles do not add up across shards: the sum line
gives the worst shard's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from zmqfail.config import ClusterConfig
from zmqfail.errors import ConfigError, ZmqfailError
from zmqfail.loadgen.runner import BenchOptions, split


def argv_of(cfg_path: str, shard: str, opts: BenchOptions, share: int, n: int) -> list[str]:
    """The `client bench` command line of one shard's part (`share` of `n`)."""
    argv = [sys.executable, "-m", "zmqfail", "client", "bench", "--config", cfg_path]
    argv += ["--shard", shard, "--quiet", "--clients", str(opts.clients)]
    argv += ["--window", str(opts.window), "--seed", str(opts.seed + share)]
    argv += ["--drain", f"{opts.drain:g}", "--connect-timeout", f"{opts.connect_timeout:g}"]
    argv += ["--lost-after", f"{opts.lost_after:g}"]
    if opts.rate is not None:
        argv += ["--rate", repr(opts.rate / n)]
    if opts.requests is not None:
        argv += ["--requests", str(split(opts.requests, n)[share])]
    else:
        argv += ["--duration", f"{opts.duration:g}"]
    return argv


def bench_every_shard(
    cfg: ClusterConfig, cfg_path: str | None, opts: BenchOptions, json_out: str | None
) -> None:
    if cfg_path is None:
        raise ConfigError("benching every shard needs --config: each part reads the same file")
    if opts.requests is not None and opts.requests < len(cfg.shards):
        raise ConfigError(f"--requests {opts.requests}: fewer than one for each shard")
    names = [sh.name for sh in cfg.shards]
    with tempfile.TemporaryDirectory(prefix="zmqfail-bench-shards-") as tmp:
        parts: dict[str, subprocess.Popen[str]] = {}
        try:
            for i, name in enumerate(names):
                argv = argv_of(cfg_path, name, opts, i, len(names))
                parts[name] = subprocess.Popen(
                    [*argv, "--json-out", str(Path(tmp) / f"{name}.json")],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            said = {name: p.communicate() for name, p in parts.items()}
        finally:
            for p in parts.values():
                if p.poll() is None:
                    p.kill()
                    p.wait()
        summaries: dict[str, dict[str, Any]] = {}
        failed: list[str] = []
        for name in names:
            out, err = said[name]
            click.echo(f"shard {name}:")
            for line in out.splitlines():
                click.echo(f"  {line}")
            if parts[name].returncode != 0:
                failed.append(f"{name}: {err.strip().splitlines()[-1] if err.strip() else '?'}")
            path = Path(tmp) / f"{name}.json"
            if path.exists():
                summaries[name] = json.loads(path.read_text())
    if json_out:
        Path(json_out).write_text(json.dumps(summaries, indent=2, sort_keys=True) + "\n")
    if summaries:
        click.echo(total_line(summaries))
    if failed:
        raise ZmqfailError(f"the bench of {len(failed)} shard(s) failed: {'; '.join(failed)}")


def total_line(summaries: dict[str, dict[str, Any]]) -> str:
    """The shards' sum: acknowledged req/s added, the worst shard's p99."""
    rate = sum(s["throughput"] for s in summaries.values())
    acked = sum(s["acknowledged"] for s in summaries.values())
    asked = sum(s["requests"] for s in summaries.values())
    worst = max(summaries, key=lambda n: summaries[n]["latency_ms"]["p99"])
    p99 = summaries[worst]["latency_ms"]["p99"]
    return (
        f"all {len(summaries)} shards: acknowledged {acked:,} of {asked:,} requests, "
        f"{rate:,.1f} req/s in all; worst p99 {p99:.3f} ms ({worst})"
    )
