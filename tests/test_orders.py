"""Behaviour of the order engine application, seen through execute/apply as the
node uses it.

Every write goes through a primary engine and, after a msgpack round trip,
through a replica that only calls apply(), so each test also checks that the
logged changes reproduce the primary's state.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from zmqfail.app import Outcome
from zmqfail.apps.orders import REJECT_CODES, Engine, OrdersConfig
from zmqfail.errors import ProtocolError
from zmqfail.protocol import STATUS_OK, STATUS_REJECTED

pytestmark = pytest.mark.timeout(30)


def roundtrip(obj: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False, strict_map_key=False)


class Cluster:
    """A primary and a replica fed only with apply(), like a backup."""

    def __init__(self, cfg: OrdersConfig | None = None) -> None:
        self.cfg = cfg or OrdersConfig()
        self.primary = Engine(self.cfg)
        self.replica = Engine(self.cfg)

    def send(self, client: str, body: dict[str, Any]) -> Outcome:
        out = self.primary.execute(client, body)
        if out.write:
            self.primary.apply(out.changes)
            self.replica.apply(roundtrip(out.changes))
        return out

    def ok(self, client: str, body: dict[str, Any]) -> dict[str, Any]:
        out = self.send(client, body)
        assert out.status == STATUS_OK, out.result
        return out.result

    def new(
        self, client: str, side: str, qty: int, price: str | None = None, instrument: str = "ABC"
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "op": "new",
            "instrument": instrument,
            "side": side,
            "type": "market" if price is None else "limit",
            "qty": qty,
        }
        if price is not None:
            body["price"] = price
        return self.ok(client, body)

    def book(self, instrument: str = "ABC", depth: int = 10) -> dict[str, Any]:
        return self.ok("viewer", {"op": "book", "instrument": instrument, "depth": depth})

    def status(self, order_id: int) -> dict[str, Any]:
        return self.ok("viewer", {"op": "status", "order_id": order_id})

    def check_replica(self) -> None:
        assert self.replica.digest() == self.primary.digest()
        assert self.replica.stats() == self.primary.stats()


@pytest.fixture
def cl() -> Cluster:
    return Cluster()


# ------------------------------------------------------------------ matching


def test_limit_order_rests_when_nothing_crosses(cl: Cluster) -> None:
    r = cl.new("a", "buy", 10, "9.50")
    assert r == {"order_id": 1, "status": "new", "filled": 0, "remaining": 10, "fills": []}
    cl.new("b", "sell", 5, "10.00")
    assert cl.book() == {
        "instrument": "ABC",
        "bids": [["9.50", 10, 1]],
        "asks": [["10.00", 5, 1]],
    }
    cl.check_replica()


def test_buy_at_best_ask_trades(cl: Cluster) -> None:
    maker = cl.new("a", "sell", 10, "10.00")["order_id"]
    r = cl.new("b", "buy", 10, "10.00")
    assert r["status"] == "filled"
    assert r["filled"] == 10 and r["remaining"] == 0
    assert r["fills"] == [{"exec_id": 1, "price": "10.00", "qty": 10, "maker_order_id": maker}]
    assert cl.status(maker)["status"] == "filled"
    assert cl.book() == {"instrument": "ABC", "bids": [], "asks": []}
    cl.check_replica()


def test_trade_happens_at_the_makers_price(cl: Cluster) -> None:
    cl.new("a", "sell", 5, "10.00")
    r = cl.new("b", "buy", 5, "11.25")
    assert [f["price"] for f in r["fills"]] == ["10.00"]
    cl.new("a", "buy", 5, "9.00")
    r = cl.new("b", "sell", 5, "8.00")
    assert [f["price"] for f in r["fills"]] == ["9.00"]
    cl.check_replica()


def test_sell_below_best_bid_trades_and_buy_below_ask_does_not(cl: Cluster) -> None:
    cl.new("a", "sell", 5, "10.00")
    r = cl.new("b", "buy", 5, "9.99")
    assert r["status"] == "new" and r["fills"] == []
    r = cl.new("c", "sell", 2, "9.00")
    assert r["status"] == "filled"
    assert r["fills"][0]["price"] == "9.99"
    cl.check_replica()


def test_partial_fill_of_the_taker_rests_the_remainder(cl: Cluster) -> None:
    cl.new("a", "sell", 4, "10.00")
    r = cl.new("b", "buy", 10, "10.00")
    assert r["status"] == "partially_filled"
    assert (r["filled"], r["remaining"]) == (4, 6)
    st = cl.status(r["order_id"])
    assert st["status"] == "partially_filled" and st["remaining"] == 6 and st["filled"] == 4
    assert cl.book()["bids"] == [["10.00", 6, 1]]
    assert cl.book()["asks"] == []
    cl.check_replica()


def test_partial_fill_of_the_maker_keeps_it_on_the_book(cl: Cluster) -> None:
    maker = cl.new("a", "sell", 10, "10.00")["order_id"]
    r = cl.new("b", "buy", 3, "10.00")
    assert r["status"] == "filled"
    st = cl.status(maker)
    assert (st["status"], st["filled"], st["remaining"]) == ("partially_filled", 3, 7)
    assert cl.book()["asks"] == [["10.00", 7, 1]]
    r = cl.new("c", "buy", 7, "10.00")
    assert r["fills"][0]["maker_order_id"] == maker
    assert cl.status(maker)["status"] == "filled"
    cl.check_replica()


def test_price_priority_best_price_first(cl: Cluster) -> None:
    worse = cl.new("a", "sell", 5, "10.20")["order_id"]
    best = cl.new("a", "sell", 5, "10.00")["order_id"]
    mid = cl.new("a", "sell", 5, "10.10")["order_id"]
    r = cl.new("b", "buy", 12, "10.20")
    assert [(f["maker_order_id"], f["price"], f["qty"]) for f in r["fills"]] == [
        (best, "10.00", 5),
        (mid, "10.10", 5),
        (worse, "10.20", 2),
    ]
    bids = [cl.new("c", "buy", 1, p)["order_id"] for p in ("9.00", "9.50", "9.25")]
    r = cl.new("d", "sell", 3, "9.00")
    assert [f["maker_order_id"] for f in r["fills"]] == [bids[1], bids[2], bids[0]]
    cl.check_replica()


def test_time_priority_at_the_same_price(cl: Cluster) -> None:
    first = cl.new("a", "buy", 5, "10.00")["order_id"]
    second = cl.new("b", "buy", 5, "10.00")["order_id"]
    third = cl.new("c", "buy", 5, "10.00")["order_id"]
    r = cl.new("d", "sell", 7, "10.00")
    assert [(f["maker_order_id"], f["qty"]) for f in r["fills"]] == [(first, 5), (second, 2)]
    r = cl.new("d", "sell", 5, "10.00")
    assert [(f["maker_order_id"], f["qty"]) for f in r["fills"]] == [(second, 3), (third, 2)]
    cl.check_replica()


def test_limit_stops_at_its_price_and_rests(cl: Cluster) -> None:
    cl.new("a", "sell", 5, "10.00")
    cl.new("a", "sell", 5, "10.50")
    r = cl.new("b", "buy", 8, "10.20")
    assert (r["status"], r["filled"], r["remaining"]) == ("partially_filled", 5, 3)
    assert cl.book() == {
        "instrument": "ABC",
        "bids": [["10.20", 3, 1]],
        "asks": [["10.50", 5, 1]],
    }
    cl.check_replica()


def test_instruments_are_separate_books(cl: Cluster) -> None:
    cl.new("a", "sell", 5, "10.00", instrument="ABC")
    r = cl.new("b", "buy", 5, "10.00", instrument="XYZ")
    assert r["status"] == "new"
    assert cl.book("XYZ")["bids"] == [["10.00", 5, 1]]
    assert cl.book("ABC")["bids"] == []


def test_market_order_fills_what_it_can_and_cancels_the_rest(cl: Cluster) -> None:
    cl.new("a", "sell", 3, "10.00")
    cl.new("a", "sell", 4, "11.00")
    r = cl.new("b", "buy", 10)
    assert (r["status"], r["filled"], r["remaining"]) == ("cancelled", 7, 0)
    assert [(f["price"], f["qty"]) for f in r["fills"]] == [("10.00", 3), ("11.00", 4)]
    assert cl.book() == {"instrument": "ABC", "bids": [], "asks": []}
    st = cl.status(r["order_id"])
    assert st["type"] == "market" and st["price"] is None and st["status"] == "cancelled"
    cl.check_replica()


def test_market_order_fully_filled(cl: Cluster) -> None:
    cl.new("a", "buy", 10, "10.00")
    r = cl.new("b", "sell", 4)
    assert (r["status"], r["filled"], r["remaining"]) == ("filled", 4, 0)
    assert cl.book()["bids"] == [["10.00", 6, 1]]


def test_market_order_on_empty_side_is_cancelled_not_rejected(cl: Cluster) -> None:
    cl.new("a", "buy", 10, "10.00")  # same side: irrelevant to a market buy
    out = cl.send(
        "b", {"op": "new", "instrument": "ABC", "side": "buy", "type": "market", "qty": 5}
    )
    assert out.write and out.status == STATUS_OK
    assert out.result["status"] == "cancelled"
    assert (out.result["filled"], out.result["remaining"], out.result["fills"]) == (0, 0, [])
    assert cl.book()["bids"] == [["10.00", 10, 1]]
    cl.check_replica()


def test_self_trade_is_allowed_and_reported_twice(cl: Cluster) -> None:
    cl.new("a", "sell", 5, "10.00")
    r = cl.new("a", "buy", 5, "10.00")
    assert r["status"] == "filled"
    reports = cl.ok("a", {"op": "reports"})["reports"]
    assert len(reports) == 2


# ------------------------------------------------------------------- cancel


def test_cancel_by_owner_removes_it_from_the_book(cl: Cluster) -> None:
    oid = cl.new("a", "buy", 10, "10.00")["order_id"]
    cl.new("b", "sell", 4, "10.00")
    r = cl.ok("a", {"op": "cancel", "order_id": oid})
    assert r == {"order_id": oid, "status": "cancelled", "cancelled_qty": 6}
    assert cl.book()["bids"] == []
    st = cl.status(oid)
    assert (st["status"], st["filled"], st["remaining"]) == ("cancelled", 4, 0)
    r2 = cl.new("c", "sell", 1, "9.00")
    assert r2["status"] == "new"  # nothing left to match against
    cl.check_replica()


def test_cancel_from_the_middle_of_a_level_keeps_fifo(cl: Cluster) -> None:
    ids = [cl.new(c, "sell", 1, "10.00")["order_id"] for c in "abc"]
    cl.ok("b", {"op": "cancel", "order_id": ids[1]})
    assert cl.book()["asks"] == [["10.00", 2, 2]]
    r = cl.new("d", "buy", 2, "10.00")
    assert [f["maker_order_id"] for f in r["fills"]] == [ids[0], ids[2]]
    cl.check_replica()


def test_cancel_rejections(cl: Cluster) -> None:
    oid = cl.new("a", "buy", 10, "10.00")["order_id"]
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("b", {"op": "cancel", "order_id": oid}, "not_owner"),
        ("a", {"op": "cancel", "order_id": 999}, "unknown_order"),
        ("a", {"op": "cancel", "order_id": "1"}, "bad_request"),
        ("a", {"op": "cancel", "order_id": True}, "bad_request"),
        ("a", {"op": "cancel"}, "bad_request"),
    ]
    for client, body, code in cases:
        out = cl.send(client, body)
        assert out.write is True
        assert (out.status, out.result["code"]) == (STATUS_REJECTED, code), body
        assert out.changes == []
    assert cl.status(oid)["status"] == "new"
    cl.ok("a", {"op": "cancel", "order_id": oid})
    out = cl.send("a", {"op": "cancel", "order_id": oid})
    assert out.result["code"] == "order_closed"
    filled = cl.new("a", "sell", 1, "9.00")["order_id"]
    cl.new("b", "buy", 1, "9.00")
    assert cl.send("a", {"op": "cancel", "order_id": filled}).result["code"] == "order_closed"
    cl.check_replica()


# ------------------------------------------------------------ status, book


def test_status_reports_every_field(cl: Cluster) -> None:
    oid = cl.new("a", "sell", 10, "10.5")["order_id"]
    cl.new("b", "buy", 4, "11")
    out = cl.send("z", {"op": "status", "order_id": oid})
    assert out.write is False and out.changes == []
    assert out.result == {
        "order_id": oid,
        "client_id": "a",
        "instrument": "ABC",
        "side": "sell",
        "type": "limit",
        "price": "10.50",
        "qty": 10,
        "filled": 4,
        "remaining": 6,
        "status": "partially_filled",
    }
    bad = cl.send("z", {"op": "status", "order_id": 77})
    assert (bad.write, bad.status, bad.result["code"]) == (False, STATUS_REJECTED, "unknown_order")
    bad = cl.send("z", {"op": "status", "order_id": None})
    assert (bad.write, bad.result["code"]) == (False, "bad_request")


def test_book_aggregates_levels_best_first_with_depth(cl: Cluster) -> None:
    for price, qty in [("10.00", 1), ("10.00", 2), ("9.00", 4), ("9.50", 8), ("8.00", 16)]:
        cl.new("a", "buy", qty, price)
    for price, qty in [("11.00", 1), ("12.00", 2), ("11.00", 3), ("11.50", 5)]:
        cl.new("b", "sell", qty, price)
    assert cl.book(depth=3) == {
        "instrument": "ABC",
        "bids": [["10.00", 3, 2], ["9.50", 8, 1], ["9.00", 4, 1]],
        "asks": [["11.00", 4, 2], ["11.50", 5, 1], ["12.00", 2, 1]],
    }
    assert cl.book(depth=1)["bids"] == [["10.00", 3, 2]]
    full = cl.ok("v", {"op": "book", "instrument": "ABC"})  # default depth 10
    assert len(full["bids"]) == 4 and len(full["asks"]) == 3
    cl.new("c", "sell", 2, "10.00")  # partial fill of the first 10.00 bid
    assert cl.book(depth=1)["bids"] == [["10.00", 1, 1]]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"op": "book", "instrument": "NOPE"}, "unknown_instrument"),
        ({"op": "book", "instrument": 3}, "bad_request"),
        ({"op": "book", "instrument": "ABC", "depth": 0}, "bad_request"),
        ({"op": "book", "instrument": "ABC", "depth": 1001}, "bad_request"),
        ({"op": "book", "instrument": "ABC", "depth": True}, "bad_request"),
    ],
)
def test_book_query_rejections(cl: Cluster, body: dict[str, Any], code: str) -> None:
    out = cl.primary.execute("v", body)
    assert (out.write, out.status, out.result["code"]) == (False, STATUS_REJECTED, code)


# ------------------------------------------------------------------ reports


def test_each_fill_reports_to_taker_and_maker(cl: Cluster) -> None:
    m = cl.new("maker", "sell", 10, "10.00")["order_id"]
    t = cl.new("taker", "buy", 4, "10.00")["order_id"]
    out = cl.send("taker", {"op": "reports"})
    assert out.write is True
    assert out.result == {
        "reports": [
            {
                "exec_id": 1,
                "order_id": t,
                "instrument": "ABC",
                "side": "buy",
                "price": "10.00",
                "qty": 4,
                "remaining": 0,
            }
        ]
    }
    maker_reports = cl.ok("maker", {"op": "reports"})["reports"]
    assert maker_reports == [
        {
            "exec_id": 1,
            "order_id": m,
            "instrument": "ABC",
            "side": "sell",
            "price": "10.00",
            "qty": 4,
            "remaining": 6,
        }
    ]
    # Drained: a second call returns nothing and changes nothing.
    again = cl.send("maker", {"op": "reports"})
    assert again.result == {"reports": []} and again.changes == [] and again.write
    cl.check_replica()


def test_reports_drain_oldest_first_in_chunks(cl: Cluster) -> None:
    cl.new("m", "sell", 100, "10.00")
    for _ in range(5):
        cl.new("t", "buy", 1, "10.00")
    first = cl.ok("m", {"op": "reports", "max": 2})["reports"]
    rest = cl.ok("m", {"op": "reports", "max": 10})["reports"]
    assert [r["exec_id"] for r in first] == [1, 2]
    assert [r["exec_id"] for r in rest] == [3, 4, 5]
    assert [r["remaining"] for r in first + rest] == [99, 98, 97, 96, 95]
    assert cl.primary.stats()["queued_reports"] == 5  # the taker's, untouched
    cl.check_replica()


def test_report_queue_is_bounded_dropping_oldest() -> None:
    cl = Cluster(OrdersConfig(max_reports_per_client=3))
    cl.new("m", "sell", 100, "10.00")
    for _ in range(5):
        cl.new("t", "buy", 1, "10.00")
    stats = cl.primary.stats()
    assert stats["queued_reports"] == 6 and stats["reports_dropped"] == 4
    got = cl.ok("m", {"op": "reports"})["reports"]
    assert [r["exec_id"] for r in got] == [3, 4, 5]
    cl.check_replica()


@pytest.mark.parametrize("mx", [0, 10_001, "5", True, None])
def test_reports_bad_max(cl: Cluster, mx: object) -> None:
    out = cl.send("a", {"op": "reports", "max": mx})
    assert (out.write, out.status, out.result["code"]) == (True, STATUS_REJECTED, "bad_request")


# -------------------------------------------------------------- rejections

GOOD = {"op": "new", "instrument": "ABC", "side": "buy", "type": "limit", "qty": 5, "price": "1"}


def _with(**kw: Any) -> dict[str, Any]:
    body = dict(GOOD)
    for k, v in kw.items():
        if v is ...:
            del body[k]
        else:
            body[k] = v
    return body


REJECTIONS: list[tuple[dict[str, Any], str]] = [
    (_with(instrument="NOPE"), "unknown_instrument"),
    (_with(instrument=...), "bad_request"),
    (_with(instrument=["ABC"]), "bad_request"),
    (_with(side="hold"), "bad_request"),
    (_with(side=...), "bad_request"),
    (_with(type="stop"), "bad_request"),
    (_with(type=...), "bad_request"),
    (_with(qty=0), "bad_quantity"),
    (_with(qty=-3), "bad_quantity"),
    (_with(qty=1_000_000_001), "bad_quantity"),
    (_with(qty=True), "bad_request"),
    (_with(qty=5.0), "bad_request"),
    (_with(qty="5"), "bad_request"),
    (_with(qty=...), "bad_request"),
    (_with(price=...), "bad_request"),
    (_with(price=10), "bad_request"),
    (_with(price=10.5), "bad_request"),
    (_with(type="market"), "bad_request"),  # a market order with a price
    (_with(price="0"), "bad_price"),
    (_with(price="1.234"), "bad_price"),
    (_with(price="1e3"), "bad_price"),
    (_with(price="-1"), "bad_price"),
    ({"op": "cancel", "order_id": 12345}, "unknown_order"),
    ({"op": "cancel", "order_id": 1.0}, "bad_request"),
]


@pytest.mark.parametrize(("body", "code"), REJECTIONS)
def test_rejections_change_nothing_but_are_logged(body: dict[str, Any], code: str) -> None:
    cl = Cluster()
    cl.new("a", "sell", 5, "10.00")
    cl.new("b", "buy", 2, "10.00")
    before_digest = cl.primary.digest()
    out = cl.primary.execute("c", body)
    # A write (logged, so a resend gets this very answer) that changes nothing.
    assert out.write is True
    assert out.status == STATUS_REJECTED and out.changes == []
    assert out.result["code"] == code and out.result["code"] in REJECT_CODES
    assert isinstance(out.result["message"], str) and out.result["message"]
    cl.primary.apply(out.changes)
    assert cl.primary.digest() == before_digest


@pytest.mark.parametrize("body", [{}, {"op": "explode"}, {"op": 1}, {"op": None}])
def test_unknown_op_is_a_rejected_non_write(cl: Cluster, body: dict[str, Any]) -> None:
    out = cl.primary.execute("a", body)
    assert (out.write, out.status, out.result["code"]) == (False, STATUS_REJECTED, "bad_request")
    assert out.changes == []


def test_non_dict_body_is_bad_request(cl: Cluster) -> None:
    out = cl.primary.execute("a", ["op", "new"])  # type: ignore[arg-type]
    assert (out.status, out.result["code"]) == (STATUS_REJECTED, "bad_request")


def test_execute_does_not_mutate(cl: Cluster) -> None:
    cl.new("a", "sell", 5, "10.00")
    d = cl.primary.digest()
    out = cl.primary.execute("b", _with(price="10.00", qty=9))
    assert out.result["filled"] == 5
    assert cl.primary.digest() == d
    assert cl.primary.execute("b", _with(price="10.00", qty=9)) == out


def test_apply_refuses_unknown_ops(cl: Cluster) -> None:
    with pytest.raises(ProtocolError):
        cl.primary.apply([["explode", "orders", 1, []]])
    with pytest.raises(ProtocolError):
        cl.primary.apply([["put", "nowhere", 1, []]])


# ------------------------------------------------- retention and stats


def test_closed_orders_and_executions_are_bounded() -> None:
    cl = Cluster(OrdersConfig(max_closed_orders=4))
    resting = cl.new("r", "buy", 1, "1.00")["order_id"]  # open: never evicted
    closed = []
    for _ in range(6):
        closed.append(cl.new("a", "sell", 1, "10.00")["order_id"])
        closed.append(cl.new("b", "buy", 1, "10.00")["order_id"])
    stats = cl.primary.stats()
    assert stats["orders"] == 5 and stats["closed_orders"] == 4 and stats["open_orders"] == 1
    assert stats["executions"] == 4 and stats["next_exec_id"] == 7
    assert set(cl.primary.executions) == {3, 4, 5, 6}
    assert cl.status(resting)["status"] == "new"
    for oid in closed[:-4]:
        out = cl.send("v", {"op": "status", "order_id": oid})
        assert out.result["code"] == "unknown_order"
    for oid in closed[-4:]:
        assert cl.status(oid)["status"] == "filled"
    cl.check_replica()


def test_stats_counts(cl: Cluster) -> None:
    cl.new("a", "sell", 5, "10.00")
    cl.new("a", "sell", 5, "11.00")
    cl.new("b", "buy", 7, "12.00")
    assert cl.primary.stats() == {
        "open_orders": 1,
        "orders": 3,
        "closed_orders": 2,
        "executions": 2,
        "report_clients": 2,
        "queued_reports": 4,
        "reports_dropped": 0,
        "next_order_id": 4,
        "next_exec_id": 3,
    }


# ------------------------------------------------------------------ prices


@pytest.mark.parametrize(
    ("text", "ticks"),
    [("10.50", 1050), ("10.5", 1050), ("10", 1000), ("0.01", 1), ("007.10", 710)],
)
def test_price_accepted(text: str, ticks: int) -> None:
    eng = Engine(OrdersConfig())
    assert eng.prices.parse(text) == ticks
    assert eng.prices.parse(text) == ticks  # the cached path too


@pytest.mark.parametrize(
    "text",
    ["1e3", "-1", "+1", "nan", "inf", " 1", "1 ", "1.234", "", ".", "1.", ".5", "0", "0.00",
     "1_0", "1.2.3", "１", "٣", "²", "1234567890123", "0x10", "1,5"],
)  # fmt: skip
def test_price_refused(text: str) -> None:
    assert Engine(OrdersConfig()).prices.parse(text) is None


def test_price_decimals_setting() -> None:
    eng = Engine(OrdersConfig(price_decimals=0))
    assert eng.prices.parse("12") == 12 and eng.prices.parse("12.0") is None
    assert eng.prices.format(12) == "12"
    eng4 = Engine(OrdersConfig(price_decimals=4))
    assert eng4.prices.parse("1.23") == 12300 and eng4.prices.format(12345) == "1.2345"
    eng4.apply(eng4.execute("a", _with(price="0.0001")).changes)
    assert eng4.execute("a", {"op": "book", "instrument": "ABC"}).result["bids"] == [
        ["0.0001", 5, 1]
    ]
