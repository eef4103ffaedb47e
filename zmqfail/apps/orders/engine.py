"""The order-matching engine, a zmqfail application (``zmqfail.app``).

``execute`` computes what a request would do (reply plus a list of change
ops) without touching the state; ``apply`` performs those changes. The primary
calls both; a backup or a recovering node replays only ``apply`` with the
logged fields and ends in exactly the same state, because ``apply`` never
re-runs matching: each op states the new value outright. Nothing here reads a
clock or a random source; arrival order is the order id, handed out in
sequence.

State (all of it, and all of it in ``digest``):

* ``orders``: order id -> ``(order_id, client_id, instrument, side, type,
  price_ticks | None, qty, filled, status)``. Values are replaced, never
  mutated in place, so a change list and the tables may share them safely.
* ``books``: per instrument, bids and asks (``book.py``): an index of the open
  orders, rebuilt from ``orders`` on restore.
* ``executions``: exec id -> ``(exec_id, instrument, price_ticks, qty,
  taker_order_id, maker_order_id, taker_side)``.
* Rows (orders, executions, queued reports) are held as tuples, whatever
  sequence ``apply`` was given: a tuple of plain values drops out of the
  garbage collector's lists, which otherwise walk every row of a growing
  state over and over (a third of the request path's time, docs/benchmarks.md).
  The snapshot gives them back as lists.
* the per-client report queues, and the counters ``next_order_id``,
  ``next_exec_id``, ``reports_dropped``. (Client sessions and their stored
  replies belong to the framework, not to the engine.)

Change ops (msgpack arrays; ``apply`` accepts lists or tuples):

* ``["put", "orders", order_id, order]``: insert or replace an order. The book
  index follows from the status: a new open order joins the back of its price
  level, an order that becomes filled/cancelled leaves its level. An order id
  at or above ``next_order_id`` moves that counter past it (ids are handed
  out in sequence, so the record need not say so).
* ``["put", "executions", exec_id, execution]``, likewise for ``next_exec_id``.
* ``["push", "reports", client_id, report]``: queue one execution report,
  ``[exec_id, order_id, instrument, side, price_str, qty, remaining]`` (an
  array, not a map: it is logged twice per fill; the reports op turns it into
  a map).
* ``["pop", "reports", client_id, n]``: drop the n oldest reports (delivered).

Retention, so that state stays bounded in a long run. These are policies of
``apply`` itself, a pure function of state and config, so every replica with
the same ``OrdersConfig`` evicts the same entries without the log saying so:

* Closed orders are kept in closing order; beyond ``max_closed_orders`` the
  oldest-closed one is deleted (a status query for it then says
  ``unknown_order``). Open orders are never evicted.
* Executions: only the ``max_closed_orders`` most recent exec ids are kept.
* Report queues: at most ``max_reports_per_client`` per client; pushing onto a
  full queue drops its oldest report and counts it in ``reports_dropped``. An
  emptied queue is deleted.

``remaining`` in replies is the quantity still working on the book: 0 once an
order is filled or cancelled (the cancelled part is ``qty - filled``).
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Any

from zmqfail.app import Description, Outcome, reject
from zmqfail.apps.orders import persist, queries
from zmqfail.apps.orders.book import Book
from zmqfail.apps.orders.codes import (
    BAD_PRICE,
    BAD_QUANTITY,
    BAD_REQUEST,
    NOT_OWNER,
    OPEN,
    ORDER_CLOSED,
    UNKNOWN_INSTRUMENT,
    UNKNOWN_ORDER,
    int_field,
)
from zmqfail.apps.orders.prices import PriceCodec
from zmqfail.apps.orders.settings import OrdersConfig
from zmqfail.errors import ProtocolError
from zmqfail.protocol import STATUS_OK

MAX_QTY = 1_000_000_000
DEFAULT_REPORTS = 100
MAX_REPORTS = 10_000


class Engine:
    def __init__(self, cfg: OrdersConfig) -> None:
        self.cfg = cfg
        self.prices = PriceCodec(cfg.price_decimals)
        self.orders: dict[int, tuple[Any, ...]] = {}
        self.books: dict[str, Book] = {s: Book(s) for s in cfg.instruments}
        self.executions: dict[int, tuple[Any, ...]] = {}
        self.closed: deque[int] = deque()  # closed order ids, oldest-closed first
        self.reports: dict[str, deque[tuple[Any, ...]]] = {}
        self.next_order_id = 1
        self.next_exec_id = 1
        self.reports_dropped = 0
        self._max_closed = cfg.max_closed_orders
        self._max_reports = cfg.max_reports_per_client

    # ------------------------------------------------------------ execute

    def execute(self, client_id: str, body: dict[str, Any]) -> Outcome:
        op = body.get("op") if isinstance(body, dict) else None
        if op == "new":
            return self._new(client_id, body)
        if op == "cancel":
            return self._cancel(client_id, body)
        if op == "reports":
            return self._drain(client_id, body)
        if op == "status":
            return queries.status(self, body)
        if op == "book":
            return queries.book(self, body)
        # Not logged: the answer depends on nothing in the state, so a resend
        # gets the same refusal without the stored replies' help.
        return reject(False, BAD_REQUEST, f"unknown op {op!r}")

    def _new(self, client_id: str, body: dict[str, Any]) -> Outcome:
        get = body.get
        instrument = get("instrument")
        if not isinstance(instrument, str):
            return reject(True, BAD_REQUEST, "instrument must be a string")
        book = self.books.get(instrument)
        if book is None:
            return reject(True, UNKNOWN_INSTRUMENT, f"unknown instrument {instrument!r}")
        side = get("side")
        if side == "buy":
            opp = book.asks
        elif side == "sell":
            opp = book.bids
        else:
            return reject(True, BAD_REQUEST, "side must be 'buy' or 'sell'")
        otype = get("type")
        qty = get("qty")
        if type(qty) is not int:
            return reject(True, BAD_REQUEST, "qty must be an integer")
        if not 0 < qty <= MAX_QTY:
            return reject(True, BAD_QUANTITY, f"qty must be within 1..{MAX_QTY}")
        raw_price = get("price")
        limit: int | None
        if otype == "limit":
            if not isinstance(raw_price, str):
                return reject(True, BAD_REQUEST, "a limit order needs a price string")
            limit = self.prices.parse(raw_price)
            if limit is None:
                return reject(
                    True,
                    BAD_PRICE,
                    f"price must be a positive decimal with at most "
                    f"{self.prices.decimals} decimals, got {raw_price!r}",
                )
        elif otype == "market":
            if raw_price is not None:
                return reject(True, BAD_REQUEST, "a market order takes no price")
            limit = None
        else:
            return reject(True, BAD_REQUEST, "type must be 'limit' or 'market'")

        oid = self.next_order_id
        changes: list[Any] = []
        fills: list[dict[str, Any]] = []
        remaining = qty
        keys = opp.keys
        sign = opp.sign
        # Keys are prices times the side's sign, best last: the order reaches
        # every level whose key is at least its floor (a market order: all).
        if keys and (limit is None or keys[-1] >= limit * sign):
            # Inlined rather than a method: this loop is the hot path.
            floor = keys[0] if limit is None else limit * sign
            orders = self.orders
            levels = opp.levels
            fmt = self.prices.format
            eid = self.next_exec_id
            i = len(keys) - 1
            while remaining and i >= 0 and keys[i] >= floor:
                price = keys[i] * sign
                pstr = fmt(price)
                for moid in levels[price]:
                    m = orders[moid]
                    mqty = m[6]
                    avail = mqty - m[7]
                    q = avail if avail < remaining else remaining
                    mfilled = m[7] + q
                    remaining -= q
                    mleft = mqty - mfilled
                    mstatus = "partially_filled" if mleft else "filled"
                    mclient = m[1]
                    maker = (moid, mclient, instrument, m[3], m[4], price, mqty, mfilled, mstatus)
                    changes.append(["put", "orders", moid, maker])
                    changes.append(
                        ["put", "executions", eid, (eid, instrument, price, q, oid, moid, side)]
                    )
                    changes.append(
                        ["push", "reports", client_id,
                         (eid, oid, instrument, side, pstr, q, remaining)]
                    )  # fmt: skip
                    changes.append(
                        ["push", "reports", mclient,
                         (eid, moid, instrument, m[3], pstr, q, mleft)]
                    )  # fmt: skip
                    fills.append({"exec_id": eid, "price": pstr, "qty": q, "maker_order_id": moid})
                    eid += 1
                    if not remaining:
                        break
                i -= 1
        filled = qty - remaining
        if not remaining:
            status = "filled"
        elif limit is None:
            status = "cancelled"  # market orders are immediate-or-cancel
        else:
            status = "partially_filled" if filled else "new"
        order = (oid, client_id, instrument, side, otype, limit, qty, filled, status)
        changes.append(["put", "orders", oid, order])
        result = {
            "order_id": oid,
            "status": status,
            "filled": filled,
            "remaining": 0 if status == "filled" or status == "cancelled" else remaining,
            "fills": fills,
        }
        return Outcome(True, STATUS_OK, result, changes)

    def _cancel(self, client_id: str, body: dict[str, Any]) -> Outcome:
        oid = int_field(body, "order_id")
        if oid is None:
            return reject(True, BAD_REQUEST, "order_id must be an integer")
        o = self.orders.get(oid)
        if o is None:
            return reject(True, UNKNOWN_ORDER, f"no order {oid}")
        if o[1] != client_id:
            return reject(True, NOT_OWNER, f"order {oid} belongs to another client")
        if o[8] not in OPEN:
            return reject(True, ORDER_CLOSED, f"order {oid} is already {o[8]}")
        new = (*o[:8], "cancelled")
        result = {"order_id": oid, "status": "cancelled", "cancelled_qty": o[6] - o[7]}
        return Outcome(True, STATUS_OK, result, [["put", "orders", oid, new]])

    def _drain(self, client_id: str, body: dict[str, Any]) -> Outcome:
        n = int_field(body, "max", DEFAULT_REPORTS)
        if n is None or not 1 <= n <= MAX_REPORTS:
            return reject(True, BAD_REQUEST, f"max must be an integer within 1..{MAX_REPORTS}")
        q = self.reports.get(client_id)
        if not q:
            return Outcome(True, STATUS_OK, {"reports": []}, [])
        items = [
            {
                "exec_id": r[0],
                "order_id": r[1],
                "instrument": r[2],
                "side": r[3],
                "price": r[4],
                "qty": r[5],
                "remaining": r[6],
            }
            for r in islice(q, n)
        ]
        changes: list[Any] = [["pop", "reports", client_id, len(items)]]
        return Outcome(True, STATUS_OK, {"reports": items}, changes)

    # -------------------------------------------------------------- apply

    def apply(self, changes: list[Any]) -> None:
        """Perform logged changes. Trusts its input: it came from ``execute``.

        An op it does not know raises ProtocolError; the node must treat that
        as fatal, since the state may be half-updated.
        """
        orders = self.orders
        for ch in changes:
            op = ch[0]
            table = ch[1]
            # The common ops are inlined: apply runs on every node for every
            # write. tuple() of a tuple (the primary's rows) is that tuple.
            if op == "put":
                if table == "orders":
                    oid = ch[2]
                    order = tuple(ch[3])
                    prev = orders.get(oid)
                    orders[oid] = order
                    if prev is None and oid >= self.next_order_id:
                        self.next_order_id = oid + 1
                    if order[8] in OPEN:
                        if prev is None:
                            book = self.books[order[2]]
                            (book.bids if order[3] == "buy" else book.asks).add(order[5], oid)
                    elif prev is None or prev[8] in OPEN:
                        if prev is not None and prev[5] is not None:
                            book = self.books[prev[2]]
                            (book.bids if prev[3] == "buy" else book.asks).remove(prev[5], oid)
                        closed = self.closed
                        closed.append(oid)
                        if len(closed) > self._max_closed:
                            orders.pop(closed.popleft(), None)
                    continue
                if table == "executions":
                    eid = ch[2]
                    executions = self.executions
                    executions[eid] = tuple(ch[3])
                    if eid >= self.next_exec_id:
                        self.next_exec_id = eid + 1
                    # Exec ids are consecutive, so "the N most recent" is an id range.
                    executions.pop(eid - self._max_closed, None)
                    continue
            elif op == "push" and table == "reports":
                cid = ch[2]
                q = self.reports.get(cid)
                if q is None:
                    q = self.reports[cid] = deque()
                elif len(q) >= self._max_reports:
                    q.popleft()
                    self.reports_dropped += 1
                q.append(tuple(ch[3]))
                continue
            elif op == "pop" and table == "reports":
                self._pop_reports(ch[2], ch[3])
                continue
            raise ProtocolError(f"unknown change op: {ch!r:.200}")

    def _pop_reports(self, client_id: str, n: int) -> None:
        q = self.reports.get(client_id)
        if q is None:
            return
        for _ in range(min(n, len(q))):
            q.popleft()
        if not q:
            del self.reports[client_id]

    # -------------------------------------------------------- persistence

    def snapshot(self) -> dict[str, Any]:
        return persist.snapshot(self)

    def restore(self, snap: dict[str, Any]) -> None:
        persist.load(self, snap)

    def digest(self) -> str:
        return persist.digest(self)

    def describe(self) -> Description:
        return Description(
            tables={"orders": len(self.orders), "executions": len(self.executions)},
            queues={"reports": sum(len(q) for q in self.reports.values())},
            stats=self.stats(),
        )

    def check(self) -> list[str]:
        return persist.check(self)

    def stats(self) -> dict[str, int]:
        return {
            "open_orders": len(self.orders) - len(self.closed),
            "orders": len(self.orders),
            "closed_orders": len(self.closed),
            "executions": len(self.executions),
            "report_clients": len(self.reports),
            "queued_reports": sum(len(q) for q in self.reports.values()),
            "reports_dropped": self.reports_dropped,
            "next_order_id": self.next_order_id,
            "next_exec_id": self.next_exec_id,
        }
