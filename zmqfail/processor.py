"""Request processing without I/O: sessions, the application, transaction
records, the reply gate.

The node shell feeds decoded requests in and gets back what to log and what
to answer, with the LSN the answer must wait for. Keeping this free of sockets
and files lets tests drive the exact production path with plain calls. The
application is whatever the config names (``zmqfail.app``); nothing here knows
which one it is.
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

from zmqfail.app import Application, AppSpec, digest_of
from zmqfail.config import ClusterConfig
from zmqfail.errors import ProtocolError
from zmqfail.protocol import (
    STATUS_ERROR,
    STATUS_EXPIRED,
    STATUS_OK,
    STATUS_REJECTED,
    STATUS_STALE,
    SessionGrant,
    encode_reply,
)
from zmqfail.sessions import SessionTable, store, unpack
from zmqfail.txlog.history import EpochHistory
from zmqfail.txlog.record import REGISTER, TxRecord, encode_record

# 2: the application's state and the framework's sessions, side by side.
SNAPSHOT_FORMAT = 2


class Processed(NamedTuple):
    """What one request produced: the encoded reply, the LSN it waits for, and
    the encoded record to log (None when nothing was written). A named tuple,
    not a frozen dataclass: one is made per request, and a tuple is built in
    C (a frozen dataclass sets each field through object.__setattr__)."""

    reply: bytes
    gate_lsn: int
    record: bytes | None


class Processor:
    def __init__(
        self,
        app: Application,
        sessions: SessionTable,
        name: str,
        epoch: int,
        last_lsn: int,
        app_name: str = "",
    ) -> None:
        self.app = app
        self.sessions = sessions
        self.app_name = app_name
        self.name = name
        self.epoch = epoch
        self.last_lsn = last_lsn
        self.last_epoch = epoch  # epoch of the record at last_lsn
        self.history = EpochHistory()  # which leader wrote which part of the log
        self.applied = 0
        self.duplicates = 0
        self.stale = 0
        self.expired = 0
        self.failures = 0
        self.rejected = 0  # requests the application answered "rejected" (metrics)
        self._live = sessions.live
        self._window = sessions.window

    @classmethod
    def create(
        cls,
        cfg: ClusterConfig,
        name: str,
        epoch: int,
        last_lsn: int = 0,
        state: dict[str, Any] | None = None,
    ) -> Processor:
        """The configured application and sessions, empty or from a snapshot's
        state (ProtocolError if it does not fit the config)."""
        sessions = SessionTable(cfg.sessions.max_sessions, cfg.sessions.window)
        app = cfg.app.create()
        if state is not None:
            restore(cfg.app, app, sessions, state)
        return cls(app, sessions, name, epoch, last_lsn, cfg.app.name)

    def _reply(
        self, msg_id: int, status: str, result: dict[str, Any], logged: bool = False
    ) -> bytes:
        return encode_reply(msg_id, status, result, self.epoch, self.name, logged)

    # ------------------------------------------------------ active server

    def is_new(self, client_id: str, msg_id: int, session: int) -> bool:
        """Whether `submit` would execute this request (a live session, a
        msg_id neither answered nor evicted): a resend is not new, and must
        never be refused as if it were (it may have been executed)."""
        s = self._live.get(client_id)
        return s is not None and s.id == session and msg_id not in s.replies and msg_id > s.evicted

    def submit(self, client_id: str, msg_id: int, body: dict[str, Any], session: int) -> Processed:
        """Process one request on the active server (method 200 steps 210a-240)."""
        s = self._live.get(client_id)
        if s is None or s.id != session:
            # Whatever the answer, it waits behind every record written so far:
            # the registration that evicted the session may not be committed.
            self.expired += 1
            return Processed(
                self._reply(msg_id, STATUS_EXPIRED, expired_result(client_id, session)),
                self.last_lsn,
                None,
            )
        stored = s.replies.get(msg_id)
        if stored is not None:
            # The stored reply may belong to a record not yet committed: it waits
            # behind everything written so far, never ahead of its own commit.
            self.duplicates += 1
            status, result = unpack(stored)
            return Processed(self._reply(msg_id, status, result, True), self.last_lsn, None)
        if msg_id <= s.evicted:
            self.stale += 1
            result = {
                "code": "stale_msg_id",
                "message": f"msg_id {msg_id} is older than the replies still stored for "
                f"{client_id}; it cannot be told whether it was processed",
            }
            return Processed(self._reply(msg_id, STATUS_STALE, result), 0, None)
        try:
            out = self.app.execute(client_id, body)
        except Exception as exc:  # an application bug must not kill the node
            self.failures += 1
            result = {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}
            return Processed(self._reply(msg_id, STATUS_ERROR, result), 0, None)
        write, status, result, changes = out
        try:
            if not write:
                reply = self._reply(msg_id, status, result)
            else:
                lsn = self.last_lsn + 1
                record = encode_record(
                    lsn, self.epoch, client_id, msg_id, body, changes, status, result
                )
        except ProtocolError as exc:
            # The application answered with what the wire cannot carry (an
            # integer past 64 bits, say): an error reply, nothing applied.
            self.failures += 1
            result = {"code": "internal", "message": f"the application's answer: {exc}"}
            return Processed(self._reply(msg_id, STATUS_ERROR, result), 0, None)
        if status == STATUS_REJECTED:
            self.rejected += 1
        if not write:
            return Processed(reply, self.last_lsn, None)
        self.app.apply(changes)
        store(s, self._window, msg_id, status, result)
        self._live.move_to_end(client_id)
        self.last_lsn = lsn
        epoch = self.last_epoch = self.epoch
        self.applied += 1
        return Processed(encode_reply(msg_id, status, result, epoch, self.name, True), lsn, record)

    def knows_client(self, client_id: str) -> bool:
        """Has this client a session (a registration is a write in the
        replicated tables)? Only such a client may vote for a takeover."""
        return client_id in self._live

    def register(self, client_id: str, nonce: int) -> Processed:
        """A client asks for a session. The same nonce again (a resend after a
        failover) gets the same session; a new one replaces the client's old
        session, which makes room if the table is full."""
        s = self._live.get(client_id)
        if s is not None and s.nonce == nonce:
            self.duplicates += 1
            return Processed(self._grant(nonce, s.id), self.last_lsn, None)
        lsn = self.last_lsn + 1
        body = {"nonce": nonce}
        record = encode_record(lsn, self.epoch, client_id, REGISTER, body, [], STATUS_OK, {})
        self.sessions.register(client_id, nonce, lsn)
        self.last_lsn = lsn
        self.last_epoch = self.epoch
        self.applied += 1
        return Processed(self._grant(nonce, lsn), lsn, record)

    def _grant(self, nonce: int, sid: int) -> bytes:
        return SessionGrant(nonce, sid, self._window, self.epoch, self.name).encode()

    # ------------------------------------------------- backup, recovery

    def apply_record(self, rec: TxRecord) -> None:
        """Apply a record produced elsewhere (recovery, or mirrored from the primary)."""
        if rec.lsn != self.last_lsn + 1:
            raise ValueError(f"record lsn {rec.lsn} does not follow {self.last_lsn}")
        cid = rec.client_id
        if rec.msg_id == REGISTER and cid:
            self.sessions.register(cid, rec.body["nonce"], rec.lsn)
        elif not cid:
            self.app.apply(rec.changes)  # a system record: no session
        else:
            s = self._live.get(cid)
            if s is None:
                raise ProtocolError(
                    f"record {rec.lsn} is a write of client {cid!r}, which has no session: "
                    "the log was written before sessions existed, or has diverged"
                )
            self.app.apply(rec.changes)
            store(s, self._window, rec.msg_id, rec.status, rec.result)
            self._live.move_to_end(cid)
        self.last_lsn = rec.lsn
        epoch = self.last_epoch = rec.epoch
        self.applied += 1
        if epoch > self.epoch:
            self.epoch = epoch

    # ------------------------------------------------------------- state

    def snapshot(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "app": self.app_name,
            "sessions": self.sessions.snapshot(),
            "state": self.app.snapshot(),
        }

    def digest(self) -> str:
        """The application's digest and the sessions (activity order included:
        it decides the next eviction)."""
        return digest_of([self.app.digest(), self.sessions.snapshot()])

    def describe(self) -> dict[str, Any]:
        """What `status` shows of the application and the sessions."""
        return {"name": self.app_name, **self.app.describe().as_dict()}

    def rows(self) -> int:
        """About how much a digest has to hash."""
        return self.app.describe().rows + sum(len(s.order) for s in self._live.values())


def restore(spec: AppSpec, app: Application, sessions: SessionTable, state: dict[str, Any]) -> None:
    if state.get("format") != SNAPSHOT_FORMAT or "state" not in state:
        raise ProtocolError(
            f"unsupported snapshot format {state.get('format')!r} (this zmqfail reads "
            f"{SNAPSHOT_FORMAT}: application state and sessions)"
        )
    if state.get("app") != spec.name:
        raise ProtocolError(
            f"the snapshot is of application {state.get('app')!r}, the config runs {spec.name!r}"
        )
    if not isinstance(state.get("sessions"), dict) or not isinstance(state.get("state"), dict):
        raise ProtocolError("snapshot: sessions and state must be maps")
    sessions.restore(state["sessions"])
    app.restore(state["state"])


def expired_result(client_id: str, session: int) -> dict[str, Any]:
    if session == 0:
        why = f"{client_id} sent no session: register first"
    else:
        why = (
            f"session {session} of {client_id} is no longer live (evicted as the least "
            "recently active, or replaced by a newer registration)"
        )
    return {
        "code": "session_expired",
        "message": f"{why}; this request was not executed now, an earlier send of it may "
        "have been: its outcome is unknown. Register again for new requests.",
    }


class ReplyGate:
    """Replies held until the LSN they depend on is committed, in LSN order."""

    def __init__(self) -> None:
        self._held: deque[tuple[int, bytes, bytes]] = deque()
        # Replies held per client connection: its requests in flight, which
        # the frontend bounds (a client that never waits cannot fill our RAM).
        self._per_client: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._held)

    def held_for(self, ident: bytes) -> int:
        return self._per_client.get(ident, 0)

    def hold(self, lsn: int, ident: bytes, data: bytes) -> None:
        self._held.append((lsn, ident, data))
        per = self._per_client
        per[ident] = per.get(ident, 0) + 1

    def release(self, committed_lsn: int) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        held = self._held
        per = self._per_client
        while held and held[0][0] <= committed_lsn:
            _, ident, data = held.popleft()
            n = per[ident] - 1
            if n:
                per[ident] = n
            else:
                del per[ident]
            out.append((ident, data))
        return out

    def drop_all(self) -> int:
        n = len(self._held)
        self._held.clear()
        self._per_client.clear()
        return n
