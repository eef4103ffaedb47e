"""`zmqfail client bench` (being written; see issue 5)."""

from __future__ import annotations

import click


@click.command("bench")
def bench_cmd() -> None:
    """Drive load against the cluster and report throughput and latency."""
    raise click.ClickException("zmqfail client bench is not built yet")
