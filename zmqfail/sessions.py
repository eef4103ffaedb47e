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

A stored reply is kept as its status and the MessagePack of its result: a
tuple of a str and bytes, which the garbage collector stops tracking, where a
result map (with the lists inside it) would be walked by every collection as
long as it is kept, ``max_sessions x window`` of them (docs/benchmarks.md,
"The per-request cost"). A resend and a snapshot decode it; MessagePack gives
back what it was given (a result that reached the log is plain data), so the
answer is the same bytes.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

import msgspec

from zmqfail.errors import ProtocolError
from zmqfail.protocol.typed import encode

_decode = msgspec.msgpack.Decoder().decode


class SessionState:
    """One client's session: its id, registration nonce and stored replies."""

    __slots__ = ("evicted", "high", "id", "nonce", "order", "replies")

    def __init__(self, sid: int, nonce: int, evicted: int = 0) -> None:
        self.id = sid
        self.nonce = nonce  # the client's random number for this registration
        self.replies: dict[int, tuple[str, bytes]] = {}  # msg_id -> (status, result packed)
        self.order: deque[int] = deque()  # msg_ids oldest first: the eviction order
        self.evicted = evicted  # highest msg_id forgotten, 0 if none
        # Highest msg_id logged in the session: what a client that was answered
        # more than this lost (a power loss). Derived, so snapshots need not carry it.
        self.high = evicted


class SessionTable:
    def __init__(self, max_sessions: int, window: int) -> None:
        if max_sessions < 1 or window < 1:
            raise ValueError("max_sessions and window must be at least 1")
        self.max_sessions = max_sessions
        self.window = window
        # client_id -> session, least recently active first.
        self.live: OrderedDict[str, SessionState] = OrderedDict()
        self.evictions = 0  # sessions evicted to make room since the log began
        # client_id -> (session, highest msg_id logged) of the last sessions
        # evicted, at most max_sessions: so an evicted client is told what the
        # log holds of its session, not that the session is unknown (lost).
        self.ended: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def register(self, client_id: str, nonce: int, sid: int) -> SessionState:
        """Apply a register record: `sid` is its LSN."""
        live = self.live
        self.ended.pop(client_id, None)
        if live.pop(client_id, None) is None and len(live) >= self.max_sessions:
            self._evict()
        s = live[client_id] = SessionState(sid, nonce)
        return s

    def _evict(self) -> None:
        cid, old = self.live.popitem(last=False)  # the least recently active session
        self.evictions += 1
        ended = self.ended
        ended[cid] = (old.id, old.high)
        if len(ended) > self.max_sessions:
            ended.popitem(last=False)

    def session_of(self, client_id: str) -> tuple[int, int]:
        """(the client's session, the highest msg_id logged in it), live or
        evicted; (0, 0) when the log holds none (or it was evicted long ago)."""
        s = self.live.get(client_id)
        if s is not None:
            return (s.id, s.high)
        return self.ended.get(client_id, (0, 0))

    # ------------------------------------------------------------- state

    def snapshot(self) -> dict[str, Any]:
        """Sessions in activity order, each with its replies in eviction order."""
        return {
            "evictions": self.evictions,
            "ended": [[cid, sid, high] for cid, (sid, high) in self.ended.items()],
            "live": [
                [cid, s.id, s.nonce, s.evicted, [[m, *unpack(s.replies[m])] for m in s.order]]
                for cid, s in self.live.items()
            ],
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Fill this empty table; a smaller config trims as the rules would."""
        try:
            self.evictions = int(snap["evictions"])
            for cid, sid, high in snap.get("ended", ())[-self.max_sessions :]:
                self.ended[str(cid)] = (int(sid), int(high))  # absent before protocol 5
            for cid, sid, nonce, evicted, entries in snap["live"]:
                s = SessionState(int(sid), int(nonce), int(evicted))
                for m, status, result in entries:
                    store(s, self.window, int(m), status, result)
                if len(self.live) >= self.max_sessions:
                    self._evict()
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
    if msg_id > s.high:
        s.high = msg_id
    if msg_id not in replies:
        s.order.append(msg_id)
    replies[msg_id] = (status, encode(result))
    if len(s.order) > window:
        old = s.order.popleft()
        del replies[old]
        if old > s.evicted:
            s.evicted = old


def unpack(stored: tuple[str, bytes]) -> tuple[str, dict[str, Any]]:
    """A stored reply's status and result, as `store` was given them."""
    result: dict[str, Any] = _decode(stored[1])
    return stored[0], result


def unknown_acks(session: int, acked: int, server_session: int, known: int) -> tuple[int, int]:
    """The msg_ids (first, last) a client answered up to `acked` in `session`
    may have lost, given what a server knows: its live session for the client
    and the highest msg_id logged in it. (0, 0): nothing. Only a power loss of
    every server (what none had flushed) or a divergence can open such a gap;
    the client knows which msg_ids in the range were logged and answered."""
    if not session or not acked:
        return (0, 0)
    if server_session != session:
        return (1, acked)  # the server holds no such session: all of it is unknown
    return (known + 1, acked) if acked > known else (0, 0)
