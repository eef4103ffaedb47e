"""Request processing without I/O: dedup, engine, transaction record, reply gate.

The node shell feeds decoded requests in and gets back what to log and what
to answer, with the LSN the answer must wait for. Keeping this free of sockets
and files lets tests drive the exact production path with plain calls.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from zmqfail.engine import DedupKind, Engine
from zmqfail.protocol import STATUS_ERROR, STATUS_STALE, encode_reply
from zmqfail.txlog.history import EpochHistory
from zmqfail.txlog.record import TxRecord, encode_record


@dataclass(frozen=True, slots=True)
class Processed:
    """What one request produced: the encoded reply, the LSN it waits for, and
    the encoded record to log (None when nothing was written)."""

    reply: bytes
    gate_lsn: int
    record: bytes | None


class Processor:
    def __init__(self, engine: Engine, name: str, epoch: int, last_lsn: int) -> None:
        self.engine = engine
        self.name = name
        self.epoch = epoch
        self.last_lsn = last_lsn
        self.last_epoch = epoch  # epoch of the record at last_lsn
        self.history = EpochHistory()  # which leader wrote which part of the log
        self.applied = 0
        self.duplicates = 0
        self.stale = 0
        self.failures = 0

    def _reply(self, msg_id: int, status: str, result: dict[str, Any]) -> bytes:
        return encode_reply(msg_id, status, result, self.epoch, self.name)

    def submit(self, client_id: str, msg_id: int, body: dict[str, Any]) -> Processed:
        """Process one request on the active server (method 200 steps 210a-240)."""
        answer = self.engine.lookup(client_id, msg_id)
        if answer.kind is DedupKind.HIT:
            # The stored reply may belong to a record not yet committed: it waits
            # behind everything written so far, never ahead of its own commit.
            self.duplicates += 1
            return Processed(self._reply(msg_id, answer.status, answer.result), self.last_lsn, None)
        if answer.kind is DedupKind.STALE:
            self.stale += 1
            result = {
                "code": "stale_msg_id",
                "message": f"msg_id {msg_id} is older than the replies still stored for "
                f"{client_id}; it cannot be told whether it was processed",
            }
            return Processed(self._reply(msg_id, STATUS_STALE, result), 0, None)
        try:
            out = self.engine.execute(client_id, msg_id, body)
        except Exception as exc:  # an engine bug must not kill the node
            self.failures += 1
            result = {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}
            return Processed(self._reply(msg_id, STATUS_ERROR, result), 0, None)
        if not out.write:
            return Processed(self._reply(msg_id, out.status, out.result), self.last_lsn, None)
        lsn = self.last_lsn + 1
        record = encode_record(
            lsn, self.epoch, client_id, msg_id, body, out.changes, out.status, out.result
        )
        self.engine.apply(client_id, msg_id, out.status, out.result, out.changes)
        self.last_lsn = lsn
        self.last_epoch = self.epoch
        self.applied += 1
        return Processed(self._reply(msg_id, out.status, out.result), lsn, record)

    def knows_client(self, client_id: str) -> bool:
        """Has this client had a write processed (in the replicated tables)? Only
        such a client may vote for a takeover."""
        return client_id in self.engine.dedup.clients

    def apply_record(self, rec: TxRecord) -> None:
        """Apply a record produced elsewhere (recovery, or mirrored from the primary)."""
        if rec.lsn != self.last_lsn + 1:
            raise ValueError(f"record lsn {rec.lsn} does not follow {self.last_lsn}")
        self.engine.apply(rec.client_id, rec.msg_id, rec.status, rec.result, rec.changes)
        self.last_lsn = rec.lsn
        self.last_epoch = rec.epoch
        self.applied += 1
        self.epoch = max(self.epoch, rec.epoch)


class ReplyGate:
    """Replies held until the LSN they depend on is committed, in LSN order."""

    def __init__(self) -> None:
        self._held: deque[tuple[int, bytes, bytes]] = deque()

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, lsn: int, ident: bytes, data: bytes) -> None:
        self._held.append((lsn, ident, data))

    def release(self, committed_lsn: int) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        held = self._held
        while held and held[0][0] <= committed_lsn:
            _, ident, data = held.popleft()
            out.append((ident, data))
        return out

    def drop_all(self) -> int:
        n = len(self._held)
        self._held.clear()
        return n
