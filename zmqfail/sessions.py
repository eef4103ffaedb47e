"""Client sessions: the stored replies that make client writes exactly-once,
in bounded memory.

A client registers once (a register record in the log) and gets a session:
its id is the LSN of that record, so it is the same on every server and never
reused. Each write then names the session; its reply is stored in the session
(the last ``window`` of them, the reference's method 210a) so that a resend is
answered from the store and never executed twice. Msg_ids grow within a
session but may have gaps: "not stored and above the forgotten mark" means
never processed (go ahead), "not stored and at or below the mark" may have
been processed and forgotten (STALE: refuse, the outcome is unknown).

Bounded: at most ``window`` replies per session and ``max_sessions``
sessions. Sessions are kept in order of their last logged write (a
registration counts as one); registering when the table is full evicts the
least recently active session. The rule looks at nothing but the log, in log
order, so every server evicts the same session at the same LSN. A client that
registers again (a restart, or after its session expired) replaces its own
previous session, so one client can never hold more than one. A request that
names a session no longer in the table is refused as expired and not executed:
the replies that would have recognised it as a resend are gone.

Queries are not logged, so they do not count as activity.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

from zmqfail.errors import ProtocolError


class SessionState:
    """One client's session: its id, registration nonce and stored replies."""

    __slots__ = ("evicted", "id", "nonce", "order", "replies")

    def __init__(self, sid: int, nonce: int, evicted: int = 0) -> None:
        self.id = sid
        self.nonce = nonce  # the client's random number for this registration
        self.replies: dict[int, tuple[str, dict[str, Any]]] = {}
        self.order: deque[int] = deque()  # msg_ids oldest first: the eviction order
        self.evicted = evicted  # highest msg_id forgotten, 0 if none


class SessionTable:
    def __init__(self, max_sessions: int, window: int) -> None:
        if max_sessions < 1 or window < 1:
            raise ValueError("max_sessions and window must be at least 1")
        self.max_sessions = max_sessions
        self.window = window
        # client_id -> session, least recently active first.
        self.live: OrderedDict[str, SessionState] = OrderedDict()
        self.evictions = 0  # sessions evicted to make room since the log began

    def register(self, client_id: str, nonce: int, sid: int) -> SessionState:
        """Apply a register record: `sid` is its LSN."""
        live = self.live
        if live.pop(client_id, None) is None and len(live) >= self.max_sessions:
            live.popitem(last=False)  # the least recently active session
            self.evictions += 1
        s = live[client_id] = SessionState(sid, nonce)
        return s

    # ------------------------------------------------------------- state

    def snapshot(self) -> dict[str, Any]:
        """Sessions in activity order, each with its replies in eviction order."""
        return {
            "evictions": self.evictions,
            "live": [
                [cid, s.id, s.nonce, s.evicted, [[m, *s.replies[m]] for m in s.order]]
                for cid, s in self.live.items()
            ],
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Fill this empty table; a smaller config trims as the rules would."""
        try:
            self.evictions = int(snap["evictions"])
            for cid, sid, nonce, evicted, entries in snap["live"]:
                s = SessionState(int(sid), int(nonce), int(evicted))
                for m, status, result in entries:
                    store(s, self.window, int(m), status, result)
                if len(self.live) >= self.max_sessions:
                    self.live.popitem(last=False)
                    self.evictions += 1
                self.live[str(cid)] = s
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ProtocolError(f"sessions snapshot is malformed: {exc!r}") from None

    def describe(self) -> dict[str, int]:
        return {
            "sessions": len(self.live),
            "max_sessions": self.max_sessions,
            "window": self.window,
            "stored_replies": sum(len(s.order) for s in self.live.values()),
            "evictions": self.evictions,
        }


def store(s: SessionState, window: int, msg_id: int, status: str, result: dict[str, Any]) -> None:
    replies = s.replies
    if msg_id not in replies:
        s.order.append(msg_id)
    replies[msg_id] = (status, result)
    if len(s.order) > window:
        old = s.order.popleft()
        del replies[old]
        if old > s.evicted:
            s.evicted = old
