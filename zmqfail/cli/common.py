"""Helpers shared by the commands: config loading and one-line errors."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from zmqfail import config
from zmqfail.cli.params import Number
from zmqfail.errors import ZmqfailError

F = TypeVar("F", bound=Callable[..., Any])


def load_config(path: str | None, shards: bool = False) -> config.ClusterConfig:
    """The config at `path` (the embedded default without one). A command
    that does not know shards yet (`shards` False) refuses a config that has
    them: it would take every shard's servers for one failover group."""
    cfg = config.load(Path(path)) if path else config.load_default()
    if cfg.sharded and not shards:
        ctx = click.get_current_context(silent=True)
        what = f"`{ctx.command_path}`" if ctx is not None else "this command"
        raise ZmqfailError(
            f"{path} has [shards]: {what} does not understand shards yet; "
            "it works on one failover group (see docs/operations.md, Shards)"
        )
    return cfg


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Cluster config (TOML). Default: the embedded two-node cluster on loopback.",
)


def timeout_option(default: float, help: str) -> Callable[[F], F]:
    """--timeout in seconds, bounded so that neither 0 nor an hour-long typo gets through."""
    return click.option(
        "--timeout", default=default, show_default=True, type=Number(0.01, 3600), help=help
    )


def one_line_errors(fn: F) -> F:
    """Turn every zmqfail error into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ZmqfailError as exc:
            click.echo(f"zmqfail: error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]
