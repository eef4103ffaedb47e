"""Rebuilding a node's tables from what its storage holds: the newest
snapshot, then every record after it, in order. Pure: the real disk and the
simulator's both read their bytes and call this.

Recovery of the files guarantees the log is intact, not that it is one
history: a log that mixes two servers' records at the same LSNs (the audit's
power-loss case, before terms existed) replays into a record that does not
apply. That record's LSN is returned instead of a result, so the caller can
set it and what follows aside and try again.
"""

from __future__ import annotations

from typing import Any

from zmqfail.config import ClusterConfig
from zmqfail.core.ports import Loaded
from zmqfail.errors import ProtocolError
from zmqfail.processor import Processor
from zmqfail.txlog.history import EpochHistory, Term
from zmqfail.txlog.record import TxRecord


def replay(
    cfg: ClusterConfig,
    name: str,
    epoch: int,
    snapshot: tuple[int, int, dict[str, Any]] | None,
    records: list[tuple[int, bytes]],
    last_lsn: int,
    meta: dict[str, Any],
) -> Loaded | tuple[int, Exception]:
    """`snapshot`: (lsn, epoch of its last record, state) or None; `records`:
    the consecutive records after it; `last_lsn`: the last LSN the storage
    holds; `epoch`: the node's current epoch."""
    if snapshot is not None:
        snap_lsn, snap_epoch, state = snapshot
        proc = Processor.create(cfg, name, max(epoch, 1), snap_lsn, state)
    else:
        snap_lsn, snap_epoch = 0, 0
        proc = Processor.create(cfg, name, max(epoch, 1))
    proc.history = history_from_meta(meta, last_lsn)
    term = proc.history.term_at(snap_lsn)
    proc.last_epoch = term.epoch if term else snap_epoch
    current = term
    for lsn, payload in records:
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
    return Loaded(proc, snap_lsn, len(records))


def history_from_meta(meta: dict[str, Any], last_lsn: int) -> EpochHistory:
    try:
        hist = EpochHistory.from_wire(meta.get("history", []))
    except ProtocolError:
        hist = EpochHistory()
    hist.cut_keeping_announced(last_lsn)
    return hist
