"""`zmqfail watch` (being written; see issue 5)."""

from __future__ import annotations

import click


@click.command("watch")
def watch_cmd() -> None:
    """Live view of the cluster."""
    raise click.ClickException("zmqfail watch is not built yet")
