"""Client bookkeeping without I/O: msg_ids, requests without a reply, state.

Both the sync and the asyncio client wrap one Session, so the rules that make
failover safe (increasing msg_ids, resend every unanswered request in the
original order, accept one reply per msg_id) live in one place and are tested
without sockets.
"""

from __future__ import annotations

import enum
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from zmqfail.protocol import Reply, Request


class ClientState(enum.Enum):
    """What the application sees instead of exceptions (kazoo-style)."""

    CONNECTING = "connecting"  # looking for the active server
    CONNECTED = "connected"  # requests flow to `server` at `epoch`
    FAILING_OVER = "failing_over"  # active server lost; waiting for a recovery signal
    LOST = "lost"  # no server answered before the deadline


@dataclass(slots=True)
class Outstanding:
    request: Request
    sent_at: float
    sends: int = 1


def new_client_id() -> str:
    return "c-" + uuid.uuid4().hex[:16]


class Session:
    def __init__(self, client_id: str | None = None, first_msg_id: int = 1) -> None:
        self.client_id = client_id or new_client_id()
        self.next_msg_id = first_msg_id
        self.outstanding: OrderedDict[int, Outstanding] = OrderedDict()
        self.state = ClientState.CONNECTING
        self.server = ""
        self.epoch = 0
        self.resends = 0
        self.late_replies = 0

    def new_request(self, body: dict[str, Any], now: float) -> Request:
        req = Request(self.client_id, self.next_msg_id, body)
        self.next_msg_id += 1
        self.outstanding[req.msg_id] = Outstanding(req, now)
        return req

    def on_reply(self, reply: Reply) -> bool:
        """True when the reply completes an outstanding request (first answer wins)."""
        if reply.epoch > self.epoch:
            self.epoch = reply.epoch
        if self.outstanding.pop(reply.msg_id, None) is None:
            self.late_replies += 1
            return False
        return True

    def unanswered(self) -> list[Request]:
        """Every request still without a reply, in the order it was first sent."""
        return [o.request for o in self.outstanding.values()]

    def mark_resent(self, now: float) -> None:
        for o in self.outstanding.values():
            o.sends += 1
            o.sent_at = now
        self.resends += len(self.outstanding)

    def oldest_sent_at(self) -> float | None:
        for o in self.outstanding.values():
            return o.sent_at
        return None
