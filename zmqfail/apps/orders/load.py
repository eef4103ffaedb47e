"""The order engine's request mix for `zmqfail client bench` and the demo: the
bench's realistic mix (``loadgen/orders.py``), told which of its bodies write."""

from __future__ import annotations

from typing import Any

from zmqfail.loadgen.orders import OrderMix

WRITE_OPS = frozenset(("new", "cancel", "reports"))


class OrderWorkload(OrderMix):
    def is_write(self, body: dict[str, Any]) -> bool:
        return body.get("op") in WRITE_OPS
