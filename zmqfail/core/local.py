"""Rewriting a node's own log: keeping only what a new primary's history
shares, installing a primary's snapshot, and telling what was set aside;
and the meta record that says what the log is (`meta_record`).

Both happen when a server starts to follow another one (after a takeover, a
restart, a power loss) and its log holds records the primary's history does
not: those go to quarantine (never silently dropped), counted, logged, and
kept in the node's meta; the tables are rebuilt from what is kept. The calls
on the disk are synchronous: the node waits for them (it is a backup then,
not serving).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from zmqfail.core.journal import Journal, SetAside, StateChange
from zmqfail.core.log import NodeLog
from zmqfail.core.ports import Disk
from zmqfail.failover.state import FailoverState, Role, State
from zmqfail.processor import Processor
from zmqfail.txlog.history import EpochHistory, common_prefix
from zmqfail.txlog.truncate import Cut

log = logging.getLogger("zmqfail.node")

MAX_QUARANTINE_ENTRIES = 20


def meta_record(
    fs: FailoverState,
    node: str,
    cluster: str,
    history: EpochHistory,
    quarantined: int,
    clean_stop: bool = False,
) -> dict[str, Any]:
    """What a node's meta file says of it (written at every change of these
    facts, read at start-up). `active`: the last server known to serve was
    this one. `alone`: and it ran alone (or stopped cleanly), so its log
    holds every record it acknowledged: it may start as primary on its own.
    `resync`: it served, so its log may hold records nobody else has.
    `history`: the terms of its log. `quarantined`: records it set aside so
    far."""
    alone = fs.may_lead and (
        fs.state in (State.PRIMARY_ONLY, State.BACKUP_ONLY)
        or (clean_stop and fs.role is Role.PRIMARY)
    )
    return {
        "epoch": fs.epoch,
        "node": node,
        "cluster": cluster,
        "active": fs.may_lead,
        "alone": alone,
        "resync": fs.was_active,
        "history": history.to_wire(),
        "quarantined": quarantined,
        "paused": fs.paused,
    }


class LocalStore:
    def __init__(
        self,
        name: str,
        nlog: NodeLog,
        disk: Disk,
        meta: Callable[[], dict[str, Any]],
        restore: Callable[[int, int, dict[str, Any]], Processor],
        quarantined: int,
        journal: Journal,
    ) -> None:
        self.name = name
        self.nlog = nlog
        self.disk = disk
        self._meta = meta  # () -> the meta the node would write now
        self._restore = restore  # (epoch, lsn, state) -> tables (validates the state)
        self.quarantined = quarantined  # records ever set aside (kept in meta)
        self.entries: list[StateChange] = []  # the last cuts, for status
        self.journal = journal  # each cut, with the running total, in the history
        self.snapshots_installed = 0

    def keep_common_prefix(
        self, theirs: EpochHistory, their_last: int, why: str, acked_lsn: int | None
    ) -> bool:
        """Before following a primary: keep only what its history shares. True
        when something was set aside."""
        nlog = self.nlog
        keep = common_prefix(nlog.proc.history, nlog.held, theirs, their_last)
        if keep >= nlog.held:
            return False
        self.cut_to(keep, why, acked_lsn)
        return True

    def cut_to(self, lsn: int, why: str, acked_lsn: int | None) -> None:
        """Set aside everything after `lsn` and rebuild the tables from the rest."""
        nlog = self.nlog
        epoch = nlog.proc.epoch
        self.disk.drain(nlog.buffer.take())
        self.note_cut(self.disk.truncate_after(lsn, why.split()[0]), why, acked_lsn)
        loaded = self.disk.load(self._meta())
        for extra in loaded.cuts:
            self.note_cut(extra, "does not apply", None)
        loaded.proc.epoch = max(loaded.proc.epoch, epoch)
        self.disk.reopen(loaded.proc.last_lsn + 1)
        nlog.reset(loaded.proc, loaded.snapshot_lsn)

    def install(
        self,
        lsn: int,
        epoch: int,
        state: dict[str, Any],
        history: EpochHistory,
        name: str,
        acked_lsn: int | None,
    ) -> None:
        """Replace everything local by a primary's tables at `lsn` (a backup too
        far behind for records). What we hold beyond the two histories' common
        prefix is set aside first, never silently dropped."""
        proc = self._restore(max(epoch, self.nlog.proc.epoch), lsn, state)  # validate first
        nlog = self.nlog
        keep = common_prefix(nlog.proc.history, nlog.held, history, lsn)
        self.disk.drain(nlog.buffer.take())
        if keep < nlog.held:
            self.note_cut(self.disk.truncate_after(keep, "replaced"), "replaced", acked_lsn)
        self.disk.install(lsn, epoch, state)
        proc.history = history.copy()
        proc.history.cut(lsn)
        term = proc.history.term_at(lsn)
        proc.last_epoch = term.epoch if term is not None else epoch
        self.disk.reopen(lsn + 1)
        nlog.reset(proc, lsn)
        self.snapshots_installed += 1
        log.info("%s: installed the primary's snapshot at lsn %d", self.name, lsn)

    def note_cut(self, cut: Cut, why: str, acked_lsn: int | None) -> None:
        if not cut.records:
            return
        acked: int | None = None
        if acked_lsn is not None:
            acked = max(0, min(acked_lsn, cut.last_lsn) - cut.first_lsn + 1)
        self.quarantined += cut.records
        entry = self.journal.note(
            f"set aside {cut.records} records ({why})",
            set_aside=SetAside(
                cut.records, cut.first_lsn, cut.last_lsn, str(cut.quarantine), acked
            ),  # acknowledged_here None: unknown (we restarted since)
            quarantined=self.quarantined,
        )
        self.entries.append(entry)
        del self.entries[:-MAX_QUARANTINE_ENTRIES]
        told = (
            f"{acked} of them acknowledged by this server"
            if acked is not None
            else "some may have been acknowledged"
        )
        log.error(
            "%s: %s: %d record(s) (lsn %d..%d) held only by this server were set aside "
            "(%s); `zmqfail log dump --data-dir %s` reads them",
            self.name,
            why,
            cut.records,
            cut.first_lsn,
            cut.last_lsn,
            told,
            cut.quarantine,
        )
