"""Typed, validated cluster configuration (TOML).

One file describes the whole cluster, so every node, client and operator tool
agrees on names, endpoints and policies. Relative data directories are
resolved against the file's own directory, so a cluster directory can be moved
as a whole. ``DEFAULT_TOML`` is the embedded default: a two-node cluster on
loopback, used when no ``--config`` is given.
"""

from __future__ import annotations

import enum
import importlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zmqfail.app import DEFAULT_APP, SHIPPED, AppSpec
from zmqfail.apps.orders.settings import DEFAULT_INSTRUMENTS
from zmqfail.errors import ConfigError
from zmqfail.security import Security, check_control
from zmqfail.security import parse as parse_security
from zmqfail.security import render as render_security
from zmqfail.txlog.retention import ARCHIVE_DIRNAME, Retention, RetentionPolicy

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
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_ENDPOINT_RE = re.compile(r"^tcp://[^\s:]+:\d{1,5}$")
_HOSTPORT_RE = re.compile(r"^[^\s:/]+:\d{1,5}$")
__all__ = ["DEFAULT_INSTRUMENTS", "AppSpec", "ClusterConfig", "SessionsConfig"]


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


class Durability(enum.Enum):
    """Where an acknowledged record is when its reply leaves (``[flush] durability``)."""

    # In the RAM of every server of the pair, on disk within the flush
    # interval: a power loss of every server at once loses at most that much.
    MEMORY = "memory"
    # Fsynced on every server of the pair: the backup acks a record once it is
    # on its disk, the primary replies once it is on its own too. Survives a
    # power loss of the whole site; costs a flush per group of requests on
    # both servers (docs/benchmarks.md).
    DISK = "disk"


@dataclass(frozen=True, slots=True)
class FlushConfig:
    """Checkpoint agent criteria for the normal state (periodic flushing)."""

    interval_ms: int = 100
    max_records: int = 5000
    max_bytes: int = 1 << 20
    max_memory_bytes: int = 64 << 20
    snapshot_every_records: int = 200_000
    segment_bytes: int = 64 << 20
    durability: Durability = Durability.MEMORY


@dataclass(frozen=True, slots=True)
class FailoverConfig:
    heartbeat_interval_ms: int = 30
    # Dead after interval x misses = 300 ms: a Python loop on a busy 2-core
    # machine stalls for 200+ ms now and then (seen: a takeover of a live
    # primary at 150 ms), and step 420 adds half of it again before a takeover.
    heartbeat_misses: int = 10
    client_timeout_ms: int = 150
    link_timeout_ms: int = 150  # a commit not answered in this time: the link is down


@dataclass(frozen=True, slots=True)
class WitnessConfig:
    """The optional third voter (``zmqfail witness``): with it, every new
    epoch is granted by the witness and a server runs alone only while it
    holds the witness's lease (docs/architecture.md, "Witness")."""

    endpoint: str  # its ROUTER; every server connects to it
    data_dir: Path  # where it keeps the granted epoch and leader, fsynced
    lease_ms: int = 1000  # how long a lease lasts; renewed every third of it
    security: Security | None = None  # the cluster's [security] (None: plain)


@dataclass(frozen=True, slots=True)
class SessionsConfig:
    """Client sessions (``zmqfail/sessions.py``). Memory: at most
    ``max_sessions x window`` stored replies, each about the size of one
    reply's result plus ~150 bytes. Equal on every node: eviction follows them."""

    max_sessions: int = 1024  # beyond this, a registration evicts the least recently active
    window: int = 256  # replies kept per session for resends (clients keep fewer in flight)


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """What happens to log segments a snapshot covers: the audit trail
    (``txlog/retention.py`` says why ``archive`` is the default).
    ``archive_dir`` is relative to each node's data dir, or absolute: then each
    node archives into its own subdirectory of it."""

    policy: RetentionPolicy = RetentionPolicy.ARCHIVE
    archive_dir: str = ARCHIVE_DIRNAME
    drop_after_days: int = 0

    def for_node(self, node: NodeConfig) -> Retention:
        p = Path(self.archive_dir)
        archive = p / node.name if p.is_absolute() else node.data_dir / p
        return Retention(self.policy, archive, float(self.drop_after_days))


def _retention(sec: dict[str, Any]) -> RetentionConfig:
    known = {"policy", "archive_dir", "drop_after_days"}
    unknown = set(sec) - known
    if unknown:
        raise ConfigError(
            f"[retention] unknown key(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(known))})"
        )
    names = [p.value for p in RetentionPolicy]
    raw_policy = sec.get("policy", RetentionPolicy.ARCHIVE.value)
    if raw_policy not in names:
        raise ConfigError(
            f"[retention] policy must be one of {', '.join(names)}, got {raw_policy!r}"
        )
    policy = RetentionPolicy(raw_policy)
    archive_dir = sec.get("archive_dir", ARCHIVE_DIRNAME)
    if not isinstance(archive_dir, str) or not archive_dir:
        raise ConfigError("[retention] archive_dir must be a path")
    days = sec.get("drop_after_days", 0)
    if not isinstance(days, int) or isinstance(days, bool) or days < 0:
        raise ConfigError(f"[retention] drop_after_days must be a whole number >= 0, got {days!r}")
    if "drop_after_days" in sec and policy is not RetentionPolicy.DROP:
        raise ConfigError('[retention] drop_after_days only applies with policy = "drop"')
    return RetentionConfig(policy, archive_dir, days)


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


def _ints(sec: dict[str, Any], where: str, cls: type[Any]) -> dict[str, int]:
    known = set(cls.__dataclass_fields__)
    out: dict[str, int] = {}
    for k, v in sec.items():
        if k not in known:
            raise ConfigError(f"[{where}] unknown key {k!r} (known: {', '.join(sorted(known))})")
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"[{where}] {k} must be a positive integer, got {v!r}")
        out[k] = v
    return out


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
    unknown_cluster = set(cluster) - {"name", "primary", "app"}
    if unknown_cluster:
        raise ConfigError(f"[cluster] unknown key(s) {', '.join(sorted(unknown_cluster))}")
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
        unknown_keys = set(spec) - {"client", "control", "main", "failsafe", "data_dir", "metrics"}
        if unknown_keys:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown_keys))}")
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
    primary = cluster.get("primary", nodes[0].name)
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
    sessions = SessionsConfig(**_ints(_section(raw, "sessions"), "sessions", SessionsConfig))
    flush = _flush(_section(raw, "flush"))
    failover = FailoverConfig(**_ints(_section(raw, "failover"), "failover", FailoverConfig))
    retention = _retention(_section(raw, "retention"))
    witness = _witness(_section(raw, "witness"), base_dir, seen, sec) if "witness" in raw else None
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
    )


def _flush(sec: dict[str, Any]) -> FlushConfig:
    sec = dict(sec)
    durability = sec.pop("durability", Durability.MEMORY.value)
    choices = " or ".join(f'"{d.value}"' for d in Durability)
    if not isinstance(durability, str) or durability not in {d.value for d in Durability}:
        raise ConfigError(f"[flush] durability must be {choices}, got {durability!r}")
    return FlushConfig(**_ints(sec, "flush", FlushConfig), durability=Durability(durability))


def _witness(
    sec: dict[str, Any], base_dir: Path, seen: dict[str, str], security: Security | None
) -> WitnessConfig:
    known = {"endpoint", "data_dir", "lease_ms"}
    unknown = set(sec) - known
    if unknown:
        raise ConfigError(
            f"[witness] unknown key(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(known))})"
        )
    endpoint = _endpoint(sec.get("endpoint"), "[witness] endpoint")
    if endpoint in seen:
        raise ConfigError(f"endpoint {endpoint} is used twice: {seen[endpoint]} and the witness")
    data_dir = sec.get("data_dir", "witness")
    if not isinstance(data_dir, str) or not data_dir:
        raise ConfigError("[witness] data_dir must be a path")
    lease = sec.get("lease_ms", 1000)
    if not isinstance(lease, int) or isinstance(lease, bool) or not 100 <= lease <= 60_000:
        raise ConfigError(
            f"[witness] lease_ms must be a whole number from 100 to 60000, got {lease!r}"
        )
    dd = Path(data_dir)
    return WitnessConfig(endpoint, dd if dd.is_absolute() else base_dir / dd, lease, security)


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
    top = base_port + PORTS_PER_NODE * nodes
    if base_port < 1024 or top > 65535:
        raise ConfigError(f"ports {base_port}..{top} must lie within 1024..65535")
    if app not in SHIPPED:
        raise ConfigError(f"--app must be one of {', '.join(sorted(SHIPPED))}, got {app!r}")
    fs_host = failsafe_host or host
    app_toml = importlib.import_module(SHIPPED[app]).TOML.rstrip("\n").splitlines()
    app_line = f'app = "{app}"'
    lines = [
        "# zmqfail cluster configuration. Every node, client and tool reads the same file.",
        "# Endpoints are where each node listens; data_dir is relative to this file.",
        "",
        "[cluster]",
        f'name = "{name}"',
        'primary = "a"           # the node that starts as primary on a fresh cluster',
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
        "[flush]                 # checkpoint agent, normal state: flush when any is reached",
        'durability = "memory"   # acked = in RAM on both servers, on disk within interval_ms;',
        '                        # "disk": fsynced on both before the reply (a site power loss',
        "                        # loses nothing acknowledged; costs throughput, benchmarks.md)",
        "interval_ms = 100",
        "max_records = 5000",
        "max_bytes = 1048576",
        "max_memory_bytes = 67108864",
        "snapshot_every_records = 200000",
        "segment_bytes = 67108864",
        "",
        "[failover]",
        "heartbeat_interval_ms = 30   # a peer silent on every link for interval x misses",
        "heartbeat_misses = 10        # (300 ms) is proven gone; the backup then takes",
        "                             # over if the primary is silent to its probes too",
        "client_timeout_ms = 150      # a client with no reply this long looks for a new server",
        "link_timeout_ms = 150   # unanswered commit: replication moves to the other link",
        "",
        "[retention]             # log segments a snapshot covers (the audit trail):",
        'policy = "archive"      # "archive": moved to archive_dir; "keep": left in the log;',
        '                        # "drop": deleted after drop_after_days',
        'archive_dir = "archive" # relative to each node\'s data_dir',
    ]
    for i in range(nodes):
        n = chr(ord("a") + i)
        p = base_port + PORTS_PER_NODE * i
        o = ENDPOINT_OFFSETS
        lines += [
            "",
            f"[nodes.{n}]",
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


DEFAULT_TOML = (
    render(nodes=2, base_port=5700, name="default")
    .replace('data_dir = "a"', 'data_dir = "zmqfail-data/a"')
    .replace('data_dir = "b"', 'data_dir = "zmqfail-data/b"')
)


def load_default() -> ClusterConfig:
    """The embedded default cluster; data lives under ./zmqfail-data."""
    return loads(DEFAULT_TOML, Path.cwd())
