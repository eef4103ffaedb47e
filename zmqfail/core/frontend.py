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

Batches (protocol 6): a `reqs` frame is taken request by request, each with
its own record, dedup entry and reply; one that does not decode gets its own
error reply. A turn takes at most `TURN_BUDGET` requests; the rest wait
here, in arrival order, for the next turns (so a large batch is replicated
and answered in parts, overlapping with the backup and the client). The
replies one client is owed at the end of a call (the requests of one turn,
or what one commit releases) leave as one `reps` frame; a lone reply stays
a plain `rep`, so one request in flight costs nothing more. No reply is
kept between calls: every call leaves its frames in the outbox.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from zmqfail.core.log import NodeLog
from zmqfail.core.ports import Outbox
from zmqfail.errors import ProtocolError
from zmqfail.processor import Processed, ReplyGate
from zmqfail.protocol import (
    MAX_BATCH,
    REPLY_BATCH_BYTES,
    STATUS_ERROR,
    STATUS_NOT_ACTIVE,
    BadItem,
    Hello,
    Probe,
    RecoverySignal,
    Register,
    ReplyBatch,
    Welcome,
    encode_batch,
    encode_reply,
    is_reply_frame,
    read_requests,
)
from zmqfail.protocol.codec import AnyRequest
from zmqfail.sessions import unknown_acks

log = logging.getLogger("zmqfail.node")

MAX_CLIENTS = 100_000  # identities remembered for the recovery signal
TURN_BUDGET = 16  # requests taken per turn of the loop; the rest wait for the next turns


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
        probe_gen: Callable[[str], int] = lambda _asker: 0,
    ) -> None:
        self.name = name
        self.nlog = nlog
        self.out = out
        self.gate = ReplyGate()
        self._serving = serving  # () -> do we take requests now
        self._epoch = epoch
        self._describe = describe  # () -> "backup/normal", for not_active replies
        self._vote = vote  # (ident, hello) -> counted as a vote
        self._probe_gen = probe_gen  # (asking server) -> the in-sync generation between us
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
        # Replies owed per client during one call, in order; `_flush` turns
        # them into frames before the call returns.
        self._owed: dict[bytes, list[bytes]] = {}
        # Frames not yet taken, in arrival order, and the batch being taken
        # (its client, its items, the next one): at most `budget` requests a
        # turn, so a large batch is replicated, confirmed and answered in
        # parts while the rest waits, and client, primary and backup work at
        # the same time instead of in turns (docs/architecture.md).
        self.budget = TURN_BUDGET
        self._left = TURN_BUDGET
        self._backlog: deque[tuple[bytes, bytes]] = deque()
        self._batch: tuple[bytes, list[AnyRequest | BadItem]] | None = None
        self._next_item = 0

    @property
    def backlogged(self) -> bool:
        """Requests wait for a later turn: the loop turns again at once, and
        takes no new client frames until they are taken."""
        return self._batch is not None or bool(self._backlog)

    def new_turn(self) -> None:
        self._left = self.budget

    def on_frames(self, frames: list[tuple[bytes, bytes]], now: float) -> None:
        self._backlog.extend(frames)
        self.work(now)

    def work(self, now: float) -> None:
        """Take waiting frames in order until this turn's budget is spent."""
        if not self.backlogged:
            return
        try:
            while self._left > 0:
                batch = self._batch
                if batch is None:
                    if not self._backlog:
                        break
                    ident, payload = self._backlog.popleft()
                    self._on_frame(ident, payload, now)
                    continue
                ident, items = batch
                first = self._next_item
                last = min(len(items), first + self._left)
                # Asked once for the part: nothing a request does changes it.
                serving = self._serving()
                for item in items[first:last]:
                    if isinstance(item, BadItem):
                        self.bad_frames += 1
                        self._send(ident, self._error(item.msg_id, "bad_frame", item.reason))
                    elif serving:
                        self._on_request(ident, item)
                    else:
                        self._refuse(ident, item.msg_id)
                self._left -= last - first
                if last == len(items):
                    self._batch = None
                else:
                    self._next_item = last
        finally:
            self._flush()

    def _on_frame(self, ident: bytes, payload: bytes, now: float) -> None:
        self.requests += 1
        clients = self.clients
        if ident in clients or len(clients) < MAX_CLIENTS:
            clients[ident] = now
        try:
            msg = read_requests(payload)
        except ProtocolError as exc:
            self.bad_frames += 1
            self._send(ident, self._error(0, "bad_frame", str(exc)))
            return
        if isinstance(msg, list):
            self.requests += len(msg) - 1  # counted by message, as lone frames are
            self._batch, self._next_item = (ident, msg), 0
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
            gen = self._probe_gen(msg.server)
            welcome = Welcome(self.name, self._epoch(), self._serving(), gen=gen)
            self.out.client.append((ident, welcome.encode()))
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

    def _on_request(self, ident: bytes, req: AnyRequest) -> None:
        """A request, on the active server."""
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
        self._refuse(ident, msg_id)
        return True

    def _refuse(self, ident: bytes, msg_id: int) -> None:
        result = {"code": "not_active", "message": f"{self.name} is {self._describe()}"}
        reply = encode_reply(msg_id, STATUS_NOT_ACTIVE, result, self._epoch(), self.name)
        self._send(ident, reply)

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
        self._flush()

    def recovery_signal(self, epoch: int) -> None:
        """Step 429: tell every client we have seen to resend what has no reply."""
        sessions = self.nlog.proc.sessions
        for ident in list(self.clients):
            # A client's routing id is its client_id: tell it what we hold of its session.
            sid, known = sessions.session_of(ident.decode("utf-8", "replace"))
            self._send(ident, RecoverySignal(self.name, epoch, sid, known).encode())
        self._flush()

    def _send(self, ident: bytes, data: bytes) -> None:
        """A frame for a client: a reply waits for the others it is owed in
        this call; anything else goes behind the replies owed before it."""
        self.replies += 1
        if is_reply_frame(data):
            owed = self._owed.get(ident)
            if owed is None:
                self._owed[ident] = [data]
            else:
                owed.append(data)
            return
        if ident in self._owed:
            self._flush_one(ident, self._owed.pop(ident))
        self.out.client.append((ident, data))

    def _flush(self) -> None:
        """Each client's owed replies as one frame (a lone one as it is)."""
        if self._owed:
            for ident, replies in self._owed.items():
                self._flush_one(ident, replies)
            self._owed.clear()

    def _flush_one(self, ident: bytes, replies: list[bytes]) -> None:
        out = self.out.client
        if len(replies) == 1:
            out.append((ident, replies[0]))
            return
        for chunk in reply_chunks(replies):
            out.append((ident, chunk[0] if len(chunk) == 1 else encode_batch(ReplyBatch, chunk)))

    def _error(self, msg_id: int, code: str, message: str) -> bytes:
        result = {"code": code, "message": message}
        return encode_reply(msg_id, STATUS_ERROR, result, self._epoch(), self.name)

    def recent_clients(self, now: float, within: float = 5.0) -> int:
        return sum(1 for t in self.clients.values() if now - t < within)


def reply_chunks(replies: list[bytes]) -> list[list[bytes]]:
    """Consecutive runs of replies, each at most MAX_BATCH of them and
    closed once it holds REPLY_BATCH_BYTES (a larger reply goes alone)."""
    chunks: list[list[bytes]] = []
    cur: list[bytes] = []
    size = 0
    for r in replies:
        if cur and (len(cur) >= MAX_BATCH or size + len(r) > REPLY_BATCH_BYTES):
            chunks.append(cur)
            cur, size = [], 0
        cur.append(r)
        size += len(r)
    chunks.append(cur)
    return chunks
