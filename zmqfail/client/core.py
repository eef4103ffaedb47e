"""The client's failover logic without sockets (method 500), for every shell:
the blocking client, the asyncio client and the simulator.

It knows every server (by index), which one is active, and the session
(msg_ids, requests without a reply). Fed frames and ticks with `now`, it
fills `out` with (server index, frame) to send and hands back completed
replies. The application sees states, never exceptions (kazoo-style):
CONNECTING, CONNECTED to a server at an epoch, FAILING_OVER while it looks
for the server that took over, LOST when no server answered for
`lost_after` (it still looks, backing off, until the caller gives up).
Listeners hear every change of state.

Rules that make failover safe:
- A missing reply alone is no proof the server is gone (it may be waiting for
  its backup): with a request unanswered for `PING_AFTER` the client pings;
  only a server that gives no sign of life for `failover_after` is left.
- Looking for the server that took over, the client probes every server,
  naming the one it lost (the Binary Star vote), first every `HELLO_EVERY`,
  then backing off, until a server sends the recovery signal or says it is
  active at an epoch not older than the one the client knew.
- It then resends every request without a reply, in the original order; the
  server's dedup table answers what the old primary had processed.
- A reply from an epoch older than one it has seen (a deposed server that
  woke up) is dropped: the request waits for the current server's answer.
- Before its first request the client registers a session with the server
  (and again after its session expired: see `session.py`); requests made
  meanwhile wait and go out in the new session.
- Requests that leave together for one server go in one `reqs` frame (a
  lone one as a plain `req`), in order, split only at the client channel's
  frame bound or MAX_BATCH; any other frame closes the batch, so frames reach
  a server in the order they were made. A `reps` frame is taken reply by
  reply, as if each had come alone.
- Every hello names the session and the highest logged msg_id the client was
  answered; the active server's welcome (and recovery signal) says what it
  knows of that session. Answered writes it does not know (a power loss of
  every server) are reported once as an `AckLoss` to the `loss_listeners`
  and kept in `acks_lost`: the application decides (`acks.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from zmqfail.client.acks import AckLoss
from zmqfail.client.session import ClientState, Session
from zmqfail.errors import ProtocolError
from zmqfail.protocol import (
    MAX_BATCH,
    MAX_FRAME_BYTES,
    STATUS_NOT_ACTIVE,
    Channel,
    Hello,
    Message,
    RecoverySignal,
    Reply,
    ReplyBatch,
    RequestBatch,
    SessionGrant,
    Welcome,
    batch_replies,
    check_tree,
    decode,
    encode_batch,
    encode_request,
    read_replies,
)
from zmqfail.protocol.typed import flat_map

HELLO_EVERY = 0.05  # seconds between the first probes of every server while searching
HELLO_MAX = 1.0  # the probes back off to this while nobody answers
PING_AFTER = 0.03  # a request this old without a reply: ping the server
# The `reqs` frame's own bytes around its requests (array headers, version, tag).
BATCH_OVERHEAD = 16

Listener = Callable[[ClientState, ClientState], None]
LossListener = Callable[[AckLoss], None]


@dataclass(frozen=True, slots=True)
class Failover:
    """One switch-over the client lived through."""

    started: float  # when the failure was noticed
    ended: float  # when requests flowed again
    from_server: str
    to_server: str
    epoch: int
    resent: int


class ClientCore:
    def __init__(
        self,
        servers: list[str],
        session: Session,
        failover_after: float,
        lost_after: float,
        window: int = 64,
    ) -> None:
        if not servers:
            raise ValueError("a client needs at least one server")
        self.servers = servers  # names (or endpoints) by index, for the record
        self.session = session
        self.failover_after = failover_after
        self.lost_after = lost_after
        self.window = window  # the server may lower it (it stores fewer replies)
        self._out: list[tuple[int, bytes]] = []
        self._batch: list[bytes] = []  # request frames for `_batch_to`, not yet in `_out`
        self._batch_to = 0
        self._batch_bytes = 0
        self.bad_replies = 0  # items of reply batches that did not decode
        self.active: int | None = None
        self.failovers: list[Failover] = []
        self.stale_replies = 0  # dropped: from an epoch older than one we know
        self.listeners: list[Listener] = []
        self.loss_listeners: list[LossListener] = []
        self.acks_lost: list[AckLoss] = []  # every loss told, oldest first
        self._lost_at = 0.0  # when the current search began
        self._looking = False  # a search began: until then no deadline runs
        self._next_hello = 0.0
        self._hello_every = HELLO_EVERY
        self._from = ""
        self._alive_at = 0.0  # last sign of life from the active server
        self._ping_at = 0.0

    @property
    def state(self) -> ClientState:
        return self.session.state

    # ----------------------------------------------------------- the outbox
    @property
    def out(self) -> list[tuple[int, bytes]]:
        """(server index, frame) to send, in order; the shell sends and clears
        it. Reading it closes the batch of requests being gathered, so every
        request submitted so far is in it."""
        if self._batch:
            self._close_batch()
        return self._out

    def _emit(self, idx: int, frame: bytes) -> None:
        if self._batch:
            self._close_batch()
        self._out.append((idx, frame))

    def _emit_request(self, idx: int, frame: bytes) -> None:
        """A request frame joins the batch for `idx` (a new batch past a bound)."""
        batch = self._batch
        if batch and (
            self._batch_to != idx
            or len(batch) >= MAX_BATCH
            or self._batch_bytes + len(frame) + BATCH_OVERHEAD > MAX_FRAME_BYTES[Channel.CLIENTS]
        ):
            self._close_batch()
        if not batch:
            self._batch_to = idx
        batch.append(frame)
        self._batch_bytes += len(frame)

    def _close_batch(self) -> None:
        batch = self._batch
        frame = batch[0] if len(batch) == 1 else encode_batch(RequestBatch, batch)
        self._out.append((self._batch_to, frame))
        batch.clear()
        self._batch_bytes = 0

    def _set_state(self, new: ClientState) -> None:
        old = self.session.state
        if new is not old:
            self.session.state = new
            for fn in list(self.listeners):
                fn(old, new)

    def _hello(self, lost: str) -> bytes:
        acked = self.session.acked
        return Hello(self.session.client_id, lost, acked.session, acked.high).encode()

    def _check_acks(self, server: str, epoch: int, session: int, known: int) -> None:
        """What the active server knows of our session, against what we were answered."""
        loss = self.session.acked.check(server, epoch, session, known)
        if loss is not None:
            self.acks_lost.append(loss)
            for fn in list(self.loss_listeners):
                fn(loss)

    def lost(self) -> None:
        """The shell's own deadline passed with no server found."""
        self._set_state(ClientState.LOST)

    # ------------------------------------------------------------ searching
    def search(self, now: float, failing_over: bool = False) -> None:
        """Start looking for the active server (step 520): probe every server."""
        if self.active is not None:
            self._from = self.session.server
        self.active = None
        self._looking = True
        self._lost_at = now
        self._next_hello = now
        self._hello_every = HELLO_EVERY
        self._set_state(ClientState.FAILING_OVER if failing_over else ClientState.CONNECTING)

    def _hello_all(self, now: float) -> None:
        lost = self._from if self.session.state is ClientState.FAILING_OVER else ""
        hello = self._hello(lost)
        for i in range(len(self.servers)):
            self._emit(i, hello)
        self._next_hello = now + self._hello_every
        self._hello_every = min(self._hello_every * 1.5, HELLO_MAX)

    def _adopt(self, idx: int, msg: Welcome | RecoverySignal, now: float) -> None:
        """A server is ready (recovery signal, step 530): resend what has no reply."""
        failing_over = self.session.state is ClientState.FAILING_OVER
        server, epoch = msg.server, msg.epoch
        self.active = idx
        self._alive_at = now
        s = self.session
        s.server = server
        s.epoch = max(s.epoch, epoch)
        self._set_state(ClientState.CONNECTED)
        self._check_acks(server, epoch, msg.session, msg.known)
        if not s.session:
            self._emit(idx, s.register(now).encode())
        pending = s.unanswered()
        for req in pending:  # step 540: in order
            self._emit_request(idx, req.encode())
        if pending:
            s.mark_resent(now)
        if failing_over:
            self.failovers.append(
                Failover(self._lost_at, now, self._from, server, epoch, len(pending))
            )

    # -------------------------------------------------------------- requests
    def submit(self, body: dict[str, object], now: float) -> int:
        """Queue one request; it goes to the active server now, or to whichever
        takes over. Returns its msg_id."""
        if self.active is None and self.session.state is ClientState.LOST:
            self.search(now)
        s = self.session
        # Checked here as the server will, before a msg_id is taken: the server
        # answers a body nested too deep with a bad_frame of msg_id 0 (it cannot
        # read the msg_id), and a frame over the client channel's bound is
        # dropped with the connection; either way the caller saw only a timeout.
        # A flat body is proved by encoding it (no walk); any other is walked,
        # and so is one the encoder refused, for the error it always gave.
        try:
            data = encode_request(s.client_id, s.next_msg_id, body, s.session)
        except ProtocolError:
            check_tree(body, "request body")
            raise
        if not flat_map(body):
            check_tree(body, "request body")
        bound = MAX_FRAME_BYTES[Channel.CLIENTS]
        if len(data) > bound:
            raise ProtocolError(
                f"request of {len(data)} bytes is over the {bound}-byte limit of the "
                "client channel; nothing was sent"
            )
        req = s.new_request(body, now)
        if self.active is not None and req.session:
            self._emit_request(self.active, data)
        return req.msg_id

    def on_frame(self, idx: int, data: bytes, now: float) -> list[Reply]:
        got: list[Reply] = []
        fast = read_replies(data)
        if fast is not None:
            replies, bad = fast
            self.bad_replies += bad
            for rep in replies:
                self._on_message(idx, rep, now, got)
            return got
        try:
            msg = decode(data)
        except ProtocolError:
            return []
        if isinstance(msg, ReplyBatch):
            replies, bad = batch_replies(msg)
            self.bad_replies += bad
            for rep in replies:
                self._on_message(idx, rep, now, got)
        else:
            self._on_message(idx, msg, now, got)
        return got

    def _on_message(self, idx: int, msg: Message, now: float, got: list[Reply]) -> None:
        s = self.session
        if isinstance(msg, Reply):
            if msg.status == STATUS_NOT_ACTIVE:
                if idx == self.active or self.active is None:
                    self.search(now, failing_over=True)
                return
            if msg.epoch < s.epoch:
                # From a server deposed since (it woke from a pause, say): its
                # answer may not be in the history that won. Keep waiting for
                # the current server's answer to the resend.
                self.stale_replies += 1
                return
            if idx == self.active:
                self._alive_at = now
            if s.on_reply(msg):
                got.append(msg)
                if s.must_register and self.active is not None:
                    self._emit(self.active, s.register(now).encode())
        elif isinstance(msg, SessionGrant):
            if msg.epoch < s.epoch:
                self.stale_replies += 1
                return
            if idx == self.active:
                self._alive_at = now
            for req in s.on_grant(msg):
                if self.active is not None:
                    self._emit_request(self.active, req.encode())
            if s.session and msg.window < self.window:
                # More in flight than the server keeps replies for, and a resend
                # after a failover could find its reply forgotten (stale).
                self.window = msg.window
        elif isinstance(msg, RecoverySignal):
            if msg.epoch > s.epoch or (self.active is None and msg.epoch >= s.epoch):
                if self.active is not None and idx != self.active:
                    self._from = s.server
                    self._lost_at = now
                    self._set_state(ClientState.FAILING_OVER)
                self._adopt(idx, msg, now)
        elif isinstance(msg, Welcome):
            if idx == self.active:
                if msg.active:
                    self._alive_at = now  # slow, maybe, but alive: keep it
                    if msg.epoch >= s.epoch:
                        self._check_acks(msg.server, msg.epoch, msg.session, msg.known)
                else:
                    self.search(now, failing_over=True)
            elif self.active is None and msg.active and msg.epoch >= s.epoch:
                self._adopt(idx, msg, now)

    # ------------------------------------------------------------------ time
    def tick(self, now: float) -> None:
        s = self.session
        if not self._looking:
            return  # never asked to find a server: not lost, only idle
        if s.state in (ClientState.CONNECTING, ClientState.FAILING_OVER, ClientState.LOST):
            if s.state is not ClientState.LOST and now - self._lost_at > self.lost_after:
                self._set_state(ClientState.LOST)
            if now >= self._next_hello:
                # LOST too keeps looking (backing off to HELLO_MAX): a server
                # may take over or come back before the caller gives up.
                self._hello_all(now)
            return
        if s.state is not ClientState.CONNECTED or self.active is None:
            return
        # Step 510: a missing reply alone is no proof; only silence is.
        oldest = s.oldest_sent_at()
        if oldest is None:
            return
        since = max(oldest, self._alive_at)
        if now - since > self.failover_after:
            self.search(now, failing_over=True)
            self._hello_all(now)
        elif now - oldest > PING_AFTER and now - self._ping_at > PING_AFTER:
            self._ping_at = now
            self._emit(self.active, self._hello(""))

    def next_deadline(self, now: float) -> float:
        s = self.session
        if not self._looking:
            return now + 1.0
        if s.state in (ClientState.CONNECTING, ClientState.FAILING_OVER):
            return min(self._next_hello, self._lost_at + self.lost_after)
        if s.state is ClientState.LOST:
            return self._next_hello
        if s.state is ClientState.CONNECTED and s.outstanding:
            return now + PING_AFTER
        return now + 1.0
