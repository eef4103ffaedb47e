"""Snapshot, restore, digest and invariant check of the order engine's state.

The snapshot is plain msgpack-able data (lists, str-keyed dicts, ints, str,
None) so the checkpoint agent can write it as is. Containers whose order
matters (the closed-order eviction queue, each report queue) are stored as
lists in that order; everything else is sorted by key, so equal states give
equal snapshots. The books are not stored: they are an index over the open
orders and are rebuilt by inserting the open orders in order-id (= arrival)
order, which reproduces every level's FIFO.

The engine holds its rows as tuples (engine.py says why); the snapshot gives
them as lists, what msgpack gives back, so a snapshot and its round trip
compare equal. Restoring makes them tuples again.

The digest hashes a canonical form of the whole state *including* the books,
with every map's keys sorted, so that it is independent of dict insertion
order, which a msgpack round trip or a restore is free to change.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from zmqfail.app import digest_of
from zmqfail.apps.orders.codes import (
    O_CLIENT,
    O_FILLED,
    O_ID,
    O_INSTRUMENT,
    O_PRICE,
    O_QTY,
    O_SIDE,
    O_STATUS,
    OPEN,
    ORDER_FIELDS,
)
from zmqfail.errors import ProtocolError

if TYPE_CHECKING:
    from zmqfail.apps.orders.engine import Engine

# 2: the dedup table left the engine for the framework's sessions.
SNAPSHOT_FORMAT = 2


def snapshot(eng: Engine) -> dict[str, Any]:
    orders = eng.orders
    execs = eng.executions
    return {
        "format": SNAPSHOT_FORMAT,
        "price_decimals": eng.cfg.price_decimals,
        "next_order_id": eng.next_order_id,
        "next_exec_id": eng.next_exec_id,
        "reports_dropped": eng.reports_dropped,
        "orders": [list(orders[k]) for k in sorted(orders)],
        "closed": list(eng.closed),
        "executions": [list(execs[k]) for k in sorted(execs)],
        "reports": [[cid, [list(r) for r in q]] for cid, q in sorted(eng.reports.items())],
    }


def load(eng: Engine, snap: dict[str, Any]) -> None:
    """Fill a fresh engine from a snapshot; ProtocolError if it is malformed."""
    try:
        _load(eng, snap)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"order engine snapshot is malformed: {exc!r}") from None


def _load(eng: Engine, snap: dict[str, Any]) -> None:
    cfg = eng.cfg
    if snap.get("format") != SNAPSHOT_FORMAT:
        raise ProtocolError(f"unsupported order engine snapshot format {snap.get('format')!r}")
    if snap["price_decimals"] != cfg.price_decimals:
        # Prices are stored in ticks: reading them with another scale would
        # silently change every price.
        raise ProtocolError(
            f"snapshot has price_decimals={snap['price_decimals']}, config has {cfg.price_decimals}"
        )
    eng.next_order_id = int(snap["next_order_id"])
    eng.next_exec_id = int(snap["next_exec_id"])
    eng.reports_dropped = int(snap["reports_dropped"])
    for raw in sorted(snap["orders"], key=lambda o: int(o[O_ID])):
        order = tuple(raw)
        if len(order) != ORDER_FIELDS:
            raise ValueError(f"order {order!r:.100} has {len(order)} fields, not {ORDER_FIELDS}")
        oid = order[O_ID]
        eng.orders[oid] = order
        if order[O_STATUS] in OPEN:
            book = eng.books.get(order[O_INSTRUMENT])
            if book is None:
                raise ProtocolError(
                    f"snapshot has open order {oid} on unknown {order[O_INSTRUMENT]!r}"
                )
            book.side(order[O_SIDE]).add(order[O_PRICE], oid)
    closed = deque(int(oid) for oid in snap["closed"])
    expected = {oid for oid, o in eng.orders.items() if o[O_STATUS] not in OPEN}
    if set(closed) != expected or len(closed) != len(expected):
        raise ProtocolError("snapshot's closed-order queue does not match its closed orders")
    while len(closed) > cfg.max_closed_orders:
        del eng.orders[closed.popleft()]
    eng.closed = closed
    floor = eng.next_exec_id - cfg.max_closed_orders
    for raw in snap["executions"]:
        if raw[0] >= floor:
            eng.executions[raw[0]] = tuple(raw)
    limit = cfg.max_reports_per_client
    for cid, items in snap["reports"]:
        if items:
            q = deque(tuple(r) for r in items)
            while len(q) > limit:
                q.popleft()
                eng.reports_dropped += 1
            eng.reports[cid] = q


def _canon(obj: Any) -> Any:
    """Maps rebuilt with sorted keys (msgpack keeps insertion order), recursively."""
    if isinstance(obj, dict):
        return {k: _canon(obj[k]) for k in sorted(obj, key=lambda k: (isinstance(k, str), k))}
    if isinstance(obj, list | tuple):
        return [_canon(v) for v in obj]
    return obj


def digest(eng: Engine) -> str:
    books = [
        [
            name,
            [[p, list(b.bids.levels[p])] for p in b.bids.prices()],
            [[p, list(b.asks.levels[p])] for p in b.asks.prices()],
        ]
        for name, b in sorted(eng.books.items())
    ]
    snap = snapshot(eng)
    state = [
        SNAPSHOT_FORMAT,
        snap["next_order_id"],
        snap["next_exec_id"],
        snap["reports_dropped"],
        snap["orders"],
        snap["closed"],
        snap["executions"],
        books,
        _canon(snap["reports"]),
    ]
    return digest_of(state)


def check(eng: Engine) -> list[str]:
    """The book is an exact, uncrossed, FIFO index of the open orders."""
    bad: list[str] = []
    in_books: set[int] = set()
    for book in eng.books.values():
        bid, ask = book.bids.best(), book.asks.best()
        if bid is not None and ask is not None and bid >= ask:
            bad.append(f"{book.instrument}: crossed book, bid {bid} >= ask {ask}")
        for bside, side in ((book.bids, "buy"), (book.asks, "sell")):
            for price, level in bside.levels.items():
                if not level:
                    bad.append(f"{book.instrument} {side} {price}: empty level left behind")
                if list(level) != sorted(level):
                    bad.append(f"{book.instrument} {side} {price}: FIFO is not arrival order")
                for oid in level:
                    in_books.add(oid)
                    o = eng.orders.get(oid)
                    if o is None or (o[O_INSTRUMENT], o[O_SIDE], o[O_PRICE]) != (
                        book.instrument,
                        side,
                        price,
                    ):
                        bad.append(f"order {oid} sits on the wrong level or is gone")
                    elif o[O_STATUS] not in OPEN or not 0 <= o[O_FILLED] < o[O_QTY]:
                        bad.append(f"order {oid} is on the book but not open: {o!r:.100}")
    open_ids = {o[O_ID] for o in eng.orders.values() if o[O_STATUS] in OPEN}
    if open_ids != in_books:
        bad.append(f"open orders and book differ: {sorted(open_ids ^ in_books)[:10]}")
    owners = {o[O_CLIENT] for o in eng.orders.values()}
    if "" in owners:
        bad.append("an order has no owner")
    return bad
