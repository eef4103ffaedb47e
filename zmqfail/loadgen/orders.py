"""A seeded, realistic order mix for one bench client.

Mostly limit orders around a fixed mid price on every configured instrument:
passive ones rest a few ticks away from the mid on their own side, aggressive
ones (about a third of the limit orders) reach across it, so they meet the
resting orders of the other side and fill; some market orders; and cancels of
the client's own orders. A cancel may only name an order id this client got
back in an ok reply: a server must never see a cancel of someone else's order
from the bench (that would be a `not_owner` rejection the bench caused by
itself), while a cancel of an own order that was filled meanwhile is a
legitimate `order_closed` rejection that real clients hit too.

The generator is deterministic given its seed and the replies fed back to it,
so a run can be repeated and a test can pin its output.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

OPEN_STATUSES = frozenset({"new", "partially_filled"})


class OrderMix:
    """Produces request bodies; learns cancellable ids from ok replies."""

    def __init__(
        self,
        seed: int,
        instruments: Sequence[str],
        price_decimals: int = 2,
        *,
        cross: float = 1 / 3,
        market: float = 0.05,
        cancel: float = 0.15,
        mid: int = 100,
        depth: int = 10,
        max_known: int = 1024,
    ) -> None:
        if not instruments:
            raise ValueError("the order mix needs at least one instrument")
        if not (market >= 0 and cancel >= 0 and market + cancel < 1 and 0 <= cross <= 1):
            raise ValueError("market + cancel must leave room for limit orders")
        self.rng = random.Random(seed)
        self.instruments = tuple(instruments)
        self.decimals = price_decimals
        self.scale = 10**price_decimals
        # A tick of 0.01 (or of the smallest unit the config allows, if coarser)
        # keeps prices near the mid whatever price_decimals is.
        self.tick = max(1, self.scale // 100)
        self.mid = mid * self.scale
        self.cross = cross
        self.market = market
        self.cancel = cancel
        self.depth = depth
        self.max_known = max_known
        self.known: list[int] = []  # open order ids of this client, from ok replies

    def price(self, ticks: int) -> str:
        if self.decimals == 0:
            return str(ticks)
        whole, frac = divmod(ticks, self.scale)
        return f"{whole}.{frac:0{self.decimals}d}"

    def next_body(self) -> dict[str, Any]:
        rng = self.rng
        r = rng.random()
        if r < self.cancel and self.known:
            i = rng.randrange(len(self.known))
            self.known[i], self.known[-1] = self.known[-1], self.known[i]
            return {"op": "cancel", "order_id": self.known.pop()}
        instrument = rng.choice(self.instruments)
        side = rng.choice(("buy", "sell"))
        if r >= 1.0 - self.market:
            qty = rng.randint(1, 10) * 10
            return {
                "op": "new",
                "instrument": instrument,
                "side": side,
                "type": "market",
                "qty": qty,
            }
        sign = 1 if side == "buy" else -1
        # Aggressive orders reach through the mid into the other side's resting
        # levels; passive ones rest on their own side of it.
        aggressive = rng.random() < self.cross
        offset = rng.randint(1, 3) if aggressive else -rng.randint(1, self.depth)
        ticks = self.mid + sign * offset * self.tick
        return {
            "op": "new",
            "instrument": instrument,
            "side": side,
            "type": "limit",
            "qty": rng.randint(1, 20) * 10,
            "price": self.price(ticks),
        }

    def on_ok(self, body: dict[str, Any], result: dict[str, Any]) -> None:
        """Remember an order that is still open after its ok reply, for a later cancel."""
        if body.get("op") != "new" or result.get("status") not in OPEN_STATUSES:
            return
        oid = result.get("order_id")
        if not isinstance(oid, int):
            return
        if len(self.known) >= self.max_known:
            self.known[self.rng.randrange(len(self.known))] = oid
        else:
            self.known.append(oid)
