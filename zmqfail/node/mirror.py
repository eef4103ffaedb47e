"""Backup side of the replication agent (method 250a, steps 252-254).

Records arrive on PULL (either link), are checked (decodable, consecutive
LSN, epoch not stale), appended to the RAM log and the disk buffer, and
applied to the tables so the backup's application stays warm. A commit
request on REP is answered with the highest consecutive LSN held; when records
it asks about are still in flight on the other socket, the answer waits a
moment for them rather than reporting a gap at once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import zmq

from zmqfail.errors import ProtocolError
from zmqfail.protocol import (
    READ_BUDGET,
    Channel,
    CommitAck,
    CommitRequest,
    ReplRecords,
    SnapshotImage,
    decode,
    decode_as,
    limit_socket,
)
from zmqfail.replication import LINKS
from zmqfail.txlog.history import EpochHistory
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.snapshot import decode_state

if TYPE_CHECKING:
    from zmqfail.node.server import Node

log = logging.getLogger("zmqfail.mirror")

GAP_WAIT = 0.02  # seconds a commit waits for records still in flight


class Mirror:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.pull: dict[str, zmq.Socket[bytes]] = {}
        self.rep: dict[str, zmq.Socket[bytes]] = {}
        self.link_of: dict[zmq.Socket[bytes], str] = {}
        self.pending: dict[str, tuple[int, float]] = {}  # link -> (asked lsn, deadline)
        self.bad_frames = 0
        self.stale_frames = 0
        self.link = ""  # the link the last records came on
        self.primary = ""
        self.last_heard = 0.0
        for link in LINKS:
            ends = node.me.link(link)
            pull: zmq.Socket[bytes] = node.ctx.socket(zmq.PULL)
            pull.setsockopt(zmq.LINGER, 0)
            pull.setsockopt(zmq.RCVHWM, 10_000)
            limit_socket(pull, Channel.REPL_RECORDS)
            rep: zmq.Socket[bytes] = node.ctx.socket(zmq.REP)
            rep.setsockopt(zmq.LINGER, 0)
            limit_socket(rep, Channel.REPL_ACK)
            node.bind(pull, ends.records)
            node.bind(rep, ends.ack)
            self.pull[link], self.rep[link] = pull, rep
            self.link_of[pull] = self.link_of[rep] = link

    def sockets(self) -> list[zmq.Socket[bytes]]:
        return list(self.link_of)

    @property
    def held(self) -> int:
        # Held = in the RAM transaction log; applying to the tables comes after
        # the answer, so the primary's acknowledgement does not wait for it.
        return self.node.memlog.last_lsn

    def on_readable(self, sock: zmq.Socket[bytes], now: float) -> None:
        link = self.link_of[sock]
        if sock is self.pull[link]:
            budget = READ_BUDGET
            for _ in range(64):
                if budget <= 0:
                    break
                try:
                    data = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                budget -= len(data)
                if link not in self.node.cut_links:
                    self._on_push(link, data, now)
        elif link not in self.pending:
            # A REP takes one request and must answer it before the next, so
            # read the whole message without blocking (poll may wake us for a
            # frame libzmq then drops, such as one with no envelope), and answer
            # anything malformed: a node never stops on a bad frame.
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if link in self.node.cut_links:
                # A cut link answers nothing, but a REP must answer before it can
                # receive again; the asker times out and resets its REQ anyway.
                self.pending[link] = (-1, float("inf"))
                return
            if len(parts) != 1:
                self.bad_frames += 1
                self._answer(link, "gap")
            else:
                self._on_commit(link, parts[0], now)
        self.answer_pending(now)

    def _on_push(self, link: str, data: bytes, now: float) -> None:
        try:
            msg = decode(data)
            if not isinstance(msg, ReplRecords | SnapshotImage):
                raise ProtocolError(f"{msg.TYPE} not expected on the records socket")
        except ProtocolError as exc:
            self.bad_frames += 1
            log.warning("%s: refused a replication frame on %s: %s", self.node.name, link, exc)
            return
        verdict = self.node.accept_primary(msg.sender, msg.epoch)
        if verdict == "stranger":
            self.bad_frames += 1
            return
        if verdict != "ok":
            self.stale_frames += 1
            return
        self.link, self.primary, self.last_heard = link, msg.sender, now
        if isinstance(msg, SnapshotImage):
            self._install(msg)
            return
        lsn = msg.first_lsn
        node = self.node
        for payload in msg.records:
            if lsn > self.held + 1:
                return  # a gap: the commit answer asks for a resend
            if lsn == self.held + 1:
                try:
                    rec = TxRecord.decode(payload)
                    if rec.lsn != lsn:
                        raise ProtocolError(f"record says lsn {rec.lsn}, frame says {lsn}")
                    last = node.proc.history.last
                    if last is None or last.epoch != rec.epoch:
                        self._adopt_term(msg.sender, rec.epoch, lsn)
                except ProtocolError as exc:
                    self.bad_frames += 1
                    log.warning("%s: refused record %d: %s", node.name, lsn, exc)
                    return
                node.hold_record(rec, payload)
            lsn += 1

    def _adopt_term(self, sender: str, epoch: int, lsn: int) -> None:
        """The first record of another term: take the term (leader, id) from the
        primary's history, and store it before the record is acknowledged, so
        our history always covers our log (txlog.history)."""
        node = self.node
        view = node.heartbeats.peers.get(sender)
        term = view.history.term_at(lsn) if view is not None else None
        if term is None or term.epoch != epoch:
            raise ProtocolError(f"no term of epoch {epoch} at lsn {lsn} in {sender}'s history")
        node.proc.history.adopt(term, lsn)
        node.save_meta()

    def _install(self, msg: SnapshotImage) -> None:
        try:
            state = decode_state(msg.state)
            history = EpochHistory.from_wire(msg.history)
            self.node.install_snapshot(msg.lsn, msg.epoch, state, history)
        except (ProtocolError, ValueError) as exc:
            self.bad_frames += 1
            log.warning("%s: refused a snapshot: %s", self.node.name, exc)

    def _on_commit(self, link: str, data: bytes, now: float) -> None:
        try:
            req = decode_as(data, CommitRequest)
        except ProtocolError as exc:
            self.bad_frames += 1
            # REP must answer; an ack naming our state lets the asker carry on.
            self._answer(link, "gap")
            log.warning("%s: bad commit request on %s: %s", self.node.name, link, exc)
            return
        verdict = self.node.accept_primary(req.sender, req.epoch)
        if verdict == "stranger":
            self.bad_frames += 1
            self._answer(link, "wait")  # we follow no such server
            return
        if verdict != "ok":
            self._answer(link, verdict)
            return
        self.primary, self.last_heard = req.sender, now
        self.pending[link] = (req.lsn, now + GAP_WAIT)

    def answer_pending(self, now: float) -> None:
        for link, (lsn, deadline) in list(self.pending.items()):
            if lsn < 0:
                if link not in self.node.cut_links:
                    self._answer(link, "gap")  # unblock the REP after a heal
                continue
            if self.held >= lsn:
                self._answer(link, "ok")
            elif now >= deadline:
                self._answer(link, "gap")

    def _answer(self, link: str, status: str) -> None:
        self.pending.pop(link, None)
        node = self.node
        ack = CommitAck(
            node.name, node.agent.fs.epoch, self.held, status, node.incarnation, node.held_epoch
        )
        self.rep[link].send(ack.encode())

    def next_deadline(self) -> float | None:
        ds = [d for lsn, d in self.pending.values() if lsn >= 0]
        return min(ds) if ds else None

    def close(self) -> None:
        for s in self.link_of:
            s.close(linger=0)
