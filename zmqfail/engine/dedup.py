"""The dedup table: the stored replies that make client writes exactly-once.

For each client it remembers the replies of the last ``window`` write msg_ids
it processed, plus the highest msg_id it has forgotten. Msg_ids grow per
client but may have gaps, so "not stored and above the forgotten mark" means
never processed (MISS), while "not stored and at or below the mark" may have
been processed and forgotten (STALE): answering MISS there could execute a
write twice, so the node must refuse instead.

Memory: at most ``window`` replies per client, evicted oldest first. The
number of clients is NOT bounded: a client that has gone away keeps its
entries forever (they are part of the replicated state, so dropping them would
need a replicated, deterministic policy; none is defined yet).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from zmqfail.engine.outcome import MISS, STALE, DedupAnswer, DedupKind


class ClientDedup:
    __slots__ = ("evicted", "order", "replies")

    def __init__(self, evicted: int = 0) -> None:
        self.replies: dict[int, tuple[str, dict[str, Any]]] = {}
        self.order: deque[int] = deque()  # msg_ids oldest first: the eviction order
        self.evicted = evicted  # highest msg_id ever forgotten, 0 if none


class DedupTable:
    __slots__ = ("clients", "window")

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError("dedup_window must be at least 1")
        self.window = window
        self.clients: dict[str, ClientDedup] = {}

    def lookup(self, client_id: str, msg_id: int) -> DedupAnswer:
        c = self.clients.get(client_id)
        if c is None:
            return MISS
        reply = c.replies.get(msg_id)
        if reply is not None:
            return DedupAnswer(DedupKind.HIT, reply[0], reply[1])
        return STALE if msg_id <= c.evicted else MISS

    def record(self, client_id: str, msg_id: int, status: str, result: dict[str, Any]) -> None:
        c = self.clients.get(client_id)
        if c is None:
            c = self.clients[client_id] = ClientDedup()
        replies = c.replies
        if msg_id not in replies:
            c.order.append(msg_id)
        replies[msg_id] = (status, result)
        if len(c.order) > self.window:
            old = c.order.popleft()
            del replies[old]
            if old > c.evicted:
                c.evicted = old

    def entries(self) -> int:
        return sum(len(c.replies) for c in self.clients.values())
