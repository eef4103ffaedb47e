"""The simulator running the ledger (issue 11): through every safe fault the
total of all balances is conserved and no transfer is applied twice, and the
checks that say so catch the bugs planted for them.

Short campaigns on purpose (a few seconds): the long ones are `tools/sim
--app ledger` (docs/reliability.md).
"""

from __future__ import annotations

from typing import Any

import pytest
from simcheck import caught, niced_campaign

from zmqfail.app import PUT
from zmqfail.apps.ledger import Ledger
from zmqfail.apps.ledger.settings import LedgerConfig
from zmqfail.processor import Processed, Processor
from zmqfail.sim.campaign import run_one
from zmqfail.sim.check import check_ledger
from zmqfail.sim.schedule import SAFE
from zmqfail.txlog.record import TxRecord

SEEDS = range(1, 41)


pytestmark = pytest.mark.usefixtures("quiet_logs")


@pytest.mark.timeout(300)
def test_a_ledger_campaign_conserves_money_through_safe_faults() -> None:
    s = niced_campaign(SEEDS, workers=2, app="ledger")
    assert s.schedules == len(SEEDS)
    assert s.failed == {}, f"replay: tools/sim --replay N --app ledger: {s.failed}"
    assert set(s.faults) == set(SAFE), s.faults  # every safe fault kind, with the ledger too
    assert s.acked > 2000


@pytest.mark.timeout(60)
def test_the_ledger_run_moves_money_and_replays_exactly() -> None:
    """The clients send transfers (the ledger's own mix), the servers end with
    the opening total, and a seed replays exactly."""
    one, faults = run_one(5, app="ledger")
    two, again = run_one(5, app="ledger")
    assert one.ok, one.violations
    assert faults == again and one.trace == two.trace and one.acked == two.acked
    assert one.acked > 20


# ------------------------------------------------------ the checks alone
SETTINGS = LedgerConfig(accounts=3, initial_balance=100)


def transfer(lsn: int, tid: str, src: int, dst: int, new_src: int, new_dst: int) -> TxRecord:
    changes = [
        [PUT, "accounts", src, new_src],
        [PUT, "accounts", dst, new_dst],
        [PUT, "transfers", tid, [src, dst, 100 - new_src]],
    ]
    body = {"op": "transfer", "id": tid, "from": src, "to": dst, "amount": 100 - new_src}
    return TxRecord(lsn, 1, "c", lsn, body, changes, "ok", {})


def test_check_ledger_finds_minted_money_and_a_transfer_twice() -> None:
    good = [transfer(1, "t1", 1, 2, 90, 110), transfer(2, "t2", 2, 3, 100, 110)]
    assert check_ledger(good, SETTINGS) == []
    minted = [transfer(1, "t1", 1, 2, 90, 111)]
    assert {v.kind for v in check_ledger(minted, SETTINGS)} == {"conservation"}
    twice = [transfer(1, "t1", 1, 2, 90, 110), transfer(2, "t1", 1, 2, 80, 120)]
    assert [v.kind for v in check_ledger(twice, SETTINGS)] == ["transfer-twice"]
    negative = [transfer(1, "t1", 1, 2, -10, 210)]
    assert [v.kind for v in check_ledger(negative, SETTINGS)] == ["negative"]


def test_a_record_not_seen_written_ends_the_audit_without_blaming_the_next() -> None:
    """After an unknown record the balances are unknown: the records before it
    are judged, the total at the end is not."""
    hist: list[TxRecord | None] = [transfer(1, "t1", 1, 2, 90, 110), None]
    assert check_ledger([*hist, transfer(3, "t3", 1, 2, 0, 0)], SETTINGS) == []
    bad: list[TxRecord | None] = [transfer(1, "t1", 1, 2, 90, 111), None]
    assert [v.kind for v in check_ledger(bad, SETTINGS)] == ["conservation"]


# ------------------------------------------------------------ planted bugs
@pytest.mark.timeout(300)
def test_planted_replay_that_mints_money_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records applied on a backup or in recovery (not on the primary that
    wrote them) credit the receiving account one unit too many."""
    real = Processor.apply_record

    def minting(self: Processor, rec: TxRecord) -> None:
        real(self, rec)
        if isinstance(self.app, Ledger) and rec.body.get("op") == "transfer" and rec.changes:
            self.app.tables["accounts"][rec.body["to"]] += 1

    monkeypatch.setattr(Processor, "apply_record", minting)
    found = caught({"conservation", "invariant"}, range(1, 9), "ledger")
    assert found
    assert any(v.startswith(("conservation", "invariant")) for vs in found.values() for v in vs)


@pytest.mark.timeout(300)
def test_planted_transfer_applied_twice_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A resend skips the stored-reply lookup and the ledger forgets which
    transfer ids it applied: the resend moves the money again."""
    real_submit = Processor.submit

    def forgetful(
        self: Processor, client_id: str, msg_id: int, body: dict[str, Any], session: int
    ) -> Processed:
        s = self.sessions.live.get(client_id)
        if s is not None:
            s.replies.pop(msg_id, None)
        if isinstance(self.app, Ledger):
            self.app.tables["transfers"].pop(body.get("id"), None)
        return real_submit(self, client_id, msg_id, body, session)

    monkeypatch.setattr(Processor, "submit", forgetful)
    found = caught({"transfer-twice"}, range(1, 201), "ledger")
    assert found, "no schedule applied a transfer twice"
