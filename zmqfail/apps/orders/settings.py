"""The order engine's settings: the ``[app]`` table when ``[cluster] app = "orders"``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from zmqfail.app import int_settings
from zmqfail.errors import ConfigError

DEFAULT_INSTRUMENTS = ("ABC", "XYZ", "DEF", "QQQ")
_SYMBOL_RE = re.compile(r"^[A-Z][A-Z0-9.]{0,11}$")

# The [app] table `zmqfail config init` writes for this application.
TOML = """\
instruments = ["ABC", "XYZ", "DEF", "QQQ"]
price_decimals = 2      # prices are accepted with at most this many decimals
max_closed_orders = 100000   # closed orders and executions kept (oldest evicted)
max_reports_per_client = 1000
"""


@dataclass(frozen=True, slots=True)
class OrdersConfig:
    """Every node must run with the same settings: ``apply`` evicts by them."""

    instruments: tuple[str, ...] = DEFAULT_INSTRUMENTS
    price_decimals: int = 2
    max_closed_orders: int = 100_000
    max_reports_per_client: int = 1000


def parse(settings: dict[str, Any]) -> OrdersConfig:
    """OrdersConfig from the [app] table; ConfigError naming the key otherwise."""
    ints = int_settings(settings, OrdersConfig, "the order engine", skip=("instruments",))
    instruments = settings.get("instruments", list(DEFAULT_INSTRUMENTS))
    if (
        not isinstance(instruments, list | tuple)
        or not instruments
        or not all(isinstance(s, str) and _SYMBOL_RE.match(s) for s in instruments)
    ):
        raise ConfigError('[app] instruments must be a list of symbols like "ABC"')
    if len(set(instruments)) != len(instruments):
        raise ConfigError("[app] instruments lists a symbol twice")
    if ints.get("price_decimals", 2) > 8:
        raise ConfigError("[app] price_decimals must be at most 8")
    return OrdersConfig(instruments=tuple(instruments), **ints)
