"""The order-matching engine as a zmqfail application (the default one).

Deterministic: no I/O, no clock, no randomness. See ``engine.py`` for the
tables, the change operations and the retention policies.
"""

from __future__ import annotations

from typing import Any

from zmqfail.app import Workload
from zmqfail.apps.orders.codes import REJECT_CODES
from zmqfail.apps.orders.engine import Engine
from zmqfail.apps.orders.settings import TOML, OrdersConfig, parse

__all__ = [
    "REJECT_CODES",
    "TOML",
    "Engine",
    "OrdersConfig",
    "create",
    "keys",
    "routing_keys",
    "workload",
]


def create(settings: dict[str, Any]) -> Engine:
    return Engine(parse(settings))


def workload(settings: dict[str, Any], seed: int) -> Workload:
    """The bench's order mix (limit, market, cancel) on the configured instruments."""
    from zmqfail.apps.orders.load import OrderWorkload

    cfg = parse(settings)
    return OrderWorkload(seed, cfg.instruments, cfg.price_decimals)


def routing_keys(body: dict[str, Any]) -> tuple[str, ...]:
    """The key of a request is its instrument: one book, one shard. Every op
    routed between shards names it, ``cancel`` and ``status`` too (the engine
    ignores it there; order ids are per shard). ``reports`` names none: drain
    each shard's client on its own (``ShardedClient.client``)."""
    instrument = body.get("instrument") if isinstance(body, dict) else None
    return (instrument,) if isinstance(instrument, str) and instrument else ()


def keys(settings: dict[str, Any]) -> list[str]:
    """Every routing key of these settings (the instruments), for
    ``config init --shards`` to share out."""
    return list(parse(settings).instruments)
