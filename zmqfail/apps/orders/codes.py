"""The order engine's reject codes and the small helpers its modules share.

The reject codes are part of the client-facing contract (clients branch on
them), so they live in one place and never change meaning.
"""

from __future__ import annotations

from typing import Any

BAD_REQUEST = "bad_request"
UNKNOWN_INSTRUMENT = "unknown_instrument"
BAD_QUANTITY = "bad_quantity"
BAD_PRICE = "bad_price"
UNKNOWN_ORDER = "unknown_order"
NOT_OWNER = "not_owner"
ORDER_CLOSED = "order_closed"
REJECT_CODES = frozenset(
    {
        BAD_REQUEST,
        UNKNOWN_INSTRUMENT,
        BAD_QUANTITY,
        BAD_PRICE,
        UNKNOWN_ORDER,
        NOT_OWNER,
        ORDER_CLOSED,
    }
)

# Order statuses in which an order still rests on the book.
OPEN = frozenset(("new", "partially_filled"))

# Fields of an order row (a list, replaced whole, never mutated in place). The
# matching loop indexes rows with literals for speed; everything else names them.
O_ID, O_CLIENT, O_INSTRUMENT, O_SIDE, O_TYPE, O_PRICE, O_QTY, O_FILLED, O_STATUS = range(9)
ORDER_FIELDS = 9


def int_field(body: dict[str, Any], key: str, default: int | None = None) -> int | None:
    """The field if it is a true int (msgpack has bools, and bool is an int)."""
    v = body.get(key, default)
    return v if type(v) is int else None
