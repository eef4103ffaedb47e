"""Snapshot, restore and digest of an engine's state.

The snapshot is plain msgpack-able data (lists, str-keyed dicts, ints, str,
None) so the checkpoint agent can write it as is. Containers whose order
matters (the closed-order eviction queue, each client's dedup window, each
report queue) are stored as lists in that order; everything else is sorted by
key, so equal states give equal snapshots. The books are not stored: they are
an index over the open orders and are rebuilt by inserting the open orders in
order-id (= arrival) order, which reproduces every level's FIFO.

The snapshot shares the (never mutated in place) order, execution and reply
values with the live engine: serialise it, do not edit it.

The digest hashes a canonical form of the whole state *including* the books,
with every map's keys sorted, so that it is independent of dict insertion
order, which a msgpack round trip or a restore is free to change.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import TYPE_CHECKING, Any

import msgpack

from zmqfail.engine.dedup import ClientDedup
from zmqfail.errors import ProtocolError

if TYPE_CHECKING:
    from zmqfail.engine.core import Engine

SNAPSHOT_FORMAT = 1
_OPEN = ("new", "partially_filled")


def snapshot(eng: Engine) -> dict[str, Any]:
    orders = eng.orders
    execs = eng.executions
    return {
        "format": SNAPSHOT_FORMAT,
        "price_decimals": eng.cfg.price_decimals,
        "next_order_id": eng.next_order_id,
        "next_exec_id": eng.next_exec_id,
        "reports_dropped": eng.reports_dropped,
        "orders": [orders[k] for k in sorted(orders)],
        "closed": list(eng.closed),
        "executions": [execs[k] for k in sorted(execs)],
        "dedup": [
            [cid, c.evicted, [[m, *c.replies[m]] for m in c.order]]
            for cid, c in sorted(eng.dedup.clients.items())
        ],
        "reports": [[cid, list(q)] for cid, q in sorted(eng.reports.items())],
    }


def load(eng: Engine, snap: dict[str, Any]) -> None:
    """Fill a fresh engine from a snapshot; ProtocolError if it is malformed."""
    try:
        _load(eng, snap)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"engine snapshot is malformed: {exc!r}") from None


def _load(eng: Engine, snap: dict[str, Any]) -> None:
    cfg = eng.cfg
    if snap.get("format") != SNAPSHOT_FORMAT:
        raise ProtocolError(f"unsupported engine snapshot format {snap.get('format')!r}")
    if snap["price_decimals"] != cfg.price_decimals:
        # Prices are stored in ticks: reading them with another scale would
        # silently change every price.
        raise ProtocolError(
            f"snapshot has price_decimals={snap['price_decimals']}, config has {cfg.price_decimals}"
        )
    eng.next_order_id = int(snap["next_order_id"])
    eng.next_exec_id = int(snap["next_exec_id"])
    eng.reports_dropped = int(snap["reports_dropped"])
    for raw in sorted(snap["orders"], key=lambda o: int(o[0])):
        order = list(raw)
        if len(order) != 9:
            raise ValueError(f"order {order!r:.100} has {len(order)} fields, not 9")
        oid = order[0]
        eng.orders[oid] = order
        if order[8] in _OPEN:
            book = eng.books.get(order[2])
            if book is None:
                raise ProtocolError(f"snapshot has open order {oid} on unknown {order[2]!r}")
            book.side(order[3]).add(order[5], oid)
    closed = deque(int(oid) for oid in snap["closed"])
    expected = {oid for oid, o in eng.orders.items() if o[8] not in _OPEN}
    if set(closed) != expected or len(closed) != len(expected):
        raise ProtocolError("snapshot's closed-order queue does not match its closed orders")
    while len(closed) > cfg.max_closed_orders:
        del eng.orders[closed.popleft()]
    eng.closed = closed
    floor = eng.next_exec_id - cfg.max_closed_orders
    for raw in snap["executions"]:
        if raw[0] >= floor:
            eng.executions[raw[0]] = list(raw)
    window = eng.dedup.window
    for cid, evicted, entries in snap["dedup"]:
        c = eng.dedup.clients[cid] = ClientDedup(int(evicted))
        for m, status, result in entries:
            c.order.append(m)
            c.replies[m] = (status, result)
        while len(c.order) > window:
            old = c.order.popleft()
            del c.replies[old]
            c.evicted = max(c.evicted, old)
    limit = cfg.max_reports_per_client
    for cid, items in snap["reports"]:
        if items:
            q = deque(items)
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
        _canon(snap["dedup"]),
        _canon(snap["reports"]),
    ]
    return hashlib.sha256(msgpack.packb(state, use_bin_type=True)).hexdigest()
