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
from zmqfail.errors import ConfigError, ZmqfailError

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


shard_option = click.option(
    "--shard",
    "shard",
    default=None,
    help="One shard of a config with [shards] (its failover group alone).",
)


def groups(cfg: config.ClusterConfig, shard: str | None) -> list[config.ClusterConfig]:
    """The failover groups a whole-cluster command shows: the named shard's,
    or every shard's (an unsharded config is one group, itself). An unknown
    name is a ConfigError naming the shards there are."""
    if shard is not None:
        return [cfg.shard(shard)]
    return [cfg.shard(sh.name) for sh in cfg.shards]


def group(
    cfg: config.ClusterConfig, shard: str | None, node: str | None = None
) -> config.ClusterConfig:
    """The one failover group a command acts on: the named shard's, else
    `node`'s shard (a node name decides it), else the config itself when it
    has no shards. A sharded config with neither is a one-line error: acting
    on every shard's servers as one pair would be wrong."""
    if shard is not None:
        picked = cfg.shard(shard)
        if node is not None and node not in {n.name for n in picked.nodes}:
            cfg.node(node)  # an unknown node: the usual one-line error first
            raise ConfigError(
                f"node {node} is a server of shard {cfg.shard_of(node).name}, not of {shard}"
            )
        return picked
    if node is not None:
        return cfg.for_node(node)
    if cfg.sharded:
        names = ", ".join(sh.name for sh in cfg.shards)
        raise ConfigError(f"the config has shards ({names}): name one with --shard NAME")
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
