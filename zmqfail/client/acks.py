"""Acknowledged requests a recovered server does not know: the client's side
of "power loss, bounded and told".

In the normal state a write is acknowledged once both servers hold it in RAM;
a power loss of every server loses what neither had flushed (at most the
flush interval). A client cannot see that from its replies, so it keeps the
msg_ids of the logged requests it was answered (`Reply.logged`; queries and
refusals are not logged, and so cannot be checked) and compares them with
what the active server says it knows of the session (`Welcome` and
`RecoverySignal`: its live session for the client and the highest msg_id
logged in it). Those above are reported once as an `AckLoss`; the
application decides what to do (re-submit, reconcile, alert). Requests that
were never answered are not in it: they are resent as after any failover,
and a server that never saw them processes them. A session that ended
(`expired`: evicted, or replaced) is no longer checked: the server no longer
tells what it holds of it, and a false report would have the application
submit logged writes twice.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from zmqfail.sessions import unknown_acks

# msg_ids of answered writes kept per client. A power loss loses at most a
# flush interval's worth (100 ms by default): far fewer at any real rate.
TRACK_LIMIT = 65_536


@dataclass(frozen=True, slots=True)
class AckLoss:
    """Requests this client was answered that the active server does not know."""

    server: str  # the server that told
    epoch: int  # its epoch
    session: int  # the client's session the requests were answered in
    known: int  # the highest msg_id the server knows in it (0: none)
    session_known: bool  # False: the server holds no such session at all
    msg_ids: tuple[int, ...]  # answered and logged, unknown to the server, ascending
    complete: bool  # False: older answers were no longer tracked; more may be lost


class AckedWrites:
    """The msg_ids of logged requests answered in the client's current session."""

    def __init__(self, limit: int = TRACK_LIMIT) -> None:
        self.session = 0
        self.ids: deque[int] = deque()
        self.limit = limit
        self.dropped = 0  # forgotten for the bound: a loss among them goes unlisted
        self.high = 0  # the highest msg_id tracked (what a `hello` tells the server)

    def start(self, session: int) -> None:
        """A new session: the answers of the old one can no longer be checked
        (the server replaced it)."""
        if session != self.session:
            self.session, self.dropped, self.high = session, 0, 0
            self.ids.clear()

    def note(self, session: int, msg_id: int) -> None:
        if session != self.session:
            return  # a late answer in a session we left
        self.ids.append(msg_id)
        self.high = max(self.high, msg_id)
        if len(self.ids) > self.limit:
            self.ids.popleft()
            self.dropped += 1

    def check(self, server: str, epoch: int, server_session: int, known: int) -> AckLoss | None:
        """Compare with what `server` knows; an `AckLoss` once per loss (the lost
        msg_ids are forgotten, so the next check finds nothing)."""
        first, last = unknown_acks(self.session, self.high, server_session, known)
        if not last:
            return None
        lost = tuple(sorted(m for m in self.ids if first <= m <= last))
        if not lost:
            return None
        same = server_session == self.session
        loss = AckLoss(
            server, epoch, self.session, known if same else 0, same, lost, self.dropped == 0
        )
        self.ids = deque(m for m in self.ids if m < first)
        self.high = max(self.ids, default=0)
        return loss
