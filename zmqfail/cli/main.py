"""`zmqfail` entry point: node, config, client, status, log, demo."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import click

from zmqfail import __version__, config, logs
from zmqfail.cli.common import (
    config_option,
    group,
    groups,
    load_config,
    one_line_errors,
    shard_option,
    timeout_option,
)
from zmqfail.cli.lazy import LazyGroup
from zmqfail.cli.params import WholeNumber
from zmqfail.errors import ConfigError, ZmqfailError

# What each command needs is imported in its body or, for the commands of
# other modules, on first use (cli/lazy.py): a node or a `status` does not
# pay for the bench, the demo or the TUI.

if TYPE_CHECKING:
    from zmqfail.node.server import Node


def _log_context(node: Node) -> dict[str, Any]:
    """The node's epoch, role and state for each log line, from its failover
    state (which changes first: a line about a transition must agree with it)."""
    core = getattr(node, "core", None)  # None until the node has opened its data
    if core is None:
        return {}
    fs = core.agent.fs
    return {"epoch": fs.epoch, "role": fs.role.value, "state": fs.state.value}


class _PipeClosed(click.ClickException):
    """Stdout's reader went away (`| head`); raised before click would swallow it."""


class _Cli(LazyGroup):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise _PipeClosed("output closed by the reader (broken pipe)") from None


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zmqfail")
def cli() -> None:
    """zmqfail: a primary/backup failover cluster for on-line order processing."""


@cli.command("node")
@config_option
@click.option("--name", default=None, help="Which node of the config this process is.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning"]))
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(logs.FORMATS),
    help="json: one object a line with node, epoch, role and state.",
)
@click.option(
    "--log-repeats/--no-log-repeats",
    "rate_limit",
    default=True,
    help="Default: a line repeating within 10 s is logged once, then counted.",
)
@one_line_errors
def node_cmd(
    config_path: str | None, name: str | None, log_level: str, log_format: str, rate_limit: bool
) -> None:
    """Run one server in the foreground (SIGTERM or SIGINT: clean stop)."""
    from zmqfail.node.server import Node, freeze_loaded, tune_collector

    whole = load_config(config_path, shards=True)
    if name is None:
        if len(whole.nodes) != 1 and config_path is not None:
            raise ConfigError("--name is required when the config has several nodes")
        name = whole.nodes[0].name
    # An unknown name is a one-line error before anything is logged. A server
    # of a shard runs in its shard's failover group alone.
    cfg = whole.for_node(name)
    handler, limiter = logs.setup(
        getattr(logging, log_level.upper()), log_format, name, rate_limit, sys.stderr
    )
    # The disk writer thread must get the GIL back promptly after fsync, or
    # every group commit waits out the default 5 ms switch interval.
    sys.setswitchinterval(0.0002)
    tune_collector()
    node = Node(cfg, name)
    for f in handler.filters:
        if isinstance(f, logs.ContextFilter):
            f.context = functools.partial(_log_context, node)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        node.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        node.open()
        freeze_loaded()
        rc = node.run()
        # Every socket is closed; wait (at most their linger) for the last
        # frames, the goodbyes, to leave before the process does.
        node.ctx.destroy(linger=0)
    except ZmqfailError:
        raise  # a known condition (damaged log, port in use): one line, below
    except Exception:
        # A bug: its traceback belongs in the node's log, not only one line.
        logging.getLogger("zmqfail").exception("node %s failed", name)
        raise
    finally:
        if limiter is not None:
            limiter.flush(handler)
    sys.exit(rc)


@cli.group("config")
def config_group() -> None:
    """Create cluster configuration files."""


@config_group.command("init")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False))
@click.option("--nodes", default=2, show_default=True, type=int)
@click.option("--base-port", default=5700, show_default=True, type=WholeNumber(1024, 65535))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--failsafe-host", default=None, help="Host of the failsafe link (default: --host).")
@click.option("--force", is_flag=True, help="Overwrite an existing zmqfail.toml.")
@click.option("--app", default="orders", show_default=True, help="orders or ledger.")
@click.option(
    "--witness", is_flag=True, help="Add a [witness] table (its port follows the nodes')."
)
@click.option(
    "--secure", is_flag=True, help="CurveZMQ on every channel, with new keys in DIR/keys."
)
@click.option(
    "--shards",
    default=None,
    type=WholeNumber(1, 26),
    help="Shards of the app's keys, each a pair crossed over --machines (nodes s1-m1...).",
)
@click.option("--machines", default=2, show_default=True, type=WholeNumber(2, 26))
@click.option(
    "--hosts",
    default=None,
    help="With --shards: each machine's host, comma-separated (default 127.0.0.1, .2...).",
)
@one_line_errors
def config_init(
    directory: str,
    nodes: int,
    base_port: int,
    host: str,
    failsafe_host: str | None,
    force: bool,
    app: str,
    witness: bool,
    secure: bool,
    shards: int | None,
    machines: int,
    hosts: str | None,
) -> None:
    """Write DIR/zmqfail.toml for a local cluster (nodes a, b, ... from --base-port),
    or with --shards, shards crossed over machines (docs/operations.md, Shards)."""
    if shards is None:
        if hosts is not None:
            raise ConfigError("--hosts goes with --shards (one pair: --host, --failsafe-host)")
        text = config.render(
            nodes, base_port, host, failsafe_host, app=app, witness=witness, secure=secure
        )
    else:
        if witness:
            raise ConfigError("--witness with --shards is not supported yet")
        listed = [h.strip() for h in hosts.split(",")] if hosts is not None else None
        text = config.render_shards(shards, machines, base_port, listed, app=app, secure=secure)
    d = Path(directory)
    path = d / "zmqfail.toml"
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; pass --force to overwrite it")
    d.mkdir(parents=True, exist_ok=True)
    cfg = config.loads(text, d)  # the file we write must load
    if secure:
        # Before the config, so a config naming keys never exists without them.
        names = [n.name for n in cfg.nodes] + (["witness"] if witness else [])
        from zmqfail.security import generate_cluster

        generate_cluster(d / "keys", names)
    path.write_text(text)
    click.echo(str(path))


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@one_line_errors
def config_check(file: str) -> None:
    """Validate FILE: one line saying what it holds (exit 0), or what is wrong (exit 1)."""
    cfg = config.load(Path(file))
    if cfg.sharded:
        groups = "; ".join(
            f"{sh.name}: {', '.join(sh.nodes)}, {len(sh.keys or ())} key(s)" for sh in cfg.shards
        )
        click.echo(f"ok: {file}: cluster {cfg.name!r}, {len(cfg.shards)} shard(s) ({groups})")
        return
    names = ", ".join(n.name for n in cfg.nodes)
    dirs = sorted({str(n.data_dir.parent) for n in cfg.nodes})
    witness = f", witness on {cfg.witness.where}" if cfg.witness else ""
    sec = cfg.security
    curve = sorted(c.value for c in sec.curve) if sec else []
    secured = f", CurveZMQ on {', '.join(curve)}" if curve else ""
    click.echo(
        f"ok: {file}: cluster {cfg.name!r}, {len(cfg.nodes)} node(s) ({names}), "
        f"first primary {cfg.primary}, data under {', '.join(dirs)}{witness}{secured}"
    )


nodes_timeout = timeout_option(1.0, "Seconds to wait for the nodes (asked all at once).")


@cli.command("status")
@config_option
@shard_option
@click.option("--json", "as_json", is_flag=True, help="A JSON list, one object per node.")
@click.option(
    "--digest", is_flag=True, help="Also ask for each node's table digest (slow on large tables)."
)
@nodes_timeout
@one_line_errors
def status_cmd(
    config_path: str | None, shard: str | None, as_json: bool, digest: bool, timeout: float
) -> None:
    """Show every node: who is primary, whether the pair is protected, lag.

    With [shards], one block per shard (--shard NAME: that one alone), and
    the exit status is the worst shard's.

    Exit status (also with --json): 0 ok (a primary in the normal state, every
    node an in-sync backup), 3 degraded (serving, but alone, syncing, a node
    unreachable, or handing over), 4 down (no node serves), 1 error.
    --json has every key each node reports; unreachable nodes have them as null
    (with [shards], each object also names its "shard").
    """
    from zmqfail.cli import layout, view
    from zmqfail.cli.witnesscmd import witness_status, witness_words
    from zmqfail.client.control import cluster_status

    cfg = load_config(config_path, shards=True)
    parts = groups(cfg, shard)
    asked_of = parts[0] if len(parts) == 1 else cfg  # every node at once
    with ThreadPoolExecutor(1, thread_name_prefix="witness") as pool:  # asked alongside
        asked = pool.submit(witness_status, cfg.witness, timeout) if cfg.witness else None
        rows = cluster_status(asked_of, digest=digest, timeout=timeout)
        witness = asked.result() if asked is not None else None
    by_name = {r.name: r for r in rows}
    blocks = [[by_name[n.name] for n in g.nodes] for g in parts]
    wall = time.time()
    frames = [view.snapshot(b, cfg.failover.heartbeat_interval_ms, wall) for b in blocks]
    if as_json:  # an unreachable node's row has every key too, as null
        if cfg.sharded:
            out = [{**r.to_json(), "shard": cfg.shard_of(r.name).name} for b in blocks for r in b]
            click.echo(json.dumps(out, sort_keys=True))
        else:
            click.echo(json.dumps([r.to_json() for r in rows], sort_keys=True))
    else:
        console = layout.make_console()
        for i, (g, frame) in enumerate(zip(parts, frames, strict=True)):
            if i:
                console.print("")
            title = f"zmqfail cluster {g.name}"
            console.print(layout.render(frame, title, console.width, rates=False))
        if witness is not None:
            click.echo(witness_words(witness))
    sys.exit(max(int(f.health.verdict) for f in frames))


@cli.command("health")
@config_option
@shard_option
@click.option(
    "--node", "node_name", default=None, help="Ask one node only: does it serve clients now?"
)
@nodes_timeout
@one_line_errors
def health_cmd(
    config_path: str | None, shard: str | None, node_name: str | None, timeout: float
) -> None:
    """One line and an exit status, for monitors and load balancers.

    The cluster: 0 ok (protected), 3 degraded (serving, not protected), 4 down.
    With --node NAME: 0 when NAME serves clients now (alone or not), 4 when it
    does not (a backup, starting, or unreachable). 1 is an error of the command.
    With [shards]: a line per shard (or --shard NAME's) and the worst status.
    """
    from zmqfail.cli.health import Verdict, classify, role_words, serves
    from zmqfail.client.control import cluster_status, node_status

    whole = load_config(config_path, shards=True)
    if node_name is not None:
        row = node_status(
            group(whole, shard, node_name).node(node_name), digest=False, timeout=timeout
        )
        ok = serves(row)
        click.echo(f"{node_name}: {'serves' if ok else 'does not serve'} ({role_words(row)})")
        sys.exit(int(Verdict.OK if ok else Verdict.DOWN))
    worst = Verdict.OK
    for name in [shard] if shard is not None else [sh.name for sh in whole.shards]:
        health = classify(cluster_status(whole.shard(name), digest=False, timeout=timeout))
        click.echo(f"shard {name}: {health.line()}" if whole.sharded else health.line())
        worst = max(worst, health.verdict)
    sys.exit(int(worst))


@cli.command("switchover")
@config_option
@shard_option
@click.option("--to", "to", default=None, help="The in-sync backup to hand over to.")
@timeout_option(10.0, "Seconds to wait for it.")
@one_line_errors
def switchover_cmd(
    config_path: str | None, shard: str | None, to: str | None, timeout: float
) -> None:
    """Hand the primary role to an in-sync backup (--to, or the first by name),
    losing no request. With [shards]: one shard's (--shard NAME, or --to's)."""
    from zmqfail.cli.failovercmd import ask
    from zmqfail.client.control import cluster_status, node_status
    from zmqfail.cluster import Cluster, where
    from zmqfail.failover.state import Role, State

    # An unknown name or shard: one line, before asking anyone.
    cfg = group(load_config(config_path, shards=True), shard, to)
    rows = cluster_status(cfg, digest=False, timeout=1.0)
    primaries = [r for r in rows if r.is_(Role.PRIMARY, State.NORMAL)]
    if len(primaries) != 1:
        states = ", ".join(f"{r.name}={where(r)}" for r in rows)
        raise ZmqfailError(f"need exactly one primary in the normal state ({states})")
    old = primaries[0].name
    if to == old:
        raise ZmqfailError(f"{to} is the primary already")
    res = ask(cfg.node(old), "switchover", {"to": to} if to else {})
    target = res.get("handoff_to")
    if not isinstance(target, str) or target not in {n.name for n in cfg.nodes}:
        raise ZmqfailError(f"{old} named no known node to hand over to: {target!r:.40}")
    click.echo(f"{old} hands over to {target}...")
    took = Cluster(cfg).wait_until(target, lambda st: st.serving, "primary", timeout)
    after = node_status(cfg.node(old), digest=False, timeout=1.0)
    click.echo(f"{target} is primary at epoch {took.epoch}; {old} is {where(after)}")


for _name, _target in {
    "promote": "zmqfail.cli.failovercmd:promote_cmd",
    "pause": "zmqfail.cli.failovercmd:pause_cmd",
    "resume": "zmqfail.cli.failovercmd:resume_cmd",
    "history": "zmqfail.cli.failovercmd:history_cmd",
    "client": "zmqfail.cli.clientcmd:client_group",
    "watch": "zmqfail.cli.watch:watch_cmd",
    "kill": "zmqfail.cli.killcmd:kill_cmd",
    "log": "zmqfail.cli.logcmd:log_group",
    "demo": "zmqfail.cli.demo:demo_cmd",
    "witness": "zmqfail.cli.witnesscmd:witness_cmd",
    "keys": "zmqfail.cli.keyscmd:keys_group",
}.items():
    cli.add_lazy(_name, _target)


def main() -> None:
    """Run the CLI; every error is one line on stderr and a non-zero exit
    (usage errors 2; see `status` and `health` for their own codes)."""
    try:
        try:
            rc = cli.main(prog_name="zmqfail", standalone_mode=False)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except (_PipeClosed, BrokenPipeError):
        # Nothing more can be written there; keep the exit-time flush from failing too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        _fail("error: output closed by the reader (broken pipe)", 1)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _fail(f"error: {exc.format_message()}{hint}", 2)
    except click.ClickException as exc:
        _fail(f"error: {exc.format_message()}", exc.exit_code)
    except click.Abort:
        _fail("aborted", 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        if os.environ.get("ZMQFAIL_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (ZMQFAIL_DEBUG=1 shows where)", 1)
    sys.exit(rc if isinstance(rc, int) else 0)


def _fail(message: str, code: int) -> NoReturn:
    with contextlib.suppress(OSError):  # stderr closed too: the exit status is all that is left
        click.echo(f"zmqfail: {message}", err=True)
    sys.exit(code)
