"""The text of cluster configs `zmqfail config init` writes (and the tests and
tools that make clusters of their own): one pair or more on consecutive
ports, or shards crossed over machines. ``config.py`` reads them back; every
text made here must load there.
"""

from __future__ import annotations

import importlib
import tomllib

from zmqfail import policies
from zmqfail import shards as shardconf
from zmqfail.app import DEFAULT_APP, SHIPPED, AppSpec
from zmqfail.errors import ConfigError
from zmqfail.security import render as render_security

# Port offsets from a node's base port, in this order.
ENDPOINT_OFFSETS = {
    "client": 0,
    "control": 1,
    "main_records": 2,
    "main_ack": 3,
    "main_heartbeat": 4,
    "failsafe_records": 5,
    "failsafe_ack": 6,
    "failsafe_heartbeat": 7,
}
METRICS_OFFSET = 8  # config init: the HTTP port of a node's Prometheus metrics
PORTS_PER_NODE = 10


def render(
    nodes: int = 2,
    base_port: int = 5700,
    host: str = "127.0.0.1",
    failsafe_host: str | None = None,
    name: str = "local",
    app: str = DEFAULT_APP,
    witness: bool = False,
    secure: bool = False,
) -> str:
    """The TOML text of a local cluster: nodes a, b, ... from base_port on,
    running `app` (a shipped application) with its default settings; with
    `witness`, a [witness] table on the first port after the nodes'; with
    `secure`, a [security] table naming the keys `keys.generate_cluster` makes."""
    if not 1 <= nodes <= 26:
        raise ConfigError("--nodes must be between 1 and 26")
    top = _check_ports(base_port, nodes)
    fs_host = failsafe_host or host
    first = 'primary = "a"           # the node that starts as primary on a fresh cluster'
    lines = _head(name, app, first)
    for i in range(nodes):
        lines += _node_lines(chr(ord("a") + i), base_port + PORTS_PER_NODE * i, host, fs_host)
    if witness:
        lines += [
            "",
            "[witness]               # `zmqfail witness`: elects every new epoch; a server runs",
            "                        # alone only while it holds the witness's lease",
            f'endpoint = "tcp://{host}:{top}"   # run it on a third machine',
            'data_dir = "witness"    # the epoch and leader it granted, fsynced',
            "lease_ms = 1000         # a server alone renews within this; a takeover waits it out",
        ]
    if secure:
        lines += render_security(witness)
    return "\n".join(lines) + "\n"


def _head(name: str, app: str, primary_line: str | None) -> list[str]:
    """The tables before the nodes: [cluster], the app's defaults, [sessions]
    and the policies."""
    if app not in SHIPPED:
        raise ConfigError(f"--app must be one of {', '.join(sorted(SHIPPED))}, got {app!r}")
    app_toml = importlib.import_module(SHIPPED[app]).TOML.rstrip("\n").splitlines()
    app_line = f'app = "{app}"'
    return [
        "# zmqfail cluster configuration. Every node, client and tool reads the same file.",
        "# Endpoints are where each node listens; data_dir is relative to this file.",
        "",
        "[cluster]",
        f'name = "{name}"',
        *([primary_line] if primary_line else []),
        f"{app_line:<24}# the application: {', '.join(sorted(SHIPPED))} or "
        '"package.module:factory"',
        "",
        "[app]                   # the application's own settings (equal on every node)",
        *app_toml,
        "",
        "[sessions]              # client sessions (equal on every node)",
        "max_sessions = 1024     # beyond this, a registration evicts the least recently active",
        "window = 256            # replies kept per session, so a resend is answered not redone",
        "",
        *policies.render(),
    ]


def _node_lines(n: str, p: int, host: str, fs_host: str, note: str = "") -> list[str]:
    """One [nodes.NAME] table on the ports from `p` on."""
    o = ENDPOINT_OFFSETS
    return [
        "",
        f"[nodes.{n}]{note}",
        f'client = "tcp://{host}:{p + o["client"]}"',
        f'control = "tcp://127.0.0.1:{p + o["control"]}"',
        f'data_dir = "{n}"',
        f'metrics = "127.0.0.1:{p + METRICS_OFFSET}"   # Prometheus, GET /metrics',
        f'main = {{ records = "tcp://{host}:{p + o["main_records"]}", '
        f'ack = "tcp://{host}:{p + o["main_ack"]}", '
        f'heartbeat = "tcp://{host}:{p + o["main_heartbeat"]}" }}',
        f'failsafe = {{ records = "tcp://{fs_host}:{p + o["failsafe_records"]}", '
        f'ack = "tcp://{fs_host}:{p + o["failsafe_ack"]}", '
        f'heartbeat = "tcp://{fs_host}:{p + o["failsafe_heartbeat"]}" }}',
    ]


def _check_ports(base_port: int, nodes: int) -> int:
    """The first port after the nodes'; ConfigError when they do not fit."""
    top = base_port + PORTS_PER_NODE * nodes
    if base_port < 1024 or top > 65535:
        raise ConfigError(f"ports {base_port}..{top} must lie within 1024..65535")
    return top


def render_shards(
    shards: int,
    machines: int,
    base_port: int = 5700,
    hosts: list[str] | None = None,
    name: str = "local",
    app: str = DEFAULT_APP,
    secure: bool = False,
) -> str:
    """The TOML text of `shards` shards crossed over `machines` machines
    (``shards.crossed``), the app's routing keys dealt out among them. A
    machine's servers listen on its host (`hosts`; by default 127.0.0.M, a
    distinct loopback address per machine on one box), on ports from
    base_port on in node order; control and metrics on 127.0.0.1."""
    placed = shardconf.crossed(shards, machines)
    hosts = hosts or [f"127.0.0.{m + 1}" for m in range(machines)]
    if len(hosts) != machines:
        raise ConfigError(f"--hosts lists {len(hosts)} host(s) for {machines} machine(s)")
    _check_ports(base_port, len(placed))
    lines = _head(name, app, None)
    defaults = tomllib.loads(importlib.import_module(SHIPPED[app]).TOML)
    dealt = shardconf.deal(AppSpec(app, defaults).keys(), shards)
    for i, owned in enumerate(dealt):
        shard = f"s{i + 1}"
        mine = [p for p in placed if p.shard == shard]
        primary = next(p.node for p in mine if p.primary)
        listed = ", ".join(f'"{p.node}"' for p in mine)
        lines += [
            "",
            f"{f'[shards.{shard}]':<24}# a failover group: its servers, the keys it owns",
            f"nodes = [{listed}]",
            f'primary = "{primary}"',
            "keys = [" + ", ".join(f'"{k}"' for k in owned) + "]",
        ]
    for i, p in enumerate(placed):
        role = "primary" if p.primary else "backup"
        note = f"   # machine {p.machine + 1}: {p.shard}'s {role} on a fresh cluster"
        h = hosts[p.machine]
        lines += _node_lines(p.node, base_port + PORTS_PER_NODE * i, h, h, note)
    if secure:
        lines += render_security(False)
    return "\n".join(lines) + "\n"
