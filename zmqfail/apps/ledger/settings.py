"""The ledger's settings: the ``[app]`` table when ``[cluster] app = "ledger"``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zmqfail.app import int_settings
from zmqfail.errors import ConfigError

TOML = """\
accounts = 100          # accounts 1..100 exist from the start
initial_balance = 1000000   # each; the total of all balances never changes
max_transfers = 100000  # transfer ids remembered (a retry of one is not applied again)
"""


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    accounts: int = 100
    initial_balance: int = 1_000_000
    max_transfers: int = 100_000


def parse(settings: dict[str, Any]) -> LedgerConfig:
    ints = int_settings(settings, LedgerConfig, "the ledger")
    if ints.get("accounts", 0) > 1_000_000:
        raise ConfigError("[app] accounts must be at most 1000000")
    return LedgerConfig(**ints)
