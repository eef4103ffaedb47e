"""Messages between clients and servers: requests and replies, sessions,
the hello and welcome of a connection, the recovery signal, and the
step-420 probe one server sends another over the client network."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from zmqfail.protocol.base import (
    Message,
    _check,
    _check_id,
    _check_map,
    _check_uint,
    _is_int,
    _register,
    check_tree,
)
from zmqfail.protocol.limits import MAX_BATCH, MAX_ID_LEN, REPLY_STATUSES


@_register
@dataclass(frozen=True, slots=True)
class Request(Message):
    """Client -> server: one application request, in the session the server
    granted (``session``: the id from a ``session`` message; 0: none)."""

    TYPE: ClassVar[str] = "req"
    client_id: str
    msg_id: int
    body: dict[str, Any]
    session: int = 0

    def validate(self) -> None:
        cid, mid = self.client_id, self.msg_id
        if not (
            type(cid) is str
            and 0 < len(cid) <= MAX_ID_LEN
            and type(mid) is int
            and mid > 0
            and type(self.body) is dict
            and type(self.session) is int
            and self.session >= 0
        ):
            _check_id(cid, "client_id")
            _check(_is_int(mid) and mid > 0, "msg_id must be a positive integer")
            _check(isinstance(self.body, dict), "body must be a map")
            _check_uint(self.session, "session")
        check_tree(self.body, "body")


@_register
@dataclass(frozen=True, slots=True)
class Reply(Message):
    """Server -> client: the answer to one Request (or to an undecodable frame).

    ``logged``: the request is a write in the transaction log (answered once
    committed, or from the stored replies); a query or a refusal is not. Only
    logged msg_ids can be checked against what a recovered server knows."""

    TYPE: ClassVar[str] = "rep"
    msg_id: int
    status: str
    result: dict[str, Any]
    epoch: int
    server: str
    logged: bool = False

    def validate(self) -> None:
        if not (
            type(self.msg_id) is int
            and self.msg_id >= 0
            and type(self.status) is str
            and self.status in REPLY_STATUSES
            and type(self.result) is dict
            and all(type(k) is str for k in self.result)
            and type(self.epoch) is int
            and self.epoch >= 0
            and type(self.server) is str
            and 0 < len(self.server) <= MAX_ID_LEN
            and type(self.logged) is bool
        ):
            _check_uint(self.msg_id, "msg_id")
            _check(
                isinstance(self.status, str) and self.status in REPLY_STATUSES,
                f"unknown status {self.status!r}",
            )
            _check_map(self.result, "result")
            _check_uint(self.epoch, "epoch")
            _check_id(self.server, "server")
            _check(isinstance(self.logged, bool), "logged must be a boolean")
        check_tree(self.result, "result")


def _check_batch(items: object, what: str) -> None:
    _check(
        type(items) is list and 0 < len(items) <= MAX_BATCH,
        f"{what} must be a list of 1 to {MAX_BATCH} frames",
    )


@_register
@dataclass(frozen=True, slots=True)
class RequestBatch(Message):
    """Client -> server: several requests in one frame (what the client's
    window lets out at once). Each item is the array a lone `req` frame is.

    Decoding checks the container only: the items are read out one by one
    (`codec.batch_requests`), so one bad request gets its own error reply and
    does not spoil the others."""

    TYPE: ClassVar[str] = "reqs"
    requests: list[Any]

    def validate(self) -> None:
        _check_batch(self.requests, "reqs requests")


@_register
@dataclass(frozen=True, slots=True)
class ReplyBatch(Message):
    """Server -> client: the replies one client is owed after one turn (or
    one commit), in one frame. Each item is the array a lone `rep` frame is;
    read out one by one (`codec.batch_replies`)."""

    TYPE: ClassVar[str] = "reps"
    replies: list[Any]

    def validate(self) -> None:
        _check_batch(self.replies, "reps replies")


@_register
@dataclass(frozen=True, slots=True)
class Hello(Message):
    """Client -> server: 'who is active?' probe.

    ``lost`` names the server the client lost (no reply, or not active), or is
    "" for a first connection. Only a probe from a client that lost its server
    is a vote for a backup to take over. ``session`` is the client's (0: none)
    and ``acked`` the highest msg_id of a logged request it was answered in
    it (0: none): the server compares them with what it knows."""

    TYPE: ClassVar[str] = "hello"
    client_id: str
    lost: str
    session: int = 0
    acked: int = 0

    def validate(self) -> None:
        _check_id(self.client_id, "client_id")
        _check(isinstance(self.lost, str) and len(self.lost) <= MAX_ID_LEN, "lost must be a name")
        _check_uint(self.session, "session")
        _check_uint(self.acked, "acked")


@_register
@dataclass(frozen=True, slots=True)
class Welcome(Message):
    """Server -> client: answer to Hello; ``active`` says whether it takes requests.
    ``session`` is the live session the server holds for the client (0: none)
    and ``known`` the highest msg_id logged in it (0: none).

    Also the answer to a peer's `Probe`, where ``gen`` is the in-sync
    generation between the two servers as the answerer knows it: a primary
    answering its backup gives the backup's generation, a backup answering
    its primary the generation it holds itself to (0: none, and always 0 to
    a client). It is how a pair whose replication links are both cut agrees
    that the backup no longer counts itself in sync before the primary
    acknowledges alone."""

    TYPE: ClassVar[str] = "welcome"
    server: str
    epoch: int
    active: bool
    session: int = 0
    known: int = 0
    gen: int = 0

    def validate(self) -> None:
        _check_id(self.server, "server")
        _check_uint(self.epoch, "epoch")
        _check(isinstance(self.active, bool), "active must be a boolean")
        _check_uint(self.session, "session")
        _check_uint(self.known, "known")
        _check_uint(self.gen, "gen")


@_register
@dataclass(frozen=True, slots=True)
class Probe(Message):
    """Server -> server, over the client network (step 420): 'are you alive?'.

    Sent to a peer that fell silent on every replication path, to the peer's
    client frontend; answered with a `Welcome`. Only the answer counts, and
    only on the prober's own connection: a probe carries no epoch a stranger
    could use to depose anybody."""

    TYPE: ClassVar[str] = "probe"
    server: str

    def validate(self) -> None:
        _check_id(self.server, "server")


@_register
@dataclass(frozen=True, slots=True)
class RecoverySignal(Message):
    """Server -> clients: I have taken over at this epoch; resend what has no reply.
    ``session`` and ``known``: what the server knows of the receiving client's
    session, as in `Welcome`."""

    TYPE: ClassVar[str] = "recovered"
    server: str
    epoch: int
    session: int = 0
    known: int = 0

    def validate(self) -> None:
        _check_id(self.server, "server")
        _check_uint(self.epoch, "epoch")
        _check_uint(self.session, "session")
        _check_uint(self.known, "known")


@_register
@dataclass(frozen=True, slots=True)
class Register(Message):
    """Client -> server: open a session. ``nonce`` is random per registration,
    so a resend of it (after a failover) gets the same session back, while a
    restarted client with the same client_id gets a new one."""

    TYPE: ClassVar[str] = "register"
    client_id: str
    nonce: int

    def validate(self) -> None:
        _check_id(self.client_id, "client_id")
        _check_uint(self.nonce, "nonce")


@_register
@dataclass(frozen=True, slots=True)
class SessionGrant(Message):
    """Server -> client: the answer to Register, once its record is committed.
    ``window`` is how many replies the session keeps for resends."""

    TYPE: ClassVar[str] = "session"
    nonce: int
    session: int
    window: int
    epoch: int
    server: str

    def validate(self) -> None:
        _check_uint(self.nonce, "nonce")
        _check(_is_int(self.session) and self.session > 0, "session must be a positive integer")
        _check(_is_int(self.window) and self.window > 0, "window must be a positive integer")
        _check_uint(self.epoch, "epoch")
        _check_id(self.server, "server")
