"""Typed, validated cluster configuration (TOML).

One file describes the whole cluster, so every node, client and operator tool
agrees on names, endpoints and policies. Relative data directories are
resolved against the file's own directory, so a cluster directory can be moved
as a whole. ``DEFAULT_TOML`` is the embedded default: a two-node cluster on
loopback, used when no ``--config`` is given.

A config may split the cluster into shards (``[shards.NAME]``,
zmqfail/shards.py). Then ``nodes`` lists every shard's servers and ``primary``
is the first shard's: what a server or a client of one shard must use is
``shard(NAME)`` (or ``for_node``), that group alone; ``Client(cfg)`` on the
whole of a sharded config would reach every shard's primary.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from zmqfail import policies
from zmqfail import shards as shardconf
from zmqfail.app import DEFAULT_APP, SHIPPED, AppSpec
from zmqfail.apps.orders.settings import DEFAULT_INSTRUMENTS
from zmqfail.configtext import (
    ENDPOINT_OFFSETS,
    METRICS_OFFSET,
    PORTS_PER_NODE,
    render,
    render_shards,
)
from zmqfail.errors import ConfigError
from zmqfail.policies import Durability, FailoverConfig, FlushConfig, RetentionConfig
from zmqfail.security import Curve, Security, check_control
from zmqfail.security import parse as parse_security
from zmqfail.shards import ALL, ShardConfig
from zmqfail.tablecheck import check_keys, int_fields

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_ENDPOINT_RE = re.compile(r"^tcp://[^\s:]+:\d{1,5}$")
_HOSTPORT_RE = re.compile(r"^[^\s:/]+:\d{1,5}$")
_ETCD_URL_RE = re.compile(r"^http://[^\s:/]+:\d{1,5}$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
# Names other modules and tests import from here; [flush], [failover] and
# [retention] live in policies.py.
__all__ = [
    "DEFAULT_INSTRUMENTS",
    "ENDPOINT_OFFSETS",
    "METRICS_OFFSET",
    "PORTS_PER_NODE",
    "AppSpec",
    "ClusterConfig",
    "Durability",
    "FailoverConfig",
    "FlushConfig",
    "RetentionConfig",
    "SessionsConfig",
    "ShardConfig",
    "render",
    "render_shards",
]


@dataclass(frozen=True, slots=True)
class LinkEndpoints:
    """One replication link (main or failsafe) of one node: where it listens."""

    records: str  # PULL: transaction records arrive here
    ack: str  # REP: commit requests arrive here
    heartbeat: str  # PUB: this node's heartbeats leave here


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str
    client: str  # ROUTER frontend for clients
    control: str  # ROUTER for operator tools (status, kill, watch)
    main: LinkEndpoints
    failsafe: LinkEndpoints
    data_dir: Path
    # "host:port" where the node serves Prometheus metrics over HTTP (None: off).
    # Loopback by default: the numbers are for a local agent or a scraper on
    # the same host, not for the world.
    metrics: str | None = None
    # The cluster's [security] (None: plain), so a tool holding only this
    # node's entry can reach its control socket.
    security: Security | None = None

    def link(self, name: str) -> LinkEndpoints:
        if name == "main":
            return self.main
        if name == "failsafe":
            return self.failsafe
        raise ConfigError(f"no link named {name!r} (links: main, failsafe)")


@dataclass(frozen=True, slots=True)
class EtcdConfig:
    """An etcd cluster playing the witness (docs/etcd.md): its members' URLs,
    tried in turn, and the key prefix; each failover group's keys are under
    ``<prefix>/<cluster name>[/<shard>]/``."""

    endpoints: tuple[str, ...]  # http://host:port of etcd members (the v3 JSON gateway)
    prefix: str = "zmqfail"


@dataclass(frozen=True, slots=True)
class WitnessConfig:
    """The optional third voter (``zmqfail witness``): with it, every new
    epoch is granted by the witness and a server runs alone only while it
    holds the witness's lease (docs/architecture.md, "Witness")."""

    endpoint: str  # its ROUTER; every server connects to it
    data_dir: Path  # where it keeps the granted epoch and leader, fsynced
    lease_ms: int = 1000  # how long a lease lasts; renewed every third of it
    security: Security | None = None  # the cluster's [security] (None: plain)
    etcd: EtcdConfig | None = None  # etcd plays the witness (endpoint, data_dir unused)

    @property
    def where(self) -> str:
        """For an operator: the witness's endpoint, or etcd's URLs."""
        return f"etcd {', '.join(self.etcd.endpoints)}" if self.etcd else self.endpoint


@dataclass(frozen=True, slots=True)
class SessionsConfig:
    """Client sessions (``zmqfail/sessions.py``). Memory: at most
    ``max_sessions x window`` stored replies, each about the size of one
    reply's result plus ~150 bytes. Equal on every node: eviction follows them."""

    max_sessions: int = 1024  # beyond this, a registration evicts the least recently active
    window: int = 256  # replies kept per session for resends (clients keep fewer in flight)


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    name: str
    primary: str
    nodes: tuple[NodeConfig, ...]
    app: AppSpec = field(default_factory=AppSpec)
    sessions: SessionsConfig = field(default_factory=SessionsConfig)
    flush: FlushConfig = field(default_factory=FlushConfig)
    failover: FailoverConfig = field(default_factory=FailoverConfig)
    path: Path | None = None
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    witness: WitnessConfig | None = None
    security: Security | None = None  # [security]: CurveZMQ per channel (None: plain)
    # [shards.NAME] tables (zmqfail/shards.py); () is one shard owning every key.
    sharded: tuple[ShardConfig, ...] = ()

    @property
    def shards(self) -> tuple[ShardConfig, ...]:
        """Every shard; a config without [shards] is one, ALL, owning every key."""
        if self.sharded:
            return self.sharded
        return (ShardConfig(ALL, self.primary, tuple(n.name for n in self.nodes)),)

    def shard(self, name: str) -> ClusterConfig:
        """The config one shard's servers and clients see: that failover group
        alone, as if it were the whole cluster (its nodes, its primary). The
        config itself for ALL of an unsharded config."""
        if not self.sharded and name == ALL:
            return self
        for sh in self.sharded:
            if sh.name == name:
                return replace(
                    self,
                    name=f"{self.name}/{sh.name}",
                    primary=sh.primary,
                    nodes=tuple(self.node(n) for n in sh.nodes),
                    sharded=(),
                )
        known = ", ".join(sh.name for sh in self.shards)
        raise ConfigError(f"no shard named {name!r} in the config (shards: {known})")

    def shard_of(self, node: str) -> ShardConfig:
        """The shard whose server `node` is."""
        self.node(node)  # an unknown name: the usual one-line error
        return next(sh for sh in self.shards if node in sh.nodes)

    def for_node(self, node: str) -> ClusterConfig:
        """What the server `node` runs with: its shard's config."""
        return self.shard(self.shard_of(node).name)

    def node(self, name: str) -> NodeConfig:
        for n in self.nodes:
            if n.name == name:
                return n
        known = ", ".join(n.name for n in self.nodes)
        raise ConfigError(f"no node named {name!r} in the config (nodes: {known})")

    def peers(self, name: str) -> tuple[NodeConfig, ...]:
        return tuple(n for n in self.nodes if n.name != name)


def _section(raw: dict[str, Any], key: str) -> dict[str, Any]:
    sec = raw.get(key, {})
    if not isinstance(sec, dict):
        raise ConfigError(f"[{key}] must be a table")
    return sec


def _endpoint(v: object, where: str) -> str:
    if not isinstance(v, str) or not _ENDPOINT_RE.match(v):
        raise ConfigError(f"{where} must be an endpoint like tcp://127.0.0.1:5700, got {v!r}")
    port = int(v.rsplit(":", 1)[1])
    if not 0 < port < 65536:
        raise ConfigError(f"{where}: port {port} out of range")
    return v


def _metrics(v: object, where: str) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or not _HOSTPORT_RE.match(v):
        raise ConfigError(f"{where} metrics must be host:port like 127.0.0.1:5708, got {v!r}")
    _endpoint(f"tcp://{v}", f"{where} metrics")  # the port's range
    return v


def _link(raw: object, where: str) -> LinkEndpoints:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table with records, ack, heartbeat")
    missing = {"records", "ack", "heartbeat"} - set(raw)
    if missing:
        raise ConfigError(f"{where} lacks {', '.join(sorted(missing))}")
    return LinkEndpoints(
        records=_endpoint(raw["records"], f"{where}.records"),
        ack=_endpoint(raw["ack"], f"{where}.ack"),
        heartbeat=_endpoint(raw["heartbeat"], f"{where}.heartbeat"),
    )


def parse(raw: dict[str, Any], base_dir: Path, path: Path | None = None) -> ClusterConfig:
    """Build a ClusterConfig from parsed TOML, or raise ConfigError naming the key."""
    cluster = _section(raw, "cluster")
    check_keys("[cluster]", cluster, ("name", "primary", "app"))
    if "shards" in raw and "primary" in cluster:
        raise ConfigError(
            "[cluster] primary does not apply with [shards]: each [shards.NAME] names its own"
        )
    name = cluster.get("name", "zmqfail")
    if not isinstance(name, str) or not name:
        raise ConfigError("[cluster] name must be a non-empty string")
    nodes_raw = _section(raw, "nodes")
    if not nodes_raw:
        raise ConfigError("the config defines no [nodes.NAME] table")
    sec = parse_security(_section(raw, "security"), base_dir) if "security" in raw else None
    nodes: list[NodeConfig] = []
    for node_name, spec in nodes_raw.items():
        where = f"[nodes.{node_name}]"
        if not _NAME_RE.match(node_name):
            raise ConfigError(f"{where}: node names are lower-case letters, digits, - and _")
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a table")
        check_keys(where, spec, ("client", "control", "main", "failsafe", "data_dir", "metrics"))
        data_dir = spec.get("data_dir", node_name)
        if not isinstance(data_dir, str) or not data_dir:
            raise ConfigError(f"{where} data_dir must be a path")
        dd = Path(data_dir)
        nodes.append(
            NodeConfig(
                name=node_name,
                client=_endpoint(spec.get("client"), f"{where} client"),
                control=_endpoint(spec.get("control"), f"{where} control"),
                main=_link(spec.get("main"), f"{where} main"),
                failsafe=_link(spec.get("failsafe"), f"{where} failsafe"),
                data_dir=dd if dd.is_absolute() else (base_dir / dd),
                metrics=_metrics(spec.get("metrics"), where),
                security=sec,
            )
        )
    seen: dict[str, str] = {}
    for n in nodes:
        for label, ep in (
            ("client", n.client),
            ("control", n.control),
            ("main.records", n.main.records),
            ("main.ack", n.main.ack),
            ("main.heartbeat", n.main.heartbeat),
            ("failsafe.records", n.failsafe.records),
            ("failsafe.ack", n.failsafe.ack),
            ("failsafe.heartbeat", n.failsafe.heartbeat),
            *((("metrics", f"tcp://{n.metrics}"),) if n.metrics else ()),
        ):
            here = f"{n.name}.{label}"
            if ep in seen:
                raise ConfigError(f"endpoint {ep} is used twice: {seen[ep]} and {here}")
            seen[ep] = here
    sharded = (
        shardconf.parse(raw["shards"], [n.name for n in nodes], _NAME_RE.match)
        if "shards" in raw
        else ()
    )
    primary = cluster.get("primary", sharded[0].primary if sharded else nodes[0].name)
    if not isinstance(primary, str) or primary not in {n.name for n in nodes}:
        raise ConfigError(f"[cluster] primary {primary!r} is not one of the nodes")

    if "engine" in raw:
        raise ConfigError(
            "[engine] is gone: the order engine's settings are the [app] table, and "
            "dedup_window is [sessions] window"
        )
    ref = cluster.get("app", DEFAULT_APP)
    if not isinstance(ref, str) or not ref:
        raise ConfigError(
            f"[cluster] app must name an application ({', '.join(sorted(SHIPPED))} or "
            f"'package.module:factory'), got {ref!r}"
        )
    app = AppSpec(ref, dict(_section(raw, "app")))
    app.create()  # the application checks its own settings: a bad one stops here
    sessions = SessionsConfig(**int_fields("[sessions]", _section(raw, "sessions"), SessionsConfig))
    flush = policies.parse_flush(_section(raw, "flush"))
    failover = policies.parse_failover(_section(raw, "failover"))
    retention = policies.parse_retention(_section(raw, "retention"))
    witness = _witness(_section(raw, "witness"), base_dir, seen, sec) if "witness" in raw else None
    if sharded:
        app.router()  # the application must name its routing key
        if witness is not None and witness.etcd is None:
            raise ConfigError(
                "[witness] with [shards] is not supported yet: one witness elects the "
                "epochs of one failover group"
            )
    check_control(sec, {n.name: n.control for n in nodes})
    unknown = set(raw) - {
        "cluster",
        "nodes",
        "app",
        "sessions",
        "flush",
        "failover",
        "retention",
        "witness",
        "security",
        "shards",
    }
    if unknown:
        raise ConfigError(f"unknown top-level table(s): {', '.join(sorted(unknown))}")
    return ClusterConfig(
        name=name,
        primary=primary,
        nodes=tuple(nodes),
        app=app,
        sessions=sessions,
        flush=flush,
        failover=failover,
        path=path,
        retention=retention,
        witness=witness,
        security=sec,
        sharded=sharded,
    )


def _witness(
    sec: dict[str, Any], base_dir: Path, seen: dict[str, str], security: Security | None
) -> WitnessConfig:
    if "etcd" in sec:
        return _etcd_witness(sec, security)
    check_keys("[witness]", sec, ("endpoint", "data_dir", "lease_ms"))
    endpoint = _endpoint(sec.get("endpoint"), "[witness] endpoint")
    if endpoint in seen:
        raise ConfigError(f"endpoint {endpoint} is used twice: {seen[endpoint]} and the witness")
    data_dir = sec.get("data_dir", "witness")
    if not isinstance(data_dir, str) or not data_dir:
        raise ConfigError("[witness] data_dir must be a path")
    lease = _lease_ms(sec.get("lease_ms", 1000), 100)
    dd = Path(data_dir)
    return WitnessConfig(endpoint, dd if dd.is_absolute() else base_dir / dd, lease, security)


def _lease_ms(lease: object, least: int) -> int:
    if not isinstance(lease, int) or isinstance(lease, bool) or not least <= lease <= 60_000:
        raise ConfigError(
            f"[witness] lease_ms must be a whole number from {least} to 60000, got {lease!r}"
        )
    return lease


def _etcd_witness(sec: dict[str, Any], security: Security | None) -> WitnessConfig:
    """`[witness] etcd = ...`: etcd grants the epochs and leases. Its leases
    last whole seconds, so lease_ms is whole seconds too (2 s by default:
    an etcd with the default 1 s election timeout stretches shorter ones)."""
    check_keys("[witness] with etcd", sec, ("etcd", "prefix", "lease_ms"))
    raw = sec["etcd"]
    urls = [raw] if isinstance(raw, str) else raw
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise ConfigError(f"[witness] etcd must be a URL or a list of URLs, got {raw!r}")
    for u in urls:
        if not _ETCD_URL_RE.match(u) or not 0 < int(u.rsplit(":", 1)[1]) < 65536:
            raise ConfigError(
                f"[witness] etcd: {u!r} is not like http://127.0.0.1:2379 (host and port; "
                "https is not supported yet)"
            )
    if len(set(urls)) != len(urls):
        raise ConfigError("[witness] etcd names a URL twice")
    prefix = sec.get("prefix", "zmqfail")
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise ConfigError(
            f"[witness] prefix must be letters, digits and - _ . / (not starting or ending "
            f"with /), got {prefix!r}"
        )
    if security is not None and security.on(Curve.WITNESS):
        raise ConfigError(
            "[security] curve names the witness channel, but etcd plays the witness: "
            "there is no witness socket to secure (remove it from the list)"
        )
    lease = _lease_ms(sec.get("lease_ms", 2000), 1000)
    if lease % 1000:
        raise ConfigError(f"[witness] lease_ms must be whole seconds with etcd, got {lease}")
    etcd = EtcdConfig(tuple(urls), prefix)
    return WitnessConfig("", Path(), lease, security, etcd)


def load(path: str | Path) -> ClusterConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not UTF-8 text: {exc.reason}") from None
    return loads(text, p.resolve().parent, p.resolve())


def loads(text: str, base_dir: Path, path: Path | None = None) -> ClusterConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = path or "config"
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None
    return parse(raw, base_dir, path)


DEFAULT_TOML = (
    render(nodes=2, base_port=5700, name="default")
    .replace('data_dir = "a"', 'data_dir = "zmqfail-data/a"')
    .replace('data_dir = "b"', 'data_dir = "zmqfail-data/b"')
)


def load_default() -> ClusterConfig:
    """The embedded default cluster; data lives under ./zmqfail-data."""
    return loads(DEFAULT_TOML, Path.cwd())
