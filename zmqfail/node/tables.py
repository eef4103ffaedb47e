"""Loading a node's tables from its data directory, robust to a log whose
records do not apply.

Recovery (``txlog.recovery``) guarantees the log is intact, not that it is
one history: a log that mixes two servers' records at the same LSNs (the
audit's power-loss case, before terms existed) replays into a record that
does not apply (an order that is not on the book). A node must not die on
that at every start. It keeps the records from the first one that fails
aside in quarantine, rebuilds its tables from what is left, and may not lead
until it has followed a primary again (its caller clears ``may_lead``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zmqfail.config import ClusterConfig
from zmqfail.errors import ProtocolError
from zmqfail.processor import Processor
from zmqfail.txlog.history import EpochHistory, Term
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.recovery import recover
from zmqfail.txlog.truncate import Cut, truncate_after

log = logging.getLogger("zmqfail.node")

MAX_ATTEMPTS = 3


@dataclass(slots=True)
class Loaded:
    proc: Processor
    snapshot_lsn: int
    replayed: int
    torn_bytes: int
    cuts: list[Cut] = field(default_factory=list)  # records set aside: they did not apply


def load(cfg: ClusterConfig, data_dir: Path, name: str, meta: dict[str, Any]) -> Loaded:
    cuts: list[Cut] = []
    for _ in range(MAX_ATTEMPTS):
        loaded = _try_load(cfg, data_dir, name, meta)
        if isinstance(loaded, Loaded):
            loaded.cuts = cuts
            return loaded
        lsn, exc = loaded
        cut = truncate_after(data_dir, lsn - 1, reason="does-not-apply")
        cuts.append(cut)
        log.critical(
            "%s: record %d of the log does not apply to the tables (%s: %s): the log mixes "
            "two histories. %d record(s) from lsn %d moved to %s; this server will follow "
            "its peer and may not lead until then",
            name,
            lsn,
            type(exc).__name__,
            exc,
            cut.records,
            lsn,
            cut.quarantine,
        )
    raise ProtocolError(f"{data_dir}: the log does not replay after {MAX_ATTEMPTS} cuts")


def _try_load(
    cfg: ClusterConfig, data_dir: Path, name: str, meta: dict[str, Any]
) -> Loaded | tuple[int, Exception]:
    rec = recover(data_dir)
    snap = rec.snapshot
    last = snap.lsn if snap is not None else 0
    proc = Processor.create(cfg, name, max(rec.epoch, 1), last, snap.state if snap else None)
    proc.history = history_from_meta(meta, rec.last_lsn)
    term = proc.history.term_at(last)
    proc.last_epoch = term.epoch if term else (rec.snapshot.epoch if rec.snapshot else 0)
    current = term
    for lsn, payload in rec.records:
        try:
            r = TxRecord.decode(payload)
            proc.apply_record(r)
        except Exception as exc:  # a record that does not apply: see the module doc
            return lsn, exc
        if current is None or current.epoch != r.epoch:
            known = proc.history.term_at(lsn)
            if known is None or known.epoch != r.epoch:
                # Written before terms were kept (or the meta was lost): the epoch
                # alone identifies it (term id 0).
                known = Term(r.epoch, "", 0, lsn)
                proc.history.adopt(known, lsn)
            current = known
    return Loaded(
        proc, rec.snapshot.lsn if rec.snapshot else 0, len(rec.records), rec.truncated_bytes
    )


def history_from_meta(meta: dict[str, Any], last_lsn: int) -> EpochHistory:
    try:
        hist = EpochHistory.from_wire(meta.get("history", []))
    except ProtocolError:
        hist = EpochHistory()
    hist.cut(last_lsn)
    return hist
