"""Client bookkeeping without I/O: the server session, msg_ids, requests
without a reply, state.

Both the sync and the asyncio client wrap one Session, so the rules that make
failover safe (increasing msg_ids, resend every unanswered request in the
original order and in the session it was first sent in, accept one reply per
msg_id) live in one place and are tested without sockets.

Server sessions: before its first request a client registers (``Register``
with a random nonce) and the server grants a session id once the registration
is committed. Every request names the session it was first sent in, and a
resend keeps that session: moving a request to another session could execute
it twice, since only the old session's stored replies know it. When the
server answers ``expired`` (the session was evicted to bound the servers'
memory, or replaced), that request and every other one still unanswered in
that session get an ``expired`` reply: their outcome is **unknown** (an
earlier send may have been executed before the eviction; only a reply from
the stored replies would have said so). The client then registers again by
itself; requests made meanwhile wait and go out in the new session.

Acknowledged but lost: the session keeps the msg_ids of the logged requests
it was answered (`acks.py`), so that a server recovered from a power loss of
every server can be caught not knowing some of them.
"""

from __future__ import annotations

import enum
import random
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from zmqfail.client.acks import AckedWrites
from zmqfail.protocol import STATUS_EXPIRED, Register, Reply, Request, SessionGrant


class ClientState(enum.Enum):
    """What the application sees instead of exceptions (kazoo-style)."""

    CONNECTING = "connecting"  # looking for the active server
    CONNECTED = "connected"  # requests flow to `server` at `epoch`
    FAILING_OVER = "failing_over"  # active server lost; waiting for a recovery signal
    LOST = "lost"  # no server answered before the deadline


@dataclass(slots=True)
class Outstanding:
    request: Request  # request.session 0: made while the client had no session, not sent yet
    sent_at: float
    sends: int = 1


def new_client_id() -> str:
    return "c-" + uuid.uuid4().hex[:16]


class Session:
    def __init__(
        self,
        client_id: str | None = None,
        first_msg_id: int = 1,
        rng: random.Random | None = None,
    ) -> None:
        self.client_id = client_id or new_client_id()
        self._rng = rng or random.Random()  # the simulator passes a seeded one
        self.next_msg_id = first_msg_id
        self.outstanding: OrderedDict[int, Outstanding] = OrderedDict()
        self.state = ClientState.CONNECTING
        self.server = ""
        self.epoch = 0
        self.resends = 0
        self.late_replies = 0
        self.session = 0  # granted by the server; 0: none (registering, or must register)
        self.window = 0  # replies the server stores per session (0: not told yet)
        self.nonce = 0  # of the registration in flight or granted; 0: must register
        self.register_sent_at = 0.0
        self.registrations = 0
        self.expired = 0  # requests answered "session expired": outcome unknown
        self.acked = AckedWrites()  # answered writes, checked against a recovered server

    # ------------------------------------------------------------ session

    @property
    def must_register(self) -> bool:
        return self.nonce == 0

    def register(self, now: float) -> Register:
        """The registration to send: a new one if none is in flight, else the
        same again (after a failover the server may already have logged it)."""
        if self.nonce == 0:
            self.nonce = self._rng.getrandbits(62) or 1
            self.registrations += 1
        self.register_sent_at = now
        return Register(self.client_id, self.nonce)

    def on_grant(self, grant: SessionGrant) -> list[Request]:
        """Adopt the session that answers our registration. Returns the requests
        made while there was none, now in it and ready to send, in order."""
        if grant.nonce != self.nonce or self.session:
            return []  # an answer to an older registration
        if grant.epoch > self.epoch:
            self.epoch = grant.epoch
        self.session, self.window = grant.session, grant.window
        self.acked.start(grant.session)
        bound: list[Request] = []
        for o in self.outstanding.values():
            if o.request.session == 0:
                r = o.request
                o.request = Request(r.client_id, r.msg_id, r.body, self.session)
                bound.append(o.request)
        return bound

    # ----------------------------------------------------------- requests

    def new_request(self, body: dict[str, Any], now: float) -> Request:
        """The next request, in the current session (0 while there is none:
        then it is sent once the session is granted)."""
        req = Request(self.client_id, self.next_msg_id, body, self.session)
        self.next_msg_id += 1
        self.outstanding[req.msg_id] = Outstanding(req, now)
        return req

    def on_reply(self, reply: Reply) -> bool:
        """True when the reply completes an outstanding request (first answer wins).
        An ``expired`` reply for the current session ends it: ``must_register``."""
        if reply.epoch > self.epoch:
            self.epoch = reply.epoch
        o = self.outstanding.pop(reply.msg_id, None)
        if o is None:
            self.late_replies += 1
            return False
        if reply.status == STATUS_EXPIRED:
            self.expired += 1
            if self.session and o.request.session == self.session:
                self.session = self.nonce = 0
                # The session ended (evicted or replaced): what the server holds of
                # it can no longer be asked, and a gap must not be read into that.
                self.acked.start(0)
        elif reply.logged:
            self.acked.note(o.request.session, reply.msg_id)
        return True

    def unanswered(self) -> list[Request]:
        """Every request still without a reply that has been sent, in the order
        it was first sent (each in its own session)."""
        return [o.request for o in self.outstanding.values() if o.request.session]

    def mark_resent(self, now: float) -> None:
        n = 0
        for o in self.outstanding.values():
            if o.request.session:
                o.sends += 1
                o.sent_at = now
                n += 1
        self.resends += n

    def oldest_sent_at(self) -> float | None:
        """When the oldest thing still waiting for the server was sent: the
        oldest request, or the registration in flight."""
        oldest = self.register_sent_at if self.nonce and not self.session else None
        for o in self.outstanding.values():
            return o.sent_at if oldest is None else min(oldest, o.sent_at)
        return oldest
