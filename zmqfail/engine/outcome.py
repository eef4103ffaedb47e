"""Value types the engine hands to the node: outcomes, dedup answers, reject codes.

They are frozen so that an outcome can be logged, replicated and replied with
from several places without anyone being able to change it underneath the
others. The reject codes are part of the client-facing contract, so they live
in one place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from zmqfail.protocol import STATUS_REJECTED

# Reject codes: clients branch on these, so they never change meaning.
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


@dataclass(frozen=True, slots=True)
class Outcome:
    """What executing one request would do, computed without touching the state.

    ``write`` False means a read-only query: the node neither logs nor applies
    it and the dedup table never sees it. A rejected write keeps ``write``
    True with no changes, so the log still records the refusal and a resend is
    answered from the dedup table with the same refusal.
    """

    write: bool
    status: str
    result: dict[str, Any]
    changes: list[Any]


class DedupKind(enum.Enum):
    HIT = "hit"  # processed before: answer with the stored reply
    MISS = "miss"  # never processed: go ahead
    STALE = "stale"  # older than what is still remembered: cannot tell, refuse


@dataclass(frozen=True, slots=True)
class DedupAnswer:
    """The dedup table's verdict; ``status``/``result`` are the stored reply on HIT.

    For MISS and STALE they are empty, never None, so a HIT's fields can be
    used without a check that the type system cannot tie to ``kind``.
    """

    kind: DedupKind
    status: str = ""
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def hit(self) -> bool:
        return self.kind is DedupKind.HIT

    @property
    def miss(self) -> bool:
        return self.kind is DedupKind.MISS

    @property
    def stale(self) -> bool:
        return self.kind is DedupKind.STALE


def reject(write: bool, code: str, message: str) -> Outcome:
    return Outcome(write, STATUS_REJECTED, {"code": code, "message": message}, [])


def int_field(body: dict[str, Any], key: str, default: int | None = None) -> int | None:
    """The field if it is a true int (msgpack has bools, and bool is an int)."""
    v = body.get(key, default)
    return v if type(v) is int else None


# Shared instances: MISS is the answer to nearly every request, so it is not
# allocated per call.
MISS = DedupAnswer(DedupKind.MISS)
STALE = DedupAnswer(DedupKind.STALE)
