"""Backup side of the replication agent (method 250a, steps 252-254).

Records arrive on PULL (either link) and are checked: decodable, from the
primary we follow (a configured server at our epoch), the next LSN, of a term
the primary's history names. They go into the RAM log and the disk buffer;
the tables get them after the answer. A commit request on REP is answered with
the highest consecutive LSN held (with `[flush] durability = "disk"`: held and
fsynced, so the answer waits for the flush); when records it asks about are
still in flight on the other socket, the answer waits a moment for them rather
than reporting a gap at once. A REP must answer every request before the next one,
so anything malformed gets a `gap` answer too.

A backup catching up reads its records a turn's budget at a time, so a
commit can ask for records that wait unread in its own queue: that is no
gap, and a gap answer would make the primary push everything again on top
of them (`tools/bench rejoin` counted 8-52 link resets in one rejoin from
that). While records wait unread, the answer says what it holds and no gap;
the primary asks again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from zmqfail.core.log import NodeLog
from zmqfail.core.peers import PeerTable
from zmqfail.core.ports import Outbox
from zmqfail.errors import ProtocolError
from zmqfail.protocol import (
    AckStatus,
    CommitAck,
    CommitRequest,
    ReplRecords,
    SnapshotImage,
    decode,
    decode_as,
)
from zmqfail.replication import LINKS
from zmqfail.txlog.history import EpochHistory
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.snapshot import decode_state

log = logging.getLogger("zmqfail.mirror")

GAP_WAIT = 0.02  # seconds a commit waits for records still in flight

# What accept() answers: take it, the sender is stale (it must step down), we
# do not follow it (yet), or it is no server of ours at all.
OK, FENCED, WAIT, STRANGER = "ok", "fenced", "wait", "stranger"


class Follower:
    def __init__(
        self,
        name: str,
        nlog: NodeLog,
        peers: PeerTable,
        out: Outbox,
        accept: Callable[[str, int], str],
        ack_fields: Callable[[], tuple[int, int]],
        install: Callable[[int, int, dict[str, Any], EpochHistory], None],
        save_meta: Callable[[], None],
    ) -> None:
        self.name = name
        self.nlog = nlog
        self.peers = peers
        self.out = out
        self._accept = accept  # (sender, epoch) -> OK / FENCED / WAIT / STRANGER
        self._ack_fields = ack_fields  # () -> (our epoch, our incarnation)
        self._install = install
        self._save_meta = save_meta
        self.pending: dict[str, tuple[int, float]] = {}  # link -> (asked lsn, deadline)
        self.unread: set[str] = set()  # links whose records wait unread this turn
        self.bad_frames = 0
        self.stale_frames = 0
        self.link = ""  # the link the last records came on
        self.primary = ""  # the primary we mirror ("" when none)
        self.last_heard = 0.0  # when it last replicated to us

    # -------------------------------------------------------------- records
    def new_turn(self) -> None:
        self.unread.clear()

    def on_records(self, link: str, frames: list[bytes], now: float, more: bool = False) -> None:
        """`more`: the shell stopped reading at its budget with records still queued."""
        if more:
            self.unread.add(link)
        for data in frames:
            self._on_push(link, data, now)
        self.answer_pending(now)

    def _on_push(self, link: str, data: bytes, now: float) -> None:
        try:
            msg = decode(data)
            if not isinstance(msg, ReplRecords | SnapshotImage):
                raise ProtocolError(f"{msg.TYPE} not expected on the records socket")
        except ProtocolError as exc:
            self.bad_frames += 1
            log.warning("%s: refused a replication frame on %s: %s", self.name, link, exc)
            return
        verdict = self._accept(msg.sender, msg.epoch)
        if verdict == STRANGER:
            self.bad_frames += 1
            return
        if verdict != OK:
            self.stale_frames += 1
            return
        self.link, self.primary, self.last_heard = link, msg.sender, now
        if isinstance(msg, SnapshotImage):
            self._on_snapshot(msg)
            return
        nlog = self.nlog
        lsn = msg.first_lsn
        held = nlog.held
        # The term the last record was checked against: its epoch, and the
        # LSN its successor begins at. A run of records of one term (a catch-up
        # frame holds hundreds) is checked against the history once.
        epoch, until = -1, None
        for payload in msg.records:
            if lsn > held + 1:
                return  # a gap: the commit answer asks for a resend
            if lsn == held + 1:
                try:
                    rec = TxRecord.decode(payload)
                    if rec.lsn != lsn:
                        raise ProtocolError(f"record says lsn {rec.lsn}, frame says {lsn}")
                    if rec.epoch != epoch or (until is not None and lsn >= until):
                        epoch, until = rec.epoch, self._adopt_term(msg.sender, rec.epoch, lsn)
                except ProtocolError as exc:
                    self.bad_frames += 1
                    log.warning("%s: refused record %d: %s", self.name, lsn, exc)
                    return
                nlog.hold(rec, payload)
                held = lsn
            lsn += 1

    def _adopt_term(self, sender: str, epoch: int, lsn: int) -> int | None:
        """Each record is of the term the primary's history names at its LSN; the
        first record of another term (another leader, or the same epoch number
        reached by another server) notes that term, durably, before the record
        is acknowledged, so our history always describes our log. Returns the
        LSN the sender's next term begins at (None: none after it): records
        before it, of the same epoch, are of this term too."""
        view = self.peers.views.get(sender)
        term, until = view.history.term_span(lsn) if view is not None else (None, None)
        if term is None or term.epoch != epoch:
            raise ProtocolError(f"no term of epoch {epoch} at lsn {lsn} in {sender}'s history")
        history = self.nlog.proc.history
        last = history.last
        if last is None or not last.same(term) or last.first_lsn > lsn:
            history.adopt(term, lsn)
            self._save_meta()
        return until

    def _on_snapshot(self, msg: SnapshotImage) -> None:
        try:
            state = decode_state(msg.state)
            history = EpochHistory.from_wire(msg.history)
        except ProtocolError as exc:
            self.bad_frames += 1
            log.warning("%s: refused a snapshot: %s", self.name, exc)
            return
        self._install(msg.lsn, msg.epoch, state, history)

    # -------------------------------------------------------------- commits
    def on_commit(self, link: str, parts: list[bytes], now: float) -> None:
        if len(parts) != 1:
            self.bad_frames += 1
            self._answer(link, AckStatus.GAP)
            return
        try:
            req = decode_as(parts[0], CommitRequest)
        except ProtocolError as exc:
            self.bad_frames += 1
            self._answer(link, AckStatus.GAP)
            log.warning("%s: bad commit request on %s: %s", self.name, link, exc)
            return
        verdict = self._accept(req.sender, req.epoch)
        if verdict == STRANGER:
            self.bad_frames += 1
            self._answer(link, AckStatus.WAIT)  # we follow no such server
            return
        if verdict != OK:
            self._answer(link, AckStatus.FENCED if verdict == FENCED else AckStatus.WAIT)
            return
        self.primary, self.last_heard = req.sender, now
        self.pending[link] = (req.lsn, now + GAP_WAIT)
        self.answer_pending(now)

    def answer_pending(self, now: float) -> None:
        if not self.pending:
            return
        nlog = self.nlog
        held, durable = nlog.held, nlog.durable()[0]
        for link, (lsn, deadline) in list(self.pending.items()):
            if durable >= lsn:
                self._answer(link, AckStatus.OK)
            elif held >= lsn:
                continue  # held, not yet flushed: the flush comes
            elif self.unread:
                # What it asks for may wait in our own queue: say at once how
                # far we are (no gap), so the primary neither times the link
                # out nor pushes it all again.
                self._answer(link, AckStatus.OK)
            elif now >= deadline:
                self._answer(link, AckStatus.GAP)

    def _answer(self, link: str, status: AckStatus) -> None:
        self.pending.pop(link, None)
        self.out.answer.append((link, self.ack(status)))

    def ack(self, status: AckStatus) -> bytes:
        epoch, incarnation = self._ack_fields()
        lsn, lsn_epoch = self.nlog.durable()
        return CommitAck(self.name, epoch, lsn, status, incarnation, lsn_epoch).encode()

    def next_deadline(self) -> float | None:
        held = self.nlog.held
        ds = [d for lsn, d in self.pending.values() if held < lsn]
        return min(ds) if ds else None

    def forget(self) -> None:
        """Stop mirroring (a takeover). Commits still pending are answered as
        usual: a REP owes every request an answer."""
        self.primary = ""


__all__ = ["FENCED", "LINKS", "OK", "STRANGER", "WAIT", "Follower"]
