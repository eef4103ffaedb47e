"""The ledger's log checker: what the chaos test (and, later, the
deterministic simulator) asserts about a ledger cluster's durable log.

Every transaction must conserve the total (the balance changes of one record
sum to zero), no balance may go negative, and no transfer id may be applied
by more than one record, whatever failed in between: a double application
would keep the total (money moves twice) and shows only here. The
simulator of issue 8 will run the same ``audit_records`` over each simulated
node's surviving log after every seeded run, and ``Ledger.check`` over its
tables, next to its own checks (acknowledged transfers present once).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from zmqfail.app import DEL, PUT
from zmqfail.apps.ledger.settings import parse
from zmqfail.audit import records
from zmqfail.config import ClusterConfig
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.snapshot import newest_snapshot


def audit_records(
    balances: dict[int, int],
    applied: Counter[str],
    recs: Iterable[TxRecord],
    expected_total: int,
) -> list[str]:
    """Violations in `recs`, applied on top of `balances` and the transfer ids
    already `applied` (both updated in place); [] when there are none."""
    bad: list[str] = []
    for rec in recs:
        delta = 0
        for ch in rec.changes:
            op, table = ch[0], ch[1]
            if table == "accounts" and op == PUT:
                delta += ch[3] - balances.get(ch[2], 0)
                balances[ch[2]] = ch[3]
                if ch[3] < 0:
                    bad.append(f"lsn {rec.lsn}: account {ch[2]} goes negative ({ch[3]})")
            elif table == "accounts" and op == DEL:
                delta -= balances.pop(ch[2], 0)
            elif table == "transfers" and op == PUT:
                applied[ch[2]] += 1
                if applied[ch[2]] > 1:
                    bad.append(f"lsn {rec.lsn}: transfer {ch[2]!r} applied a second time")
        if delta:
            bad.append(f"lsn {rec.lsn}: the transaction changes the total by {delta}")
    total = sum(balances.values())
    if total != expected_total:
        bad.append(f"the balances total {total}, not {expected_total}")
    return bad


def check_log(data_dir: Path, cfg: ClusterConfig) -> list[str]:
    """audit_records over a node's durable log (from its newest snapshot on,
    if older segments were pruned)."""
    settings = parse(cfg.app.settings)
    balances = dict.fromkeys(range(1, settings.accounts + 1), settings.initial_balance)
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
    total = settings.accounts * settings.initial_balance
    return audit_records(balances, applied, records(data_dir, first), total)
