"""Offline checks of a data directory: replay it into a fresh application.

Used by the demo, the tests and operators to prove that a node's live tables
equal what its durable log says they should be. Read-only: it never truncates
or rewrites anything, so it is safe on evidence and on a running node.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from zmqfail.config import ClusterConfig
from zmqfail.processor import Processor
from zmqfail.txlog.record import REGISTER, TxRecord
from zmqfail.txlog.recovery import iter_records
from zmqfail.txlog.snapshot import newest_snapshot


def replay(data_dir: Path, cfg: ClusterConfig) -> tuple[Processor, int]:
    """The state (application and sessions) the durable log describes, and its
    last LSN. The same Processor.apply_record a backup and a recovering node run."""
    snap = newest_snapshot(data_dir)
    if snap is not None:
        proc, last = Processor.create(cfg, "audit", snap.epoch, snap.lsn, snap.state), snap.lsn
    else:
        proc, last = Processor.create(cfg, "audit", 0), 0
    for rec in records(data_dir, last + 1):
        proc.apply_record(rec)
        last = rec.lsn
    return proc, last


def replay_digest(data_dir: Path, cfg: ClusterConfig) -> str:
    return replay(data_dir, cfg)[0].digest()


def records(data_dir: Path, from_lsn: int = 1) -> Iterator[TxRecord]:
    """The decoded records of the durable log from `from_lsn` on, in LSN order."""
    for _lsn, payload in iter_records(data_dir, from_lsn=from_lsn):
        yield TxRecord.decode(payload)


def requests_in_log(data_dir: Path) -> list[tuple[str, int]]:
    """(client_id, msg_id) of every client write in the durable log, in LSN
    order: what "lost", "applied twice" and "order kept" are judged against.
    Session registrations are not requests and are left out."""
    return [
        (rec.client_id, rec.msg_id)
        for rec in records(data_dir)
        if rec.client_id and rec.msg_id != REGISTER
    ]
