"""`zmqfail kill` (being written; see issue 5)."""

from __future__ import annotations

import click


@click.command("kill")
def kill_cmd() -> None:
    """Inject failures."""
    raise click.ClickException("zmqfail kill is not built yet")
