"""`zmqfail` entry point: node, config, client, status, log, demo."""

from __future__ import annotations

import gc
import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click

from zmqfail import __version__, config
from zmqfail.cli.benchcmd import bench_cmd
from zmqfail.cli.clientcmd import client_group
from zmqfail.cli.common import config_option, load_config, one_line_errors
from zmqfail.cli.demo import demo_cmd
from zmqfail.cli.killcmd import kill_cmd
from zmqfail.cli.logcmd import log_group
from zmqfail.cli.watch import watch_cmd
from zmqfail.client.control import STATUS_KEYS, cluster_status
from zmqfail.errors import ConfigError, ZmqfailError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zmqfail")
def cli() -> None:
    """zmqfail: a primary/backup failover cluster for on-line order processing."""


@cli.command("node")
@config_option
@click.option("--name", default=None, help="Which node of the config this process is.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning"]))
@one_line_errors
def node_cmd(config_path: str | None, name: str | None, log_level: str) -> None:
    """Run one server in the foreground (SIGTERM or SIGINT: clean stop)."""
    from zmqfail.node.server import Node

    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    cfg = load_config(config_path)
    if name is None:
        if len(cfg.nodes) != 1 and config_path is not None:
            raise ConfigError("--name is required when the config has several nodes")
        name = cfg.nodes[0].name
    # The disk writer thread must get the GIL back promptly after fsync, or
    # every group commit waits out the default 5 ms switch interval.
    sys.setswitchinterval(0.0002)
    # The tables hold many long-lived acyclic objects; frequent cyclic GC
    # passes over them cost throughput and add latency spikes.
    gc.set_threshold(100_000, 50, 1000)
    node = Node(cfg, name)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        node.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node.open()
    sys.exit(node.run())


@cli.group("config")
def config_group() -> None:
    """Create cluster configuration files."""


@config_group.command("init")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False))
@click.option("--nodes", default=2, show_default=True, type=int)
@click.option("--base-port", default=5700, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--failsafe-host", default=None, help="Host of the failsafe link (default: --host).")
@click.option("--force", is_flag=True, help="Overwrite an existing zmqfail.toml.")
@click.option("--app", default="orders", show_default=True, help="orders or ledger.")
@one_line_errors
def config_init(
    directory: str,
    nodes: int,
    base_port: int,
    host: str,
    failsafe_host: str | None,
    force: bool,
    app: str,
) -> None:
    """Write DIR/zmqfail.toml for a local cluster (nodes a, b, ... from --base-port)."""
    text = config.render(nodes, base_port, host, failsafe_host, app=app)
    d = Path(directory)
    path = d / "zmqfail.toml"
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; pass --force to overwrite it")
    d.mkdir(parents=True, exist_ok=True)
    config.loads(text, d)  # the file we write must load
    path.write_text(text)
    click.echo(str(path))


@cli.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="A JSON list, one object per node.")
@click.option("--timeout", default=1.0, show_default=True, help="Seconds to wait for each node.")
@one_line_errors
def status_cmd(config_path: str | None, as_json: bool, timeout: float) -> None:
    """Show every node of the cluster; unreachable nodes are listed as such.

    The table has the columns of `zmqfail watch` (without rates); --json has
    every key each node reports.
    """
    from zmqfail.cli import view

    cfg = load_config(config_path)
    rows: list[dict[str, Any]] = cluster_status(cfg, digest=True, timeout=timeout)
    for row in rows:  # an unreachable node's row has every key too, as None
        for key in (*STATUS_KEYS, "lag", "replication_link"):
            row.setdefault(key, None)
    if as_json:
        click.echo(json.dumps(rows, sort_keys=True))
        return
    hb_ms = cfg.failover.heartbeat_interval_ms
    shown = [view.node_row(r, hb_ms) for r in rows]
    table = view.table(shown, f"zmqfail cluster {cfg.name}", rates=False)
    view.make_console().print(table)


@cli.command("switchover")
@config_option
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for it.")
@one_line_errors
def switchover_cmd(config_path: str | None, timeout: float) -> None:
    """Hand the primary role to the in-sync backup, losing no request."""
    import time

    from zmqfail.client.control import call

    cfg = load_config(config_path)
    rows = cluster_status(cfg, digest=False, timeout=1.0)
    primaries = [r for r in rows if r.get("role") == "primary" and r["state"] == "normal"]
    if len(primaries) != 1:
        states = ", ".join(f"{r['name']}={r.get('role')}/{r['state']}" for r in rows)
        raise ZmqfailError(f"need exactly one primary in the normal state ({states})")
    old = primaries[0]["name"]
    res = call(cfg.node(old).control, "switchover", {})
    target = res["handoff_to"]
    click.echo(f"{old} hands over to {target}...")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = cluster_status(cfg, digest=False, timeout=0.5)
        by = {r["name"]: r for r in st}
        if by[target].get("role") == "primary" and by[target]["state"] in ACTIVE_NAMES:
            click.echo(
                f"{target} is primary at epoch {by[target]['epoch']}; {old} is "
                f"{by[old].get('role')}/{by[old]['state']}"
            )
            return
        time.sleep(0.05)
    raise ZmqfailError(f"{target} did not take over within {timeout}s")


ACTIVE_NAMES = ("normal", "primary_only", "backup_only")

cli.add_command(client_group)
client_group.add_command(bench_cmd)
cli.add_command(watch_cmd)
cli.add_command(kill_cmd)
cli.add_command(log_group)
cli.add_command(demo_cmd)


def main() -> None:
    """Run the CLI; every error is one line on stderr (usage errors exit 2)."""
    try:
        rc = cli.main(prog_name="zmqfail", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"zmqfail: error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"zmqfail: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("zmqfail: aborted", err=True)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)
