"""The order book of one instrument side: an index over the open orders.

The book holds no data of its own (quantities live in the orders table), only
where each open order sits: price levels, each a FIFO of order ids. It can
therefore always be rebuilt from the open orders taken in order-id order,
because order ids are handed out in arrival order and an order enters the book
only once, when it is created.

Layout, chosen for the matching loop: ``levels`` maps a price to a dict used as
an insertion-ordered set of order ids (O(1) append, O(1) removal anywhere, for
cancels); ``keys`` is the sorted list of prices multiplied by ``sign`` (+1 for
bids, -1 for asks), so that on both sides the best price is the *last*
element: the common case, consuming the best level, is a ``list.pop()``.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator

BID = 1
ASK = -1


class BookSide:
    __slots__ = ("keys", "levels", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign
        self.keys: list[int] = []
        self.levels: dict[int, dict[int, None]] = {}

    def add(self, price: int, order_id: int) -> None:
        level = self.levels.get(price)
        if level is None:
            level = self.levels[price] = {}
            insort(self.keys, price * self.sign)
        level[order_id] = None

    def remove(self, price: int, order_id: int) -> None:
        level = self.levels[price]
        del level[order_id]
        if not level:
            del self.levels[price]
            key = price * self.sign
            keys = self.keys
            if keys[-1] == key:
                keys.pop()
            else:
                del keys[bisect_left(keys, key)]

    def best(self) -> int | None:
        return self.keys[-1] * self.sign if self.keys else None

    def prices(self) -> Iterator[int]:
        """Prices best first."""
        sign = self.sign
        for key in reversed(self.keys):
            yield key * sign

    def __len__(self) -> int:
        return sum(len(level) for level in self.levels.values())


class Book:
    __slots__ = ("asks", "bids", "instrument")

    def __init__(self, instrument: str) -> None:
        self.instrument = instrument
        self.bids = BookSide(BID)
        self.asks = BookSide(ASK)

    def side(self, side: str) -> BookSide:
        return self.bids if side == "buy" else self.asks

    def opposite(self, side: str) -> BookSide:
        return self.asks if side == "buy" else self.bids
