"""A ledger as a zmqfail application: accounts, transfers with idempotent ids,
balances never negative, the total conserved. See ``ledger.py``."""

from __future__ import annotations

from typing import Any

from zmqfail.app import Workload
from zmqfail.apps.ledger.ledger import Ledger
from zmqfail.apps.ledger.load import TransferMix
from zmqfail.apps.ledger.settings import TOML, LedgerConfig, parse

__all__ = [
    "TOML",
    "Ledger",
    "LedgerConfig",
    "TransferMix",
    "create",
    "keys",
    "routing_keys",
    "workload",
]


def create(settings: dict[str, Any]) -> Ledger:
    return Ledger(parse(settings))


def workload(settings: dict[str, Any], seed: int) -> Workload:
    return TransferMix(parse(settings), seed)


def routing_keys(body: dict[str, Any]) -> tuple[str, ...]:
    """The key is the account (its number as a string): ``open`` and
    ``balance`` name one, a ``transfer`` two (``from`` and ``to``), so a
    transfer between accounts of two shards is cross-shard and refused by the
    router. ``total`` names none: it would span every shard."""
    if not isinstance(body, dict):
        return ()
    fields = ("from", "to") if body.get("op") == "transfer" else ("account",)
    found = [body.get(f) for f in fields]
    if not all(type(a) is int and a > 0 for a in found):
        return ()
    return tuple(str(a) for a in found)


def keys(settings: dict[str, Any]) -> list[str]:
    """The accounts that exist from the start, for ``config init --shards``."""
    return [str(a) for a in range(1, parse(settings).accounts + 1)]
