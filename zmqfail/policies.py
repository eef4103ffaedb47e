"""The cluster's policy tables: ``[flush]``, ``[failover]`` and ``[retention]``.

They say how the servers behave rather than where they are (``config.py``
keeps the topology: nodes, endpoints, the witness), and they must be equal on
every server: both sides of a pair measure silence with the same dead time and
promise the same durability. Each table is a frozen dataclass with its
defaults, a parser that names the key at fault, and the commented lines
``config init`` writes for it, kept together so a new key is added in one place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zmqfail.errors import ConfigError
from zmqfail.tablecheck import check_keys, int_fields
from zmqfail.txlog.retention import ARCHIVE_DIRNAME, Retention, RetentionPolicy

if TYPE_CHECKING:
    from zmqfail.config import NodeConfig


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


def parse_flush(sec: dict[str, Any]) -> FlushConfig:
    sec = dict(sec)
    durability = sec.pop("durability", Durability.MEMORY.value)
    choices = " or ".join(f'"{d.value}"' for d in Durability)
    if not isinstance(durability, str) or durability not in {d.value for d in Durability}:
        raise ConfigError(f"[flush] durability must be {choices}, got {durability!r}")
    ints = int_fields("[flush]", sec, FlushConfig)
    return FlushConfig(**ints, durability=Durability(durability))


def parse_failover(sec: dict[str, Any]) -> FailoverConfig:
    return FailoverConfig(**int_fields("[failover]", sec, FailoverConfig))


def parse_retention(sec: dict[str, Any]) -> RetentionConfig:
    check_keys("[retention]", sec, ("policy", "archive_dir", "drop_after_days"))
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


def render() -> list[str]:
    """The ``[flush]``, ``[failover]`` and ``[retention]`` tables `config init`
    writes: the defaults, each key explained."""
    return [
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
