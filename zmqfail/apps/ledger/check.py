"""The ledger's log checker: what the chaos test and the deterministic
simulator assert about a ledger cluster's history.

Every transaction must conserve the total (the balance changes of one record
sum to zero), no balance may go negative, and no transfer id may be applied
by more than one record, whatever failed in between: a double application
would keep the total (money moves twice) and shows only here. The chaos test
runs ``check_log`` over each node's durable log; the simulator runs ``audit``
over the final history of every seeded run (``zmqfail/sim/check.py``), next
to ``Ledger.check`` on every live server's tables.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from zmqfail.app import DEL, PUT
from zmqfail.apps.ledger.settings import LedgerConfig, parse
from zmqfail.audit import records
from zmqfail.config import ClusterConfig
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.snapshot import newest_snapshot


class Broken(enum.Enum):
    """Which of the ledger's promises a finding breaks."""

    TOTAL = "conservation"  # a transaction, or the whole, changed the total
    NEGATIVE = "negative"  # a balance went below zero
    TWICE = "transfer-twice"  # a transfer id applied by a second record


@dataclass(frozen=True, slots=True)
class Finding:
    broken: Broken
    text: str

    def __str__(self) -> str:
        return self.text


def audit(
    balances: dict[int, int],
    applied: Counter[str],
    recs: Iterable[TxRecord],
    expected_total: int | None,
) -> list[Finding]:
    """Findings in `recs`, applied on top of `balances` and the transfer ids
    already `applied` (both updated in place); [] when there are none.
    `expected_total` None: judge each transaction, not the sum at the end."""
    bad: list[Finding] = []
    for rec in recs:
        delta = 0
        for ch in rec.changes:
            op, table = ch[0], ch[1]
            if table == "accounts" and op == PUT:
                delta += ch[3] - balances.get(ch[2], 0)
                balances[ch[2]] = ch[3]
                if ch[3] < 0:
                    text = f"lsn {rec.lsn}: account {ch[2]} goes negative ({ch[3]})"
                    bad.append(Finding(Broken.NEGATIVE, text))
            elif table == "accounts" and op == DEL:
                delta -= balances.pop(ch[2], 0)
            elif table == "transfers" and op == PUT:
                applied[ch[2]] += 1
                if applied[ch[2]] > 1:
                    text = f"lsn {rec.lsn}: transfer {ch[2]!r} applied a second time"
                    bad.append(Finding(Broken.TWICE, text))
        if delta:
            text = f"lsn {rec.lsn}: the transaction changes the total by {delta}"
            bad.append(Finding(Broken.TOTAL, text))
    total = sum(balances.values())
    if expected_total is not None and total != expected_total:
        bad.append(Finding(Broken.TOTAL, f"the balances total {total}, not {expected_total}"))
    return bad


def audit_records(
    balances: dict[int, int],
    applied: Counter[str],
    recs: Iterable[TxRecord],
    expected_total: int,
) -> list[str]:
    """`audit`, as lines of text."""
    return [f.text for f in audit(balances, applied, recs, expected_total)]


def opening(settings: LedgerConfig) -> tuple[dict[int, int], int]:
    """The balances every node starts from, and their total."""
    balances = dict.fromkeys(range(1, settings.accounts + 1), settings.initial_balance)
    return balances, settings.accounts * settings.initial_balance


def check_log(data_dir: Path, cfg: ClusterConfig) -> list[str]:
    """audit_records over a node's durable log (from its newest snapshot on,
    if older segments were pruned)."""
    balances, total = opening(parse(cfg.app.settings))
    applied: Counter[str] = Counter()
    first = 1
    snap = newest_snapshot(data_dir)
    if snap is not None:
        first_in_log = next((r.lsn for r in records(data_dir, 1)), snap.lsn + 1)
        if first_in_log > 1:  # the log before the snapshot is gone: start from it
            tables = snap.state["state"]["tables"]
            balances = dict(tables["accounts"])
            applied.update(tid for tid, _ in tables["transfers"])
            first = snap.lsn + 1
    return audit_records(balances, applied, records(data_dir, first), total)
