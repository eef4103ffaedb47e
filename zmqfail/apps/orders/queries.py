"""Read-only queries: order status and book depth.

They are answered from the current state and never logged, so they live apart
from the write path; a rejection here is a plain reply with ``write`` False.
"""

from __future__ import annotations

from itertools import islice
from typing import TYPE_CHECKING, Any

from zmqfail.app import Outcome, answer, reject
from zmqfail.apps.orders.codes import (
    BAD_REQUEST,
    O_CLIENT,
    O_FILLED,
    O_INSTRUMENT,
    O_PRICE,
    O_QTY,
    O_SIDE,
    O_STATUS,
    O_TYPE,
    OPEN,
    UNKNOWN_INSTRUMENT,
    UNKNOWN_ORDER,
    int_field,
)

if TYPE_CHECKING:
    from zmqfail.apps.orders.engine import Engine

DEFAULT_DEPTH = 10
MAX_DEPTH = 1000


def status(eng: Engine, body: dict[str, Any]) -> Outcome:
    oid = int_field(body, "order_id")
    if oid is None:
        return reject(False, BAD_REQUEST, "order_id must be an integer")
    o = eng.orders.get(oid)
    if o is None:
        return reject(False, UNKNOWN_ORDER, f"no order {oid}")
    price = o[O_PRICE]
    result = {
        "order_id": oid,
        "client_id": o[O_CLIENT],
        "instrument": o[O_INSTRUMENT],
        "side": o[O_SIDE],
        "type": o[O_TYPE],
        "price": None if price is None else eng.prices.format(price),
        "qty": o[O_QTY],
        "filled": o[O_FILLED],
        "remaining": o[O_QTY] - o[O_FILLED] if o[O_STATUS] in OPEN else 0,
        "status": o[O_STATUS],
    }
    return answer(result)


def book(eng: Engine, body: dict[str, Any]) -> Outcome:
    instrument = body.get("instrument")
    if not isinstance(instrument, str):
        return reject(False, BAD_REQUEST, "instrument must be a string")
    book = eng.books.get(instrument)
    if book is None:
        return reject(False, UNKNOWN_INSTRUMENT, f"unknown instrument {instrument!r}")
    depth = int_field(body, "depth", DEFAULT_DEPTH)
    if depth is None or not 1 <= depth <= MAX_DEPTH:
        return reject(False, BAD_REQUEST, f"depth must be an integer within 1..{MAX_DEPTH}")
    orders = eng.orders
    fmt = eng.prices.format
    out: dict[str, Any] = {"instrument": instrument}
    for name, bside in (("bids", book.bids), ("asks", book.asks)):
        rows = []
        for price in islice(bside.prices(), depth):
            level = bside.levels[price]
            total = 0
            for oid in level:
                o = orders[oid]
                total += o[O_QTY] - o[O_FILLED]
            rows.append([fmt(price), total, len(level)])
        out[name] = rows
    return answer(out)
