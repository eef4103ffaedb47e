"""The client side of a server: requests in, replies out (method 200, 210a-270).

Decodes client frames, hands requests to the processor (dedup, application,
transaction record), holds each reply until its record is committed (the
reply gate), answers hellos, and tells the failover agent about client votes
(only from a client the lost primary served, on its own connection). A
malformed frame gets an `error` reply and is counted; a frame whose framing
is unknown was already dropped and counted by the shell.

Welcomes and recovery signals tell each client what the log holds of its
session; a client's hello says what it was answered. Answered msg_ids the
active server does not know (a power loss of every server) are counted and
logged once per client and gap: the client is told by the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from zmqfail.core.log import NodeLog
from zmqfail.core.ports import Outbox
from zmqfail.errors import ProtocolError
from zmqfail.processor import Processed, ReplyGate
from zmqfail.protocol import (
    STATUS_ERROR,
    STATUS_NOT_ACTIVE,
    Hello,
    Probe,
    RecoverySignal,
    Register,
    Request,
    Welcome,
    decode_request,
    encode_reply,
)
from zmqfail.sessions import unknown_acks

log = logging.getLogger("zmqfail.node")

MAX_CLIENTS = 100_000  # identities remembered for the recovery signal
PUSH_EVERY = 16  # requests processed between replication pushes within one batch


class Frontend:
    def __init__(
        self,
        name: str,
        nlog: NodeLog,
        out: Outbox,
        serving: Callable[[], bool],
        epoch: Callable[[], int],
        describe: Callable[[], str],
        vote: Callable[[bytes, Hello], bool],
        pump: Callable[[float], None],
    ) -> None:
        self.name = name
        self.nlog = nlog
        self.out = out
        self.gate = ReplyGate()
        self._serving = serving  # () -> do we take requests now
        self._epoch = epoch
        self._describe = describe  # () -> "backup/normal", for not_active replies
        self._vote = vote  # (ident, hello) -> counted as a vote
        self._pump = pump  # let replication start on part of a large batch
        self.clients: dict[bytes, float] = {}  # identities seen, for the recovery signal
        self.requests = 0
        self.replies = 0
        self.bad_frames = 0
        self.too_many_in_flight = 0  # requests refused: the client's bound was reached
        self.votes = 0
        self.votes_refused = 0
        self.probes = 0
        self.ack_gaps = 0  # clients told that answered msg_ids are unknown here
        self.ack_gap_ids = 0  # the width of those ranges (queries in them included)
        self._gaps: dict[str, tuple[int, int]] = {}  # client_id -> last gap counted

    def on_frames(self, frames: list[tuple[bytes, bytes]], now: float) -> None:
        n_req = 0
        clients = self.clients
        for ident, payload in frames:
            self.requests += 1
            if ident in clients or len(clients) < MAX_CLIENTS:
                clients[ident] = now
            try:
                msg = decode_request(payload)
            except ProtocolError as exc:
                self.bad_frames += 1
                self._send(ident, self._error(0, "bad_frame", str(exc)))
                continue
            if isinstance(msg, Request):
                self._on_request(ident, msg)
                n_req += 1
                if n_req % PUSH_EVERY == 0:
                    # Let the backup start on this part of the batch while we
                    # process the rest: primary, backup and client overlap.
                    self._pump(now)
            elif isinstance(msg, Register):
                if not self._refused(ident, 0):
                    self._take(ident, self.nlog.proc.register(msg.client_id, msg.nonce))
            elif isinstance(msg, Hello):
                active = self._serving()
                if not active and msg.lost and msg.lost != self.name:
                    if self._vote(ident, msg):
                        self.votes += 1
                    else:
                        self.votes_refused += 1
                sid, known = self.nlog.proc.sessions.session_of(msg.client_id)
                if active and msg.acked:
                    self._note_gap(msg, sid, known)
                welcome = Welcome(self.name, self._epoch(), active, sid, known)
                self._send(ident, welcome.encode())
            elif isinstance(msg, Probe):
                # Step 420: a peer asks whether we live. Not a client: no vote,
                # no recovery signal for it.
                clients.pop(ident, None)
                self.probes += 1
                self.out.client.append(
                    (ident, Welcome(self.name, self._epoch(), self._serving()).encode())
                )
            else:
                self.bad_frames += 1
                self._send(ident, self._error(0, "unexpected", f"{msg.TYPE} not expected"))

    def _note_gap(self, hello: Hello, sid: int, known: int) -> None:
        first, last = unknown_acks(hello.session, hello.acked, sid, known)
        if not last or self._gaps.get(hello.client_id) == (first, last):
            return  # no gap, or this one was counted (the client resends hellos)
        if len(self._gaps) >= MAX_CLIENTS:
            self._gaps.clear()
        self._gaps[hello.client_id] = (first, last)
        self.ack_gaps += 1
        self.ack_gap_ids += last - first + 1
        held = f"knows up to msg_id {known}" if sid == hello.session else "has no such session"
        log.warning(
            "%s: client %s was answered msg_ids up to %d in session %d; this server %s: "
            "acknowledged requests in %d..%d are lost (a power loss of every server?); "
            "the client is told",
            self.name,
            hello.client_id,
            hello.acked,
            hello.session,
            held,
            first,
            last,
        )

    def _on_request(self, ident: bytes, req: Request) -> None:
        if self._refused(ident, req.msg_id):
            return
        proc = self.nlog.proc
        bound = proc.sessions.window
        if self.gate.held_for(ident) >= bound and proc.is_new(
            req.client_id, req.msg_id, req.session
        ):
            # More unanswered requests than the session keeps replies for: a
            # client of this library never gets here (the session grant tells
            # it the window). Refused unprocessed, so a resend later is served.
            # A resend of one already executed goes on to its stored reply:
            # an error for it would tell the client an executed order failed.
            self.too_many_in_flight += 1
            message = (
                f"{bound} requests of this client already wait for their commit "
                f"(the session window); msg_id {req.msg_id} was not processed: "
                "send it again once replies arrive"
            )
            self._send(ident, self._error(req.msg_id, "too_many_in_flight", message))
            return
        self._take(ident, proc.submit(req.client_id, req.msg_id, req.body, req.session))

    def _refused(self, ident: bytes, msg_id: int) -> bool:
        """Only the active server takes requests; the others say so."""
        if self._serving():
            return False
        result = {"code": "not_active", "message": f"{self.name} is {self._describe()}"}
        reply = encode_reply(msg_id, STATUS_NOT_ACTIVE, result, self._epoch(), self.name)
        self._send(ident, reply)
        return True

    def _take(self, ident: bytes, out: Processed) -> None:
        """Log what the request wrote; answer now or once that is committed."""
        nlog = self.nlog
        if out.record is not None:
            nlog.write(out.gate_lsn, out.record)
        if out.gate_lsn <= nlog.committed:
            self._send(ident, out.reply)
        else:
            self.gate.hold(out.gate_lsn, ident, out.reply)

    def commit(self, lsn: int) -> None:
        """Records up to `lsn` are committed: release the replies waiting for them."""
        nlog = self.nlog
        if lsn > nlog.committed:
            nlog.committed = lsn
        for ident, data in self.gate.release(nlog.committed):
            self._send(ident, data)

    def recovery_signal(self, epoch: int) -> None:
        """Step 429: tell every client we have seen to resend what has no reply."""
        sessions = self.nlog.proc.sessions
        for ident in list(self.clients):
            # A client's routing id is its client_id: tell it what we hold of its session.
            sid, known = sessions.session_of(ident.decode("utf-8", "replace"))
            self._send(ident, RecoverySignal(self.name, epoch, sid, known).encode())

    def _send(self, ident: bytes, data: bytes) -> None:
        self.out.client.append((ident, data))
        self.replies += 1

    def _error(self, msg_id: int, code: str, message: str) -> bytes:
        result = {"code": code, "message": message}
        return encode_reply(msg_id, STATUS_ERROR, result, self._epoch(), self.name)

    def recent_clients(self, now: float, within: float = 5.0) -> int:
        return sum(1 for t in self.clients.values() if now - t < within)
