"""What a simulated run must satisfy, judged from the ground truth.

The simulator knows who wrote what: every record a primary writes is noted
with its term and LSN (`Truth`). A server's history is then fully described
by its epoch history and its last LSN (txlog.history), whatever snapshots it
installed or logs it cut. The clients' histories say what was acknowledged,
by which server, at which epoch and when. From these:

- lost: an acknowledged write missing from the final history;
- untold: such a write its client was not told of (an `AckLoss`), which no
  schedule may show, not even a power loss of every server; false-loss: a
  write a client was told is lost that the final history holds;
- twice: a request present twice in the final history;
- order: a client's requests out of msg_id order in the final history;
- split: a server acknowledged at an older epoch after another server had
  begun acknowledging at a newer one (two servers serving at once);
- diverged: live servers whose histories or tables differ after healing;
- stuck: service did not resume within the bound once faults stopped;
- invariant: the application's own check (``Application.check``) fails on a
  live server's tables after healing;
- for the ledger, over the final history as written: conservation (a
  transaction that changes the total of all balances), negative (a balance
  below zero), transfer-twice (a transfer id applied by a second record,
  whatever msg_id carried it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from zmqfail.apps.ledger.check import audit, opening
from zmqfail.apps.ledger.settings import LedgerConfig
from zmqfail.txlog.history import EpochHistory
from zmqfail.txlog.record import TxRecord


@dataclass(slots=True)
class Truth:
    """Every record written, by (term id, lsn): (client id, msg id); with
    `keep` (an application whose log the checks read) its bytes too."""

    records: dict[tuple[int, int], tuple[str, int] | None] = field(default_factory=dict)
    keep: bool = False
    payloads: dict[tuple[int, int], bytes] = field(default_factory=dict)

    def keys(self, hist: EpochHistory, last_lsn: int) -> list[tuple[int, int] | None]:
        """(term id, lsn) of each record of a server's log, LSN 1..last (None:
        before the first term the history knows)."""
        out: list[tuple[int, int] | None] = []
        terms = hist.terms
        i = 0
        for lsn in range(1, last_lsn + 1):
            while i + 1 < len(terms) and terms[i + 1].first_lsn <= lsn:
                i += 1
            if not terms or terms[i].first_lsn > lsn:
                out.append(None)
                continue
            out.append((terms[i].term_id, lsn))
        return out

    def history(self, hist: EpochHistory, last_lsn: int) -> list[tuple[str, int] | None]:
        """The requests of a server's log, LSN 1..last (None: unknown, a record
        of a term the simulation did not see written, or a registration)."""
        return [None if k is None else self.records.get(k) for k in self.keys(hist, last_lsn)]

    def transactions(self, hist: EpochHistory, last_lsn: int) -> list[TxRecord | None]:
        """The records of a server's log as written (None: not seen written)."""
        out: list[TxRecord | None] = []
        for k in self.keys(hist, last_lsn):
            data = None if k is None else self.payloads.get(k)
            out.append(None if data is None else TxRecord.decode(data))
        return out


@dataclass(frozen=True, slots=True)
class Ack:
    """A write a client saw acknowledged."""

    client: str
    msg_id: int
    server: str
    epoch: int
    sent_at: float  # when the server sent the reply
    logged: bool = False  # the reply says the request is in the log


@dataclass(slots=True)
class Violation:
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def check_history(
    final: list[tuple[str, int] | None], acks: list[Ack], written: set[tuple[str, int]]
) -> list[Violation]:
    """Lost, twice and order, against one final history."""
    out: list[Violation] = []
    seen: dict[tuple[str, int], int] = {}
    last: dict[str, int] = {}
    for lsn, req in enumerate(final, start=1):
        if req is None:
            continue
        if req in seen:
            out.append(Violation("twice", f"{req} at lsn {seen[req]} and {lsn}"))
        seen[req] = lsn
        client, msg_id = req
        if msg_id <= last.get(client, 0):
            out.append(Violation("order", f"{req} at lsn {lsn} after msg_id {last[client]}"))
        last[client] = max(last.get(client, 0), msg_id)
    lost = lost_writes(final, acks, written)
    if lost:
        out.append(Violation("lost", f"{len(lost)} acknowledged write(s), e.g. {lost[:3]}"))
    return out


def lost_writes(
    final: list[tuple[str, int] | None], acks: list[Ack], written: set[tuple[str, int]]
) -> list[tuple[str, int]]:
    """Acknowledged writes (client, msg_id) missing from the final history."""
    kept = {req for req in final if req is not None}
    return sorted({(a.client, a.msg_id) for a in acks if (a.client, a.msg_id) in written} - kept)


def check_told(
    final: list[tuple[str, int] | None], acks: list[Ack], told: set[tuple[str, int]]
) -> list[Violation]:
    """Every logged write lost after its client was answered was reported to
    that client as acknowledged but lost, and nothing else was."""
    logged = [a for a in acks if a.logged]
    lost = lost_writes(final, logged, {(a.client, a.msg_id) for a in logged})
    out = []
    untold = [w for w in lost if w not in told]
    if untold:
        out.append(Violation("untold", f"{len(untold)} lost write(s) not told, e.g. {untold[:3]}"))
    kept = {req for req in final if req is not None}
    false = sorted(told & kept)
    if false:  # the application would submit again what the history holds: twice
        out.append(Violation("false-loss", f"{len(false)} told lost but kept, e.g. {false[:3]}"))
    return out


def check_split(acks: list[Ack]) -> list[Violation]:
    """Once a server acknowledged at epoch e, no other server acknowledges at an
    epoch below e afterwards."""
    out: list[Violation] = []
    first_at: dict[tuple[str, int], float] = {}
    for a in acks:
        key = (a.server, a.epoch)
        first_at[key] = min(first_at.get(key, a.sent_at), a.sent_at)
    by_epoch: dict[int, set[str]] = {}
    for server, epoch in first_at:
        by_epoch.setdefault(epoch, set()).add(server)
    for epoch, servers in by_epoch.items():
        if len(servers) > 1:
            out.append(Violation("split", f"epoch {epoch} acknowledged by {sorted(servers)}"))
    for a in acks:
        for (server, epoch), t in first_at.items():
            if server != a.server and epoch > a.epoch and a.sent_at > t:
                out.append(
                    Violation(
                        "split",
                        f"{a.server} acknowledged at epoch {a.epoch} at {a.sent_at:.3f}s, "
                        f"after {server} began at epoch {epoch} ({t:.3f}s)",
                    )
                )
                return out
    return out


def check_ledger(final: Sequence[TxRecord | None], settings: LedgerConfig) -> list[Violation]:
    """The ledger's promises over a final history, from the opening balances.
    A record the simulation did not see written cannot be judged: the audit
    stops there (it would otherwise blame the next record for its changes)."""
    known = []
    for rec in final:
        if rec is None:
            break
        known.append(rec)
    balances, total = opening(settings)
    whole = total if len(known) == len(final) else None
    return [Violation(f.broken.value, f.text) for f in audit(balances, Counter(), known, whole)]
