"""Shards: failover groups that each own a set of routing keys.

One primary runs the application on one thread, so a venue that outgrows it
needs more primaries, each owning part of the keys (the instruments of the
order engine). A shard is one failover group: its own servers (their
``[nodes.NAME]`` tables, so their own endpoints, data dirs, epochs and logs)
and the routing keys it alone serves. The reference's "double failover"
(paragraph 71) is two shards crossed over two machines: each machine runs
the primary of one shard and the backup of the other.

A config without a ``[shards]`` table is one shard, ``ALL``, that owns every
key: what every config meant before shards existed. This module holds the
pure part: the table's parsing and checks, and the crossed layout
``config init --shards N --machines M`` writes. Requests are routed by
``zmqfail/client/shards.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from zmqfail.errors import ConfigError
from zmqfail.tablecheck import check_keys

ALL = "all"  # the name of the one shard of a config without [shards]


@dataclass(frozen=True, slots=True)
class ShardConfig:
    """One failover group: its servers (node names, config order), the one
    that starts as primary on a fresh cluster, and the keys it owns (None:
    every key; only the implicit shard of an unsharded config)."""

    name: str
    primary: str
    nodes: tuple[str, ...]
    keys: frozenset[str] | None = None

    def owns(self, key: str) -> bool:
        return self.keys is None or key in self.keys


def key_text(v: object, where: str) -> str:
    """A routing key as the config and the router compare it: a non-empty
    string, or a whole number written as its decimal string (the ledger's
    accounts), so ``1`` and ``"1"`` are one key."""
    if isinstance(v, bool) or not isinstance(v, str | int) or v == "":
        raise ConfigError(f"{where} keys must be non-empty strings or whole numbers, got {v!r}")
    return str(v)


def parse(
    raw: object, nodes: list[str], name_ok: Callable[[str], object]
) -> tuple[ShardConfig, ...]:
    """The ``[shards.NAME]`` tables: every node in exactly one shard, every key
    in at most one; ConfigError (one line) naming the table otherwise.
    `name_ok(name)` says whether a shard name is well formed (the node names'
    rule)."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("[shards] must hold one [shards.NAME] table per shard")
    shards: list[ShardConfig] = []
    node_shard: dict[str, str] = {}
    key_shard: dict[str, str] = {}
    for shard_name, spec in raw.items():
        where = f"[shards.{shard_name}]"
        if not name_ok(shard_name):
            raise ConfigError(f"{where}: shard names are lower-case letters, digits, - and _")
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a table")
        check_keys(where, spec, ("nodes", "primary", "keys"))
        servers = spec.get("nodes", [])
        if not isinstance(servers, list) or not all(isinstance(n, str) for n in servers):
            raise ConfigError(f'{where} nodes must be a list of node names like ["a", "b"]')
        if not servers:
            raise ConfigError(f"{where} has no servers: list its [nodes.NAME] in nodes = [...]")
        for n in servers:
            if n not in nodes:
                raise ConfigError(f"{where} nodes: there is no [nodes.{n}] table")
            if n in node_shard:
                raise ConfigError(f"node {n} is in two shards: {node_shard[n]} and {shard_name}")
            node_shard[n] = shard_name
        primary = spec.get("primary", servers[0])
        if not isinstance(primary, str) or primary not in servers:
            raise ConfigError(f"{where} primary {primary!r} is not one of its nodes")
        keys = spec.get("keys")
        if not isinstance(keys, list) or not keys:
            raise ConfigError(f"{where} keys must be a non-empty list of the routing keys it owns")
        owned: set[str] = set()
        for k in keys:
            key = key_text(k, where)
            if key in key_shard:
                raise ConfigError(
                    f"key {key!r} is owned by two shards: {key_shard[key]} and {shard_name}"
                )
            key_shard[key] = shard_name
            owned.add(key)
        shards.append(ShardConfig(shard_name, primary, tuple(servers), frozenset(owned)))
    loose = [n for n in nodes if n not in node_shard]
    if loose:
        raise ConfigError(
            f"[nodes.{loose[0]}] is in no shard: with [shards], name every node in one "
            "[shards.NAME] nodes list"
        )
    return tuple(shards)


@dataclass(frozen=True, slots=True)
class Placement:
    """One server of the crossed layout: which shard, which machine (0-based),
    and whether it starts as that shard's primary."""

    node: str
    shard: str
    machine: int
    primary: bool


def crossed(shards: int, machines: int) -> list[Placement]:
    """Two servers per shard, crossed: shard i's primary on machine i mod M,
    its backup on the next machine, so every machine leads some shards and
    backs up others, and losing one machine loses no shard (paragraph 71 for
    N = M = 2). Node names say where they run: ``s1-m1``, ``s1-m2``..."""
    if not 1 <= shards <= 26:
        raise ConfigError("--shards must be between 1 and 26")
    if not 2 <= machines <= 26:
        raise ConfigError("--machines must be between 2 and 26: a shard's backup needs a machine")
    out: list[Placement] = []
    for i in range(shards):
        shard = f"s{i + 1}"
        first = i % machines
        for j, primary in ((first, True), ((first + 1) % machines, False)):
            out.append(Placement(f"{shard}-m{j + 1}", shard, j, primary))
    return out


def deal(keys: list[str], shards: int) -> list[list[str]]:
    """The app's keys dealt round-robin to `shards` shards, each owning at least one."""
    if len(keys) < shards:
        raise ConfigError(
            f"--shards {shards}: the application has only {len(keys)} routing key(s) "
            "to share out; list more in its [app] settings"
        )
    return [keys[i::shards] for i in range(shards)]
