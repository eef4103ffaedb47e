"""`zmqfail kill`: failure injection for a running cluster.

Signals go to the node's process (its pid from the node itself, or from its
pid file when it does not answer). Link cuts go through the node's control
socket: the node drops that channel's traffic both ways (or, with
--direction, only what it hears or only what it sends), so they need no root;
with --for the node heals itself, so a cut never outlives the tool.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import click

from zmqfail.chaos import (
    LINK_NAMES,
    ROLE_ALIASES,
    SIGNALS,
    Direction,
    Step,
    load_plan,
    run_plan,
)
from zmqfail.cli.common import (
    config_option,
    group,
    load_config,
    one_line_errors,
    shard_option,
)
from zmqfail.cli.health import role_words
from zmqfail.cli.params import Number
from zmqfail.client.control import call, cluster_status, node_status
from zmqfail.cluster import Cluster
from zmqfail.config import ClusterConfig
from zmqfail.core.status import NodeStatus
from zmqfail.errors import ConfigError, ZmqfailError
from zmqfail.failover.state import Role, State

LATE = 0.1  # seconds after its planned time from which a step's report says it was late


def resolve(cfg: ClusterConfig, node: str) -> str:
    """A node name, or the node now acting as primary / as a backup.

    "primary" is the one at the highest epoch: a node that has just restarted
    may claim the role at its old epoch for a moment before it hears the
    current primary and steps down, and freezing that one instead would leave
    a plan's later CONT waking the wrong node."""
    if node not in ROLE_ALIASES:
        cfg.node(node)  # raises ConfigError for an unknown name
        return node
    role = Role(node)
    rows = [r for r in cluster_status(cfg, digest=False, timeout=0.5) if r.is_(role)]
    if not rows:
        raise ZmqfailError(f"no reachable node is {node} now")
    return max(rows, key=lambda r: (r.epoch or 0, -rows.index(r))).name


def pid_of(cfg: ClusterConfig, name: str) -> int | None:
    st = node_status(cfg.node(name), digest=False, timeout=0.5)
    if st.pid:
        return st.pid
    try:
        pid = int((cfg.node(name).data_dir / "node.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def send_signal(cfg: ClusterConfig, name: str, sig: str, wait: float = 10.0) -> str:
    pid = pid_of(cfg, name)
    if pid is None:
        raise ZmqfailError(f"node {name} is not running")
    os.kill(pid, getattr(signal, f"SIG{sig}"))
    if sig in ("KILL", "TERM"):
        deadline = time.monotonic() + wait
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if alive(pid):
            raise ZmqfailError(f"node {name} (pid {pid}) did not exit within {wait}s")
    return f"SIG{sig} sent to {name} (pid {pid})"


SETTLED = frozenset({State.NORMAL, State.PRIMARY_ONLY, State.BACKUP_ONLY})


def settled(st: NodeStatus) -> bool:
    """Back in the cluster: serving, or a backup in sync. Answering is not
    enough: a plan that freezes the other node next needs this one able to
    take over."""
    return st.state in SETTLED


def start_node(cfg: ClusterConfig, name: str, wait: float = 20.0) -> str:
    """Start the node (it keeps running after the tool ends) and wait until
    it has settled."""
    if cfg.path is None:
        raise ConfigError("--restart needs --config: the new process must read the same file")
    cluster = Cluster(cfg)
    cluster.start(name)
    st = cluster.wait_until(name, settled, "serving or a backup in sync", wait)
    return f"{name} restarted (pid {cluster.procs[name].pid}): {role_words(st)}"


def restart_node(cfg: ClusterConfig, name: str, sig: str) -> str:
    said = send_signal(cfg, name, sig) + "; " if pid_of(cfg, name) is not None else ""
    return said + start_node(cfg, name)


def cut(
    cfg: ClusterConfig,
    name: str,
    link: str,
    heal: bool,
    seconds: float | None,
    direction: Direction = Direction.BOTH,
) -> str:
    args: dict[str, object] = {"link": link}
    if seconds is not None:
        args["for"] = seconds
    if direction is not Direction.BOTH:
        args["direction"] = direction.value
    res = call(cfg.node(name), "heal" if heal else "cut", args, timeout=2.0)
    one_way = res.get("one_way", {})
    cuts = ", ".join(f"{lk} ({one_way[lk]})" if lk in one_way else lk for lk in res["cut"])
    cuts = cuts or "none"
    verb = "healed" if heal else "cut" if direction is Direction.BOTH else f"cut {direction.value}"
    extra = f" (heals by itself in {seconds:g}s)" if seconds and not heal else ""
    return f"{link} link {verb} at {name}{extra}; cut now: {cuts}"


def do_step(cfg: ClusterConfig, step: Step) -> str:
    name = resolve(cfg, step.node)
    if step.signal:
        return send_signal(cfg, name, step.signal)
    if step.restart:
        return restart_node(cfg, name, "KILL")
    assert step.link is not None
    return cut(cfg, name, step.link, step.heal, step.seconds, step.direction)


@click.command("kill")
@config_option
@shard_option
@click.argument("node", required=False)
@click.option(
    "--machine",
    "host",
    default=None,
    help="Every server on this host at once (SIGKILL unless --signal); waits for each "
    "shard that lost its primary to serve again and reports each one's outage "
    "(--restart: then starts them again).",
)
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=Number(0.01, 3600),
    help="With --machine: seconds to wait for the takeovers.",
)
@click.option(
    "--signal",
    "sig",
    type=click.Choice(SIGNALS),
    default=None,
    help="Send this signal to the node's process.",
)
@click.option(
    "--restart",
    is_flag=True,
    help="Stop the node (SIGKILL, or --signal), start it again and wait until it is back "
    "(serving, or a backup in sync).",
)
@click.option(
    "--link",
    type=click.Choice(LINK_NAMES),
    default=None,
    help="Cut this channel at the node (both ways unless --direction).",
)
@click.option(
    "--direction",
    type=click.Choice([d.value for d in Direction]),
    default=None,
    help="With --link: lose only what the node hears (in) or only what it sends (out); "
    "default both.",
)
@click.option("--heal", is_flag=True, help="With --link: restore the channel.")
@click.option(
    "--for",
    "seconds",
    type=Number(0.001, 86_400),
    default=None,
    help="With --link: the node heals the cut by itself after this many seconds.",
)
@click.option(
    "--plan",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Run a TOML schedule of faults, each at its planned time (see etc/faults.toml).",
)
@one_line_errors
def kill_cmd(
    config_path: str | None,
    shard: str | None,
    node: str | None,
    host: str | None,
    timeout: float,
    sig: str | None,
    restart: bool,
    link: str | None,
    direction: str | None,
    heal: bool,
    seconds: float | None,
    plan: str | None,
) -> None:
    """Break the cluster on purpose: signals, restarts, link cuts, or a plan.

    NODE is a node name, or "primary" / "backup" for whichever node has that
    role now (with [shards], in the shard --shard names). --machine HOST
    kills every server on one machine, whatever their shards.
    """
    whole = load_config(config_path, shards=True)
    if host is not None:
        if node or link or plan or direction or heal or seconds is not None:
            raise ConfigError("--machine goes alone (or with --signal, --restart)")
        if sig is not None and sig not in ("KILL", "TERM"):
            raise ConfigError("--machine sends KILL or TERM: a machine is lost, not paused")
        from zmqfail.cli.machine import kill_machine, restart_machine

        act = restart_machine if restart else kill_machine
        lines, down = act(whole, host, sig or "KILL", timeout, shard)
        for line in lines:
            click.echo(line)
        if down:
            raise ZmqfailError(f"still without a primary after {timeout:g}s: {', '.join(down)}")
        return
    if node is None and plan is None:
        raise ConfigError("name a NODE (or primary / backup), or give --plan or --machine")
    aliased = node is None or node in ROLE_ALIASES
    cfg = group(whole, shard, None if aliased else node)
    if plan is not None:
        if node or sig or restart or link or direction or heal or seconds is not None:
            raise ConfigError("--plan runs alone: give the faults in the plan file")
        steps = load_plan(Path(plan), tuple(n.name for n in cfg.nodes))

        def report(began: float, step: Step, result: str) -> None:
            # Each line is printed when its step is done, stamped with when it began.
            late = f" (planned at {step.at:g}s)" if began - step.at > LATE else ""
            click.echo(f"[{began:7.3f}s] {step.describe()}{late}: {result}")

        failed = run_plan(steps, lambda s: do_step(cfg, s), time.monotonic, time.sleep, report)
        if failed:
            raise ZmqfailError(f"{failed} of {len(steps)} step(s) failed (see above)")
        return
    assert node is not None
    if link is None and (heal or seconds is not None or direction):
        raise ConfigError("--heal, --for and --direction go with --link")
    if sum(bool(x) for x in (sig and not restart, restart, link)) != 1:
        raise ConfigError("give exactly one of --signal, --restart, --link")
    name = resolve(cfg, node)
    if restart:
        click.echo(restart_node(cfg, name, sig or "KILL"))
    elif link is not None:
        if heal and (seconds is not None or direction):
            raise ConfigError("--for and --direction go with a cut, not with --heal")
        way = Direction(direction or Direction.BOTH.value)
        click.echo(cut(cfg, name, link, heal, seconds, way))
    else:
        assert sig is not None
        click.echo(send_signal(cfg, name, sig))
