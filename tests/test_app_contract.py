"""Every application zmqfail ships passes the application contract (see
contract.py): replay from empty gives the live digest, snapshot + restore
round trips, execute and queries change nothing."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from contract import QueryFn, check_contract

from zmqfail.app import SHIPPED, Outcome
from zmqfail.apps.ledger import Ledger
from zmqfail.apps.ledger import workload as ledger_workload
from zmqfail.apps.ledger.settings import parse as parse_ledger
from zmqfail.errors import ConfigError

pytestmark = pytest.mark.timeout(120)


def order_queries(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.5:
        return {"op": "status", "order_id": rng.randint(1, 400)}
    return {"op": "book", "instrument": rng.choice(("ABC", "XYZ", "NOPE")), "depth": 5}


def ledger_queries(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.2:
        return {"op": "total"}
    return {"op": "balance", "account": rng.randint(1, 6)}


# Per shipped application: settings small enough that retention rules and
# refusals happen within the run, and its read-only queries.
APPS: dict[str, tuple[dict[str, Any], QueryFn]] = {
    "orders": ({"max_closed_orders": 50, "max_reports_per_client": 5}, order_queries),
    "ledger": ({"accounts": 5, "initial_balance": 150, "max_transfers": 40}, ledger_queries),
}


def test_every_shipped_application_is_checked() -> None:
    assert set(APPS) == set(SHIPPED)


@pytest.mark.parametrize("name", sorted(APPS))
@pytest.mark.parametrize("seed", [1, 2])
def test_contract(name: str, seed: int) -> None:
    settings, queries = APPS[name]
    check_contract(name, settings, queries, seed)


@pytest.mark.parametrize("name", sorted(APPS))
def test_bad_settings_are_one_config_error(name: str) -> None:
    from contract import cluster_config

    with pytest.raises(ConfigError) as info:
        cluster_config(name, {"no_such_setting": 1}).app.create()
    assert "\n" not in str(info.value) and "no_such_setting" in str(info.value)


# ----------------------------------------------- the contract proves itself
# Ledgers with one planted bug each; the contract must fail on every one.


class _Mutating(Ledger):
    def execute(self, client_id: str, body: dict[str, Any]) -> Outcome:
        self.tables["accounts"][1] += 0 if body.get("op") != "total" else 1  # a query writes
        return super().execute(client_id, body)


class _RandomApply(Ledger):
    def apply(self, changes: list[Any]) -> None:
        super().apply(changes)
        for ch in changes:  # what a clock or a random source does (check() still holds)
            if ch[0] == "put" and ch[1] == "transfers":
                self.tables["transfers"][ch[2]] = [*ch[3], random.getrandbits(32)]


class _ForgetfulSnapshot(Ledger):
    def snapshot(self) -> dict[str, Any]:
        snap = super().snapshot()
        snap["tables"]["transfers"] = []  # state the snapshot misses
        return snap


def _factory(cls: type[Ledger]) -> Callable[[dict[str, Any]], Ledger]:
    return lambda settings: cls(parse_ledger(settings))


mutating, random_apply, forgetful = map(_factory, (_Mutating, _RandomApply, _ForgetfulSnapshot))
workload = ledger_workload


@pytest.mark.parametrize(
    ("factory", "symptom"),
    [
        ("mutating", "execute changed the state"),
        ("random_apply", "replaying the records gives another state"),
        ("forgetful", "the copy answers .*transfer.* otherwise"),
    ],
)
def test_contract_catches_planted_bugs(factory: str, symptom: str) -> None:
    settings, queries = APPS["ledger"]
    with pytest.raises(AssertionError, match=symptom):
        check_contract(f"{__name__}:{factory}", settings, queries)
