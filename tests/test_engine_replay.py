"""Determinism of the engine: replicas, snapshots and digests.

The failover design rests on these: a backup that applies the primary's
logged changes, or a node that restores a snapshot and replays the log, must
end in exactly the state the primary has, and the digest must say so.
"""

from __future__ import annotations

import random
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmqfail.config import EngineConfig
from zmqfail.engine import Engine, Outcome
from zmqfail.errors import ProtocolError

pytestmark = pytest.mark.timeout(30)

CLIENTS = ("alice", "bob", "carol")
PRICES = ("9.98", "9.99", "10", "10.01", "10.02", "10.5")


def roundtrip(obj: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False, strict_map_key=False)


def random_body(rng: random.Random, next_order_id: int) -> dict[str, Any]:
    kind = rng.random()
    if kind < 0.6:
        market = rng.random() < 0.15
        body: dict[str, Any] = {
            "op": "new",
            "instrument": rng.choice(("ABC", "XYZ")),
            "side": rng.choice(("buy", "sell")),
            "type": "market" if market else "limit",
            "qty": rng.randint(1, 20),
        }
        if not market:
            body["price"] = rng.choice(PRICES)
        return body
    if kind < 0.8:
        return {"op": "cancel", "order_id": rng.randint(1, max(1, next_order_id))}
    if kind < 0.9:
        return {"op": "reports", "max": rng.randint(1, 5)}
    return {"op": "status", "order_id": rng.randint(1, max(1, next_order_id))}


def drive(eng: Engine, client: str, msg_id: int, body: dict[str, Any]) -> Outcome:
    out = eng.execute(client, msg_id, body)
    if out.write:
        eng.apply(client, msg_id, out.status, out.result, out.changes)
    return out


def run_random(eng: Engine, seed: int, n: int, start_msg: int = 0) -> list[Outcome]:
    rng = random.Random(seed)
    outs = []
    for i in range(n):
        client = rng.choice(CLIENTS)
        outs.append(drive(eng, client, start_msg + i + 1, random_body(rng, eng.next_order_id)))
    return outs


def test_same_requests_give_same_digest_and_replies() -> None:
    a, b = Engine(EngineConfig()), Engine(EngineConfig())
    outs_a = run_random(a, 7, 2000)
    outs_b = run_random(b, 7, 2000)
    assert outs_a == outs_b
    assert a.digest() == b.digest()
    assert a.stats()["executions"] > 100  # the run really matched something
    c = Engine(EngineConfig())
    run_random(c, 8, 2000)
    assert c.digest() != a.digest()


def test_replica_fed_only_apply_matches_primary() -> None:
    cfg = EngineConfig(max_closed_orders=50, max_reports_per_client=7, dedup_window=16)
    primary, replica = Engine(cfg), Engine(cfg)
    rng = random.Random(3)
    for i in range(3000):
        client = rng.choice(CLIENTS)
        out = primary.execute(client, i + 1, random_body(rng, primary.next_order_id))
        if not out.write:
            continue
        primary.apply(client, i + 1, out.status, out.result, out.changes)
        wire = roundtrip([client, i + 1, out.status, out.result, out.changes])
        replica.apply(*wire)
    assert replica.digest() == primary.digest()
    assert replica.stats() == primary.stats()
    stats = primary.stats()
    assert stats["closed_orders"] == 50 and stats["reports_dropped"] > 0


def test_snapshot_roundtrip_restores_and_continues_identically() -> None:
    cfg = EngineConfig(max_closed_orders=40, dedup_window=8)
    eng = Engine(cfg)
    run_random(eng, 11, 1500)
    snap = roundtrip(eng.snapshot())
    restored = Engine.restore(cfg, snap)
    assert restored.digest() == eng.digest()
    assert restored.stats() == eng.stats()
    for client in CLIENTS:
        for m in (1, 1500, 1501):
            assert restored.lookup(client, m) == eng.lookup(client, m)
    outs_a = run_random(eng, 12, 1500, start_msg=1500)
    outs_b = run_random(restored, 12, 1500, start_msg=1500)
    assert outs_a == outs_b
    assert restored.digest() == eng.digest()


def test_digest_ignores_map_insertion_order() -> None:
    eng = Engine(EngineConfig())
    run_random(eng, 5, 300)
    snap = roundtrip(eng.snapshot())

    def reverse_maps(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: reverse_maps(obj[k]) for k in reversed(list(obj))}
        if isinstance(obj, list):
            return [reverse_maps(v) for v in obj]
        return obj

    shuffled = reverse_maps(snap)
    assert list(shuffled) != list(snap)
    assert Engine.restore(EngineConfig(), shuffled).digest() == eng.digest()


def test_digest_sees_every_table() -> None:
    eng = Engine(EngineConfig())
    seen = {eng.digest()}
    steps: list[tuple[str, int, dict[str, Any]]] = [
        ("a", 1, {"op": "new", "instrument": "ABC", "side": "sell", "type": "limit",
                  "qty": 5, "price": "10"}),
        ("b", 1, {"op": "new", "instrument": "ABC", "side": "buy", "type": "limit",
                  "qty": 2, "price": "10"}),
        ("a", 2, {"op": "reports"}),
        ("b", 2, {"op": "cancel", "order_id": 1}),  # rejected: only dedup changes
    ]  # fmt: skip
    for client, msg_id, body in steps:
        drive(eng, client, msg_id, body)
        seen.add(eng.digest())
    assert len(seen) == len(steps) + 1


def test_restore_trims_to_a_smaller_config() -> None:
    eng = Engine(EngineConfig())
    run_random(eng, 9, 2000)
    small = EngineConfig(max_closed_orders=10, dedup_window=2, max_reports_per_client=1)
    restored = Engine.restore(small, roundtrip(eng.snapshot()))
    stats = restored.stats()
    assert stats["closed_orders"] == 10 and stats["executions"] <= 10
    assert stats["dedup_entries"] <= 2 * len(CLIENTS)
    assert stats["queued_reports"] <= len(CLIENTS)
    assert stats["open_orders"] == eng.stats()["open_orders"]


def test_restore_refuses_bad_snapshots() -> None:
    eng = Engine(EngineConfig())
    run_random(eng, 4, 200)
    snap = roundtrip(eng.snapshot())
    with pytest.raises(ProtocolError, match="price_decimals"):
        Engine.restore(EngineConfig(price_decimals=3), snap)
    with pytest.raises(ProtocolError, match="format"):
        Engine.restore(EngineConfig(), {**snap, "format": 99})
    with pytest.raises(ProtocolError, match="malformed"):
        Engine.restore(EngineConfig(), {k: v for k, v in snap.items() if k != "orders"})
    with pytest.raises(ProtocolError, match="closed-order"):
        Engine.restore(EngineConfig(), {**snap, "closed": snap["closed"][1:]})
    with pytest.raises(ProtocolError):
        Engine.restore(EngineConfig(instruments=("ABC",)), snap)  # open XYZ orders


# ------------------------------------------------------------ property test

new_body = st.fixed_dictionaries(
    {
        "op": st.just("new"),
        "instrument": st.sampled_from(("ABC", "XYZ", "NOPE")),
        "side": st.sampled_from(("buy", "sell")),
        "type": st.sampled_from(("limit", "limit", "limit", "market")),
        "qty": st.one_of(st.integers(1, 30), st.sampled_from((0, -1, True))),
    }
).flatmap(
    lambda b: st.builds(
        lambda p: {**b, "price": p} if b["type"] == "limit" else b,
        st.sampled_from((*PRICES, "0", "1.001", 5)),
    )
)
request = st.tuples(
    st.sampled_from(CLIENTS),
    st.one_of(
        new_body,
        new_body,
        new_body,
        st.builds(lambda i: {"op": "cancel", "order_id": i}, st.integers(0, 40)),
        st.builds(lambda m: {"op": "reports", "max": m}, st.integers(0, 4)),
        st.builds(lambda i: {"op": "status", "order_id": i}, st.integers(0, 40)),
        st.builds(lambda d: {"op": "book", "instrument": "ABC", "depth": d}, st.integers(1, 3)),
        st.just({"op": "bogus"}),
    ),
)


def check_invariants(eng: Engine) -> None:
    for book in eng.books.values():
        bid, ask = book.bids.best(), book.asks.best()
        assert bid is None or ask is None or bid < ask, "crossed book"
        for bside, side in ((book.bids, "buy"), (book.asks, "sell")):
            for price, level in bside.levels.items():
                assert level, "empty level left behind"
                assert list(level) == sorted(level), "FIFO is not arrival order"
                for oid in level:
                    o = eng.orders[oid]
                    assert (o[2], o[3], o[5]) == (book.instrument, side, price)
                    assert o[8] in ("new", "partially_filled") and 0 <= o[7] < o[6]
    open_ids = {o[0] for o in eng.orders.values() if o[8] in ("new", "partially_filled")}
    in_books = {
        oid
        for b in eng.books.values()
        for bside in (b.bids, b.asks)
        for level in bside.levels.values()
        for oid in level
    }
    assert open_ids == in_books


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(request, min_size=1, max_size=60))
def test_random_requests_keep_replica_equal_and_book_uncrossed(
    reqs: list[tuple[str, dict[str, Any]]],
) -> None:
    cfg = EngineConfig(max_closed_orders=8, dedup_window=4, max_reports_per_client=3)
    primary, replica = Engine(cfg), Engine(cfg)
    msg_ids = dict.fromkeys(CLIENTS, 0)
    for client, body in reqs:
        msg_ids[client] += 1
        m = msg_ids[client]
        out = primary.execute(client, m, body)
        if out.write:
            primary.apply(client, m, out.status, out.result, out.changes)
            replica.apply(client, m, *roundtrip([out.status, out.result, out.changes]))
            assert primary.lookup(client, m).result == out.result
        else:
            assert out.changes == []
        check_invariants(primary)
        check_invariants(replica)
    assert replica.digest() == primary.digest()
    assert replica.stats() == primary.stats()
    restored = Engine.restore(cfg, roundtrip(primary.snapshot()))
    assert restored.digest() == primary.digest()
