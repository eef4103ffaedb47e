"""`zmqfail kill --machine HOST`: lose a whole machine at once.

With shards crossed over machines (docs/operations.md, Shards), one machine
runs the primary of some shards and the backup of others, so losing it is
several failovers at once, each shard on its own. This kills every server
listening on HOST (its client endpoint's host) together, then waits for each
shard touched to serve again and says, per shard, who took over and how long
it went without a primary, as the servers themselves saw it.

The pure part (which servers a machine runs, the words of the report) is
apart from the loop that signals and polls.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from zmqfail.cli.health import failover_words, node_words
from zmqfail.cli.view import Frame, WatchModel
from zmqfail.client.control import cluster_status
from zmqfail.config import ClusterConfig, NodeConfig
from zmqfail.core.status import NodeStatus
from zmqfail.errors import ConfigError, ZmqfailError

POLL = 0.1  # seconds between two readings while waiting for the takeovers


def host_of(node: NodeConfig) -> str:
    """The machine a server runs on: the host of its client endpoint."""
    return urlsplit(node.client).hostname or node.client


def on_machine(cfg: ClusterConfig, host: str, shard: str | None = None) -> list[str]:
    """The servers running on `host` (of `shard` only, if given), in config
    order; ConfigError naming the hosts there are when none does."""
    mine = {n.name for n in cfg.shard(shard).nodes} if shard is not None else None
    names = [n.name for n in cfg.nodes if host_of(n) == host and (mine is None or n.name in mine)]
    if not names:
        hosts = ", ".join(dict.fromkeys(host_of(n) for n in cfg.nodes))
        raise ConfigError(f"no server of the config runs on {host!r} (machines: {hosts})")
    return names


@dataclass(frozen=True, slots=True)
class ShardLoss:
    """What one shard lost with the machine: its primary (a failover to
    come) or only backups (it serves on, unprotected)."""

    shard: str
    group: ClusterConfig
    killed: tuple[str, ...]
    primary_before: str | None

    @property
    def lost_primary(self) -> bool:
        return self.primary_before in self.killed


def losses(cfg: ClusterConfig, killed: list[str], before: list[NodeStatus]) -> list[ShardLoss]:
    """Each shard with a server among `killed`, with who served it before."""
    out: list[ShardLoss] = []
    for sh in cfg.shards:
        mine = tuple(n for n in sh.nodes if n in killed)
        if not mine:
            continue
        serving = [r for r in before if r.name in sh.nodes and r.serving]
        top = max(serving, key=lambda r: r.epoch or 0, default=None)
        out.append(ShardLoss(sh.name, cfg.shard(sh.name), mine, top.name if top else None))
    return out


def served_again(loss: ShardLoss, rows: list[NodeStatus]) -> NodeStatus | None:
    """The shard's server that serves now, if any (none of the killed ones)."""
    alive = [r for r in rows if r.name in {n.name for n in loss.group.nodes} and r.serving]
    return max(alive, key=lambda r: r.epoch or 0, default=None)


def report_line(loss: ShardLoss, rows: list[NodeStatus], frame: Frame) -> str:
    """One shard's outcome in words, from the last reading of its servers
    and the frame of every reading since before the kill."""
    from zmqfail.cli.layout import clock_text

    now = served_again(loss, rows)
    gone = ", ".join(loss.killed)
    if now is None:
        states = ", ".join(f"{r.name} {node_words(r)}" for r in rows)
        return f"{loss.shard}: DOWN, no server serves ({states})"
    if not loss.lost_primary:
        return f"{loss.shard}: {now.name} serves on (epoch {now.epoch}), without {gone}"
    f = frame.failover
    took = failover_words(f, clock_text(f.time) if f else "")
    return f"{loss.shard}: lost primary {loss.primary_before}; {took}"


def kill_machine(
    cfg: ClusterConfig, host: str, sig: str, wait: float, shard: str | None = None
) -> tuple[list[str], list[str]]:
    """Send `sig` (KILL or TERM) to every server on `host` (of `shard` only, if
    given) at once, wait until they are gone and each shard that lost its
    primary serves again (at most `wait` seconds in all). The report (one
    line for the machine, one per shard touched) and the shards still
    without a primary at the deadline."""
    from zmqfail.cli.killcmd import pid_of

    names = on_machine(cfg, host, shard)
    pids = {n: pid_of(cfg, n) for n in names}
    running = {n: p for n, p in pids.items() if p is not None}
    if not running:
        raise ZmqfailError(f"no server on {host} is running ({', '.join(names)})")
    return _kill(cfg, host, sig, wait, running)


def restart_machine(
    cfg: ClusterConfig, host: str, sig: str, wait: float, shard: str | None = None
) -> tuple[list[str], list[str]]:
    """`kill_machine` (when a server there still runs), then start every
    server on `host` again and wait until each is back: serving, or a
    backup in sync (each within 20 s). Report and shards without a primary
    as `kill_machine`'s; the servers started keep running after the tool."""
    from zmqfail.cli.killcmd import pid_of, start_node

    names = on_machine(cfg, host, shard)
    lines: list[str] = []
    down: list[str] = []
    if any(pid_of(cfg, n) is not None for n in names):
        lines, down = kill_machine(cfg, host, sig, wait, shard)
    return lines + [start_node(cfg, n) for n in names], down


def _kill(
    cfg: ClusterConfig, host: str, sig: str, wait: float, running: dict[str, int]
) -> tuple[list[str], list[str]]:
    from zmqfail.cli.killcmd import alive

    before = cluster_status(cfg, digest=False, timeout=1.0)
    for pid in running.values():
        os.kill(pid, getattr(signal, f"SIG{sig}"))
    t0 = time.monotonic()
    deadline = t0 + wait
    while any(alive(p) for p in running.values()):
        if time.monotonic() > deadline:
            raise ZmqfailError(f"servers on {host} did not exit within {wait:g}s")
        time.sleep(0.02)
    said = ", ".join(f"{n} (pid {p})" for n, p in running.items())
    lines = [f"SIG{sig} sent to every server on {host}: {said}"]
    todo = losses(cfg, list(running), before)
    # Each shard's readings go through a watcher's model, as `watch` keeps
    # them: the outage is from the old primary's last heartbeat, as its backup
    # heard it in some reading before the takeover, to the takeover.
    hb = cfg.failover.heartbeat_interval_ms
    models = {x.shard: WatchModel(hb) for x in todo}
    frames = _feed(todo, models, before, t0)
    while True:
        rows = cluster_status(cfg, digest=False, timeout=1.0)
        frames = _feed(todo, models, rows, time.monotonic())
        waiting = [x for x in todo if x.lost_primary and served_again(x, rows) is None]
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(POLL)
    lines += [report_line(x, _rows_of(x, rows), frames[x.shard]) for x in todo]
    return lines, [x.shard for x in waiting]


def _feed(
    todo: list[ShardLoss], models: dict[str, WatchModel], rows: list[NodeStatus], now: float
) -> dict[str, Frame]:
    wall = time.time()
    return {x.shard: models[x.shard].update(_rows_of(x, rows), now, wall) for x in todo}


def _rows_of(loss: ShardLoss, rows: list[NodeStatus]) -> list[NodeStatus]:
    mine = {n.name for n in loss.group.nodes}
    return [r for r in rows if r.name in mine]
