"""A ledger as a zmqfail application: accounts, transfers with idempotent ids,
balances never negative, the total conserved. See ``ledger.py``."""

from __future__ import annotations

from typing import Any

from zmqfail.app import Workload
from zmqfail.apps.ledger.ledger import Ledger
from zmqfail.apps.ledger.load import TransferMix
from zmqfail.apps.ledger.settings import TOML, LedgerConfig, parse

__all__ = ["TOML", "Ledger", "LedgerConfig", "TransferMix", "create", "workload"]


def create(settings: dict[str, Any]) -> Ledger:
    return Ledger(parse(settings))


def workload(settings: dict[str, Any], seed: int) -> Workload:
    return TransferMix(parse(settings), seed)
