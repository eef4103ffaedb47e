"""Offline checks of a data directory: replay it into a fresh engine.

Used by the demo, the tests and operators to prove that a node's live tables
equal what its durable log says they should be. Read-only: it never truncates
or rewrites anything, so it is safe on evidence and on a running node.
"""

from __future__ import annotations

from pathlib import Path

from zmqfail.config import EngineConfig
from zmqfail.engine import Engine
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.recovery import iter_records
from zmqfail.txlog.snapshot import newest_snapshot


def replay(data_dir: Path, cfg: EngineConfig) -> tuple[Engine, int]:
    """The engine state the durable log describes, and its last LSN."""
    snap = newest_snapshot(data_dir)
    if snap is not None:
        engine, last = Engine.restore(cfg, snap.state), snap.lsn
    else:
        engine, last = Engine(cfg), 0
    for lsn, payload in iter_records(data_dir, from_lsn=last + 1):
        rec = TxRecord.decode(payload)
        engine.apply(rec.client_id, rec.msg_id, rec.status, rec.result, rec.changes)
        last = lsn
    return engine, last


def replay_digest(data_dir: Path, cfg: EngineConfig) -> str:
    return replay(data_dir, cfg)[0].digest()


def requests_in_log(data_dir: Path) -> list[tuple[str, int]]:
    """(client_id, msg_id) of every client request in the durable log, in LSN
    order: what "lost", "applied twice" and "order kept" are judged against."""
    out: list[tuple[str, int]] = []
    for _lsn, payload in iter_records(data_dir):
        rec = TxRecord.decode(payload)
        if rec.client_id:
            out.append((rec.client_id, rec.msg_id))
    return out
