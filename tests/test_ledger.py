"""The ledger application: transfers, idempotent ids, balances never negative,
the total conserved; and its log checker, shown to catch planted bugs."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgpack
import pytest

from zmqfail.app import Outcome
from zmqfail.apps.ledger import LedgerConfig, TransferMix, create
from zmqfail.apps.ledger.check import audit_records
from zmqfail.errors import ConfigError, ProtocolError
from zmqfail.protocol import STATUS_OK, STATUS_REJECTED
from zmqfail.txlog.record import TxRecord

pytestmark = pytest.mark.timeout(30)


def roundtrip(obj: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False, strict_map_key=False)


class Books:
    """A primary ledger and a replica fed only the logged changes."""

    def __init__(self, **settings: int) -> None:
        self.primary, self.replica = create(dict(settings)), create(dict(settings))
        self.log: list[TxRecord] = []

    def send(self, body: dict[str, Any], client: str = "c") -> Outcome:
        out = self.primary.execute(client, body)
        if out.write:
            self.primary.apply(out.changes)
            self.replica.apply(roundtrip(out.changes))
            rec = TxRecord(len(self.log) + 1, 1, client, len(self.log) + 1, body, out.changes,
                           out.status, out.result)  # fmt: skip
            self.log.append(TxRecord.decode(rec.encode()))
        return out

    def transfer(self, tid: str, src: int, dst: int, amount: int) -> Outcome:
        return self.send({"op": "transfer", "id": tid, "from": src, "to": dst, "amount": amount})

    def balance(self, acct: int) -> int:
        out = self.primary.execute("v", {"op": "balance", "account": acct})
        assert out.status == STATUS_OK and not out.write
        bal: int = out.result["balance"]
        return bal


def test_a_transfer_moves_money_and_keeps_the_total() -> None:
    b = Books(accounts=3, initial_balance=100)
    out = b.transfer("t1", 1, 2, 30)
    assert (out.status, out.result) == (STATUS_OK, {"id": "t1", "duplicate": False, "balance": 70})
    assert [b.balance(n) for n in (1, 2, 3)] == [70, 130, 100]
    total = b.primary.execute("v", {"op": "total"})
    assert total.result == {"total": 300, "accounts": 3} and not total.write
    assert b.primary.check() == [] and b.replica.digest() == b.primary.digest()


def test_the_same_transfer_id_is_never_applied_twice() -> None:
    b = Books(accounts=2, initial_balance=100)
    b.transfer("t1", 1, 2, 30)
    again = b.transfer("t1", 1, 2, 30)  # a retry, e.g. after "session expired"
    assert again.status == STATUS_OK and again.result == {"id": "t1", "duplicate": True}
    assert again.write and again.changes == []  # logged, so its resend gets this answer
    assert [b.balance(1), b.balance(2)] == [70, 130]
    reused = b.transfer("t1", 2, 1, 5)
    assert reused.status == STATUS_REJECTED and reused.result["code"] == "id_reused"


@pytest.mark.parametrize(
    ("body", "code", "write"),
    [
        ({"from": 1, "to": 2, "amount": 101}, "insufficient_funds", True),
        ({"from": 1, "to": 9, "amount": 1}, "unknown_account", True),
        ({"from": 9, "to": 1, "amount": 1}, "unknown_account", True),
        ({"from": 1, "to": 1, "amount": 1}, "bad_request", False),
        ({"from": 1, "to": 2, "amount": 0}, "bad_request", False),
        ({"from": 1, "to": 2, "amount": True}, "bad_request", False),
        ({"from": "1", "to": 2, "amount": 1}, "bad_request", False),
        ({"id": "", "from": 1, "to": 2, "amount": 1}, "bad_request", False),
        ({"id": 5, "from": 1, "to": 2, "amount": 1}, "bad_request", False),
    ],
)
def test_refused_transfers_change_nothing(body: dict[str, Any], code: str, write: bool) -> None:
    b = Books(accounts=2, initial_balance=100)
    before = b.primary.digest()
    out = b.send({"op": "transfer", "id": "t", **body})
    assert (out.status, out.result["code"], out.write) == (STATUS_REJECTED, code, write)
    assert out.changes == [] and b.primary.digest() == before


def test_open_adds_an_empty_account() -> None:
    b = Books(accounts=2, initial_balance=100)
    assert b.send({"op": "open", "account": 7}).result == {"account": 7, "balance": 0}
    assert b.send({"op": "open", "account": 7}).result["code"] == "account_exists"
    assert b.transfer("t", 1, 7, 40).status == STATUS_OK
    assert b.balance(7) == 40 and b.primary.check() == []
    assert b.primary.execute("v", {"op": "nope"}).result["code"] == "bad_request"
    assert b.primary.execute("v", {"op": "balance", "account": 99}).result["code"] == (
        "unknown_account"
    )


def test_old_transfer_ids_are_forgotten_by_the_log_itself() -> None:
    b = Books(accounts=2, initial_balance=1000, max_transfers=3)
    for n in range(5):
        assert b.transfer(f"t{n}", 1, 2, 1).status == STATUS_OK
    assert list(b.primary.tables["transfers"]) == ["t2", "t3", "t4"]
    assert ["del", "transfers", "t1"] in b.log[-1].changes
    assert b.replica.digest() == b.primary.digest() and b.primary.check() == []


def test_snapshot_restore_round_trip() -> None:
    b = Books(accounts=4, initial_balance=50, max_transfers=10)
    mix = TransferMix(LedgerConfig(accounts=4, initial_balance=50), seed=3)
    for _ in range(300):
        b.send(mix.next_body())
    copy = create({"accounts": 4, "initial_balance": 50, "max_transfers": 10})
    copy.restore(roundtrip(b.primary.snapshot()))
    assert copy.digest() == b.primary.digest()
    assert list(copy.tables["transfers"]) == list(b.primary.tables["transfers"])
    with pytest.raises(ProtocolError):
        copy.restore({"tables": {"accounts": []}, "queues": {}})


def test_settings_are_checked() -> None:
    assert create({}).cfg == LedgerConfig()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"accounts": 0}, "accounts must be a positive integer"),
        ({"initial_balance": "1"}, "initial_balance must be a positive integer"),
        ({"nope": 1}, "unknown key"),
        ({"accounts": 10**7}, "at most"),
    ]
    for bad, match in cases:
        with pytest.raises(ConfigError, match=match):
            create(bad)


def test_check_catches_planted_state_bugs() -> None:
    b = Books(accounts=3, initial_balance=100)
    b.transfer("t1", 1, 2, 10)
    assert b.primary.check() == []
    b.primary.tables["accounts"][3] += 5  # money from nowhere
    assert any("total 305, not 300" in line for line in b.primary.check())
    b.primary.tables["accounts"][3] -= 110
    assert any("account 3 is negative" in line for line in b.primary.check())


def test_transfer_mix_is_deterministic_and_ids_are_unique() -> None:
    cfg = LedgerConfig(accounts=5)

    def bodies(seed: int) -> list[dict[str, Any]]:
        mix = TransferMix(cfg, seed)
        return [mix.next_body() for _ in range(500)]

    xs, ys = bodies(7), bodies(8)
    assert xs == bodies(7) and xs != ys
    ids = [body["id"] for body in xs + ys if body["op"] == "transfer"]
    assert len(ids) == len(set(ids)) > 900
    b = Books(accounts=5, initial_balance=10**6)
    assert all(b.send(body).status == STATUS_OK for body in xs)


# ------------------------------------------------------------ the log checker


def audit(log: list[TxRecord], accounts: int = 3, initial: int = 100) -> list[str]:
    balances = dict.fromkeys(range(1, accounts + 1), initial)
    return audit_records(balances, Counter(), log, accounts * initial)


def test_audit_passes_a_real_log() -> None:
    b = Books(accounts=3, initial_balance=100, max_transfers=4)
    mix = TransferMix(LedgerConfig(accounts=3, initial_balance=100), seed=1)
    for _ in range(200):
        b.send(mix.next_body())
    b.transfer("x", 1, 2, 1)
    b.transfer("x", 1, 2, 1)  # a retry: answered, not applied
    assert len(b.log) > 150 and audit(b.log) == []


def replaced(rec: TxRecord, changes: list[Any]) -> TxRecord:
    return TxRecord(rec.lsn, rec.epoch, rec.client_id, rec.msg_id, rec.body, changes,
                    rec.status, rec.result)  # fmt: skip


def test_audit_catches_a_transfer_applied_twice() -> None:
    b = Books(accounts=3, initial_balance=100)
    b.transfer("t1", 1, 2, 10)
    b.transfer("t2", 2, 3, 10)
    assert audit(b.log) == []
    # The same record twice: balances are put outright, so the total holds and
    # only the transfer ids show it.
    assert any("transfer 't1' applied a second time" in line for line in audit([*b.log, b.log[0]]))
    # Executed twice (a resend run again): money moves twice, the total still holds.
    again = b.primary.execute("c", {**b.log[0].body, "id": "t9"}).changes
    rerun = replaced(b.log[0], [*again[:2], ["put", "transfers", "t1", [1, 2, 10]]])
    bad = audit([*b.log, rerun])
    assert bad == [f"lsn {rerun.lsn}: transfer 't1' applied a second time"]


def test_audit_catches_money_created_or_a_negative_balance() -> None:
    b = Books(accounts=3, initial_balance=100)
    b.transfer("t1", 1, 2, 10)
    ch = b.log[0].changes
    minted = [replaced(b.log[0], [ch[0], ["put", "accounts", 2, 999], ch[2]])]
    bad = audit(minted)
    assert any("changes the total by" in line for line in bad)
    assert any("the balances total" in line for line in bad)
    overdrawn = [replaced(b.log[0], [["put", "accounts", 1, -5], ["put", "accounts", 2, 205]])]
    assert any("account 1 goes negative" in line for line in audit(overdrawn))
