"""Wire messages of every zmqfail channel, as frozen dataclasses.

Every frame is one msgpack array ``[version, type, field...]``. Decoding checks
the version, the type tag, the field count and each field's type, so a node
hands its logic only well-formed messages and answers anything else with a
clear error (or drops and counts it where no reply is possible). Arrays, not
maps, because this is the hot path: a map costs a key string per field per
frame. ``docs/protocol.md`` is the human description of the same table.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

import msgpack
import zmq

from zmqfail.errors import ProtocolError
from zmqfail.failover.state import Role, State

# 2: heartbeats and snapshot images carry the epoch history.
# 3: client sessions (register, session; req names its session).
# 4: heartbeats carry a candidacy and a grant (leading at a new epoch).
# 5: lost acknowledgements: `rep` says whether its request is in the log,
#    `hello` names the client's session and the highest such msg_id it was
#    answered, `welcome` and `recovered` what the server knows of that session.
PROTOCOL_VERSION = 5

# Reply statuses. "ok" and "rejected" are final answers of the application;
# the others say the request was not processed here. After "stale" and
# "expired" the outcome of an earlier send of the request is unknown.
STATUS_OK = "ok"
STATUS_REJECTED = "rejected"
STATUS_ERROR = "error"
STATUS_NOT_ACTIVE = "not_active"
STATUS_STALE = "stale"
STATUS_EXPIRED = "expired"  # the session it names is gone: register again
REPLY_STATUSES = frozenset(
    {STATUS_OK, STATUS_REJECTED, STATUS_ERROR, STATUS_NOT_ACTIVE, STATUS_STALE, STATUS_EXPIRED}
)

MAX_ID_LEN = 128

# --- limits (docs/protocol.md, "Limits": what happens at each one) ---------
# msgpack carries integers from -2**63 to 2**64 - 1; anything else cannot be
# encoded, so it is refused with a ProtocolError rather than an OverflowError.
INT_MIN = -(1 << 63)
INT_MAX = (1 << 64) - 1
# Containers inside a map field (body, result, args, a record's changes), the
# field itself being level 1. Real messages use at most 4 levels; without a
# bound a 1,000-level body decodes (msgpack allows 1,024) and then breaks every
# recursive reader after it (json in `log dump`, digests).
MAX_DEPTH = 32


class Channel(enum.Enum):
    """The kinds of socket a node receives on, each with its own frame bound."""

    CLIENTS = "clients"  # ROUTER frontend: req, hello
    CONTROL = "control"  # ROUTER: ctl
    REPL_ACK = "repl_ack"  # REP (commit) on a backup, REQ (ack) on a primary
    HEARTBEAT = "heartbeat"  # SUB
    REPL_RECORDS = "repl_records"  # PULL: records batches and snapshot images
    REPLIES = "replies"  # DEALER of a client or an operator tool: replies, control replies


# The largest frame (message part) each channel accepts. Bounds on what the
# frames really carry, with a wide margin: a request body is a few hundred
# bytes, a heartbeat lists at most 26 nodes, a commit or an ack is ~40 bytes.
MAX_FRAME_BYTES: dict[Channel, int] = {
    Channel.CLIENTS: 64 << 10,
    Channel.CONTROL: 64 << 10,
    Channel.REPL_ACK: 4 << 10,
    # A heartbeat also carries the epoch history (about 30 bytes a term).
    Channel.HEARTBEAT: 64 << 10,
    # A batch of records may hold the whole RAM log (flush.max_memory_bytes,
    # 64 MiB by default) and a snapshot image the whole tables: this one must
    # be configurable and is far larger.
    Channel.REPL_RECORDS: 1 << 30,
    # What a server answers: a reply (a `reports` of 10,000 fills is ~1 MiB) or
    # a control reply (`history` sends the whole failover history, ~200 bytes
    # an entry). Bounded so that a rogue or broken server cannot make a client
    # or tool allocate gigabytes.
    Channel.REPLIES: 256 << 20,
}

# High-water marks (messages queued per connection, each way) that
# ``limit_socket`` sets; sockets that need another value set it after. A node
# never blocks on a send: at the mark the frame is dropped (a client reply is
# counted as undeliverable and answered again on the resend; a lost push or
# commit shows as a gap). Past the receive mark libzmq stops reading that
# connection, so the sender is held back by TCP (docs/protocol.md, "Limits").
HWM: dict[Channel, int] = {
    Channel.CLIENTS: 100_000,  # many clients, each with a window of requests in flight
    Channel.CONTROL: 1_000,
    Channel.REPL_ACK: 64,  # one commit in flight per link
    Channel.HEARTBEAT: 1_000,
    Channel.REPL_RECORDS: 10_000,
    Channel.REPLIES: 100_000,
}


# How many bytes a node reads from one socket per turn of its loop: a flood of
# large frames then delays it by milliseconds, not into a false failover.
READ_BUDGET = 4 << 20


def max_frame_bytes(channel: Channel, records_bytes: int | None = None) -> int:
    """The frame bound of ``channel``; ``records_bytes`` overrides the records one."""
    if channel is Channel.REPL_RECORDS and records_bytes is not None:
        if records_bytes < MAX_FRAME_BYTES[Channel.CLIENTS]:
            raise ValueError(f"records frame bound {records_bytes} is too small to be useful")
        return records_bytes
    return MAX_FRAME_BYTES[channel]


def limit_socket(sock: zmq.Socket[Any], channel: Channel, records_bytes: int | None = None) -> int:
    """Set ZMQ_MAXMSGSIZE and the high-water marks on a socket that receives
    ``channel``'s frames.

    libzmq then drops a larger frame and closes that connection before a byte
    reaches the node (a connecting peer reconnects by itself). Returns the bound.
    """
    n = max_frame_bytes(channel, records_bytes)
    sock.setsockopt(zmq.MAXMSGSIZE, n)
    sock.setsockopt(zmq.SNDHWM, HWM[channel])
    sock.setsockopt(zmq.RCVHWM, HWM[channel])
    return n


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise ProtocolError(what)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


E = TypeVar("E", bound=enum.Enum)


def decode_enum(cls: type[E], v: object, what: str) -> E:
    """A wire string as a member of `cls`; anything else is a ProtocolError
    naming `what`, so no unknown role, state or status gets past decoding."""
    if isinstance(v, cls):
        return v
    if type(v) is str:
        try:
            return cls(v)
        except ValueError:
            pass
    raise ProtocolError(f"unknown {what} {v!r:.40}")


class AckStatus(enum.Enum):
    """A backup's answer to a commit request (CommitAck.status)."""

    OK = "ok"  # it holds everything up to `held`
    GAP = "gap"  # resend from held + 1
    FENCED = "fenced"  # the asker's epoch is lower than the backup's: step down
    WAIT = "wait"  # it does not follow the asker (yet): `held` means nothing


def _check_id(v: object, what: str) -> None:
    _check(isinstance(v, str) and 0 < len(v) <= MAX_ID_LEN, f"{what} must be a non-empty string")


def _check_uint(v: object, what: str) -> None:
    _check(
        _is_int(v) and 0 <= v <= INT_MAX,  # type: ignore[operator]
        f"{what} must be a non-negative integer below 2**64",
    )


_SCALARS = frozenset({str, bytes, bool, float, type(None)})


def check_tree(root: object, what: str) -> None:
    """Refuse anything in a map or list field that a frame must not carry.

    Only plain msgpack values (nil, bool, int in range, float, str, bin, array,
    map with string keys), at most MAX_DEPTH levels of containers. Level by
    level rather than recursive, so a hostile depth costs no Python stack.
    """
    level = [root]
    depth = 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            raise ProtocolError(f"{what} is nested deeper than {MAX_DEPTH} levels")
        deeper: list[Any] = []
        for obj in level:
            if type(obj) is dict:
                for k in obj:
                    if type(k) is not str:
                        raise ProtocolError(f"{what} has a map key that is not a string: {k!r:.40}")
                values: Any = obj.values()
            elif type(obj) is list:
                values = obj
            else:
                raise ProtocolError(f"{what} must be a map or an array")
            for v in values:
                t = type(v)
                if t in _SCALARS:
                    continue
                if t is int:
                    if not INT_MIN <= v <= INT_MAX:
                        raise ProtocolError(
                            f"{what} holds the integer {v}, outside the range -2**63..2**64-1"
                        )
                elif t is dict or t is list:
                    deeper.append(v)
                else:
                    raise ProtocolError(
                        f"{what} holds a value of type {t.__name__}, which frames do not carry"
                    )
        level = deeper


def _check_history(v: object) -> None:
    # Shape and types here; the order of terms is checked by
    # txlog.history.EpochHistory.from_wire where a history is used.
    _check(isinstance(v, list) and len(v) <= 4096, "history must be a list of terms")
    for t in v if isinstance(v, list) else ():
        _check(
            isinstance(t, list)
            and len(t) == 4
            and _is_int(t[0])
            and isinstance(t[1], str)
            and _is_int(t[2])
            and _is_int(t[3])
            and min(t[0], t[2], t[3]) >= 0,
            "a history term is [epoch, leader, term_id, first_lsn]",
        )


def _check_map(v: object, what: str) -> None:
    _check(type(v) is dict, f"{what} must be a map")
    check_tree(v, what)


_PACK_ERRORS = (OverflowError, ValueError, TypeError)


def _unpackable(values: tuple[Any, ...], names: tuple[str, ...], what: str) -> ProtocolError:
    """Name the field the packer choked on: it raises OverflowError for an integer
    outside -2**63..2**64-1, ValueError past its nesting limit, TypeError for a
    value it has no type for, none of which says where."""
    for name, v in zip(names, values, strict=True):
        where = f"{what}.{name}"
        try:
            if type(v) is dict or type(v) is list:
                check_tree(v, where)
            elif type(v) is int and not INT_MIN <= v <= INT_MAX:
                raise ProtocolError(
                    f"{where} is the integer {v}, outside the range -2**63..2**64-1"
                )
            else:
                _pack(v)
        except ProtocolError as exc:
            return exc
        except _PACK_ERRORS as exc:
            return ProtocolError(f"{where} cannot be encoded: {exc}")
    return ProtocolError(f"{what} cannot be encoded")


def pack(values: tuple[Any, ...], names: tuple[str, ...], what: str) -> bytes:
    """msgpack an array of ``values`` (fields ``names`` of a ``what``), raising
    ProtocolError, never the packer's own errors. Costs nothing when it works."""
    try:
        return _pack(values)
    except _PACK_ERRORS:
        raise _unpackable(values, names, what) from None


M = TypeVar("M", bound="Message")


@dataclass(frozen=True, slots=True)
class Message:
    """Base: subclasses set TYPE and implement ``validate``."""

    TYPE: ClassVar[str] = ""
    # Fields carried as their enum's value on the wire and decoded to the enum.
    ENUMS: ClassVar[dict[str, type[enum.Enum]]] = {}

    def validate(self) -> None:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def encode(self) -> bytes:
        # Hot path: one C-level attrgetter call and one pack, no per-field Python loop.
        values = _GETTERS[self.TYPE](self)
        try:
            return _pack([PROTOCOL_VERSION, self.TYPE, *values])
        except _PACK_ERRORS:
            raise _unpackable(values, _NAMES[self.TYPE], self.TYPE) from None


_REGISTRY: dict[str, type[Message]] = {}
_GETTERS: dict[str, Callable[[Any], tuple[Any, ...]]] = {}
_ARITY: dict[str, int] = {}
_NAMES: dict[str, tuple[str, ...]] = {}
_ENUM_AT: dict[str, tuple[tuple[int, str, type[enum.Enum]], ...]] = {}  # position, name, enum
# One shared Packer: its C pack() runs whole under the GIL (no Python callbacks
# for plain dict/list/str/int/bytes), so threads cannot interleave inside it.
_pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True).pack
_unpackb = msgpack.unpackb


def _register(cls: type[M]) -> type[M]:
    names = [f.name for f in fields(cls)]
    _REGISTRY[cls.TYPE] = cls
    _ARITY[cls.TYPE] = len(names)
    _NAMES[cls.TYPE] = tuple(names)
    getter = operator.attrgetter(*names)
    # attrgetter with one name returns the value itself, not a 1-tuple.
    _GETTERS[cls.TYPE] = getter if len(names) > 1 else (lambda m: (getter(m),))
    at = tuple((names.index(n), n, e) for n, e in cls.ENUMS.items())
    if at:
        _ENUM_AT[cls.TYPE] = at
        plain = _GETTERS[cls.TYPE]
        spots = frozenset(i for i, _n, _e in at)

        def values(m: Any) -> tuple[Any, ...]:
            # An enum field goes out as its value (a member of the wrong enum
            # too: validate() refuses it before anything is sent).
            return tuple(
                v.value if i in spots and isinstance(v, enum.Enum) else v
                for i, v in enumerate(plain(m))
            )

        _GETTERS[cls.TYPE] = values
    return cls


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
    and ``known`` the highest msg_id logged in it (0: none)."""

    TYPE: ClassVar[str] = "welcome"
    server: str
    epoch: int
    active: bool
    session: int = 0
    known: int = 0

    def validate(self) -> None:
        _check_id(self.server, "server")
        _check_uint(self.epoch, "epoch")
        _check(isinstance(self.active, bool), "active must be a boolean")
        _check_uint(self.session, "session")
        _check_uint(self.known, "known")


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


class WitnessKind(enum.Enum):
    ELECT = "elect"  # let me lead at a new epoch
    LEASE = "lease"  # let me go on running alone at the epoch I lead


@_register
@dataclass(frozen=True, slots=True)
class WitnessAsk(Message):
    """Server -> witness. `epoch`: the epoch asked for (ELECT) or led (LEASE);
    `known`: the highest epoch the server knows of (a server that missed a
    newer epoch is refused: it may lack what was acknowledged in it);
    `nonce`: echoed in the answer, to match it to this ask."""

    TYPE: ClassVar[str] = "w_ask"
    server: str
    kind: str
    epoch: int
    known: int
    nonce: int

    def validate(self) -> None:
        _check_id(self.server, "server")
        _check(self.kind in _WITNESS_KINDS, f"kind must be one of {sorted(_WITNESS_KINDS)}")
        _check_uint(self.epoch, "epoch")
        _check_uint(self.known, "known")
        _check_uint(self.nonce, "nonce")


@_register
@dataclass(frozen=True, slots=True)
class WitnessAnswer(Message):
    """Witness -> server. `granted`: the election or lease; `epoch`, `leader`:
    what the witness holds now (a refused server learns the newer epoch from
    it); `lease_ms`: how long a granted lease lasts from the ask."""

    TYPE: ClassVar[str] = "w_answer"
    granted: bool
    epoch: int
    leader: str
    lease_ms: int
    nonce: int
    why: str

    def validate(self) -> None:
        _check(isinstance(self.granted, bool), "granted must be a boolean")
        _check_uint(self.epoch, "epoch")
        _check(isinstance(self.leader, str) and len(self.leader) <= MAX_ID_LEN, "leader")
        _check_uint(self.lease_ms, "lease_ms")
        _check_uint(self.nonce, "nonce")
        _check(isinstance(self.why, str) and len(self.why) <= 200, "why must be a short string")


_WITNESS_KINDS = frozenset(k.value for k in WitnessKind)


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
class ReplRecords(Message):
    """Primary -> backup (PUSH/PULL): encoded transaction records, consecutive LSNs."""

    TYPE: ClassVar[str] = "records"
    sender: str
    epoch: int
    first_lsn: int
    records: list[bytes]

    def validate(self) -> None:
        _check_id(self.sender, "sender")
        _check_uint(self.epoch, "epoch")
        _check(_is_int(self.first_lsn) and self.first_lsn > 0, "first_lsn must be positive")
        _check(
            isinstance(self.records, list) and all(isinstance(r, bytes) for r in self.records),
            "records must be a list of byte strings",
        )


@_register
@dataclass(frozen=True, slots=True)
class SnapshotImage(Message):
    """Primary -> backup (PUSH/PULL): the whole table state at ``lsn``, for a
    backup too far behind for the records the primary still keeps in RAM."""

    TYPE: ClassVar[str] = "snapshot"
    sender: str
    epoch: int
    lsn: int
    state: bytes
    history: list[Any]  # the terms of the log up to lsn (txlog.history wire form)

    def validate(self) -> None:
        _check_id(self.sender, "sender")
        _check_uint(self.epoch, "epoch")
        _check_uint(self.lsn, "lsn")
        _check(isinstance(self.state, bytes), "state must be a byte string")
        _check_history(self.history)


@_register
@dataclass(frozen=True, slots=True)
class CommitRequest(Message):
    """Primary -> backup (REQ): 'do you hold everything up to lsn?'."""

    TYPE: ClassVar[str] = "commit"
    sender: str
    epoch: int
    lsn: int

    def validate(self) -> None:
        _check_id(self.sender, "sender")
        _check_uint(self.epoch, "epoch")
        _check_uint(self.lsn, "lsn")


@_register
@dataclass(frozen=True, slots=True)
class CommitAck(Message):
    """Backup -> primary (REP): the highest consecutive LSN it holds.

    ``status`` is an ``AckStatus``: ok, gap (resend from ``held + 1``), fenced
    (the sender's epoch is lower than the backup's: it must step down) or wait
    (this server does not follow the sender yet: ``held`` means nothing).
    ``incarnation`` is random per process start: within one incarnation
    ``held`` never decreases, so a lower value from the same incarnation is an
    old answer arriving late on the other link, not a restart. ``last_epoch``
    is the epoch of the record at ``held``: a backup holding records of an older
    epoch beyond the point where the asker's epoch began has a history the
    asker never had, and gets a snapshot instead of records.
    """

    TYPE: ClassVar[str] = "ack"
    ENUMS: ClassVar[dict[str, type[enum.Enum]]] = {"status": AckStatus}
    sender: str
    epoch: int
    held: int
    status: AckStatus
    incarnation: int
    last_epoch: int

    def validate(self) -> None:
        _check_uint(self.incarnation, "incarnation")
        _check_uint(self.last_epoch, "last_epoch")
        _check_id(self.sender, "sender")
        _check_uint(self.epoch, "epoch")
        _check_uint(self.held, "held")
        _check(isinstance(self.status, AckStatus), f"unknown ack status {self.status!r:.40}")


@_register
@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Every server -> its peers (PUB/SUB, on each link)."""

    TYPE: ClassVar[str] = "hb"
    ENUMS: ClassVar[dict[str, type[enum.Enum]]] = {"role": Role, "state": State}
    name: str
    role: Role
    state: State
    epoch: int
    last_lsn: int
    committed_lsn: int
    flushed_lsn: int
    link: str
    in_sync: list[str]
    handoff_to: str
    last_epoch: int
    history: list[Any]  # the terms of the sender's log (txlog.history wire form)
    candidate: int  # the epoch the sender asks to lead at (0: it does not ask)
    grant_to: str  # whom the sender lets lead ("" for nobody) ...
    grant_epoch: int  # ... at this epoch

    def validate(self) -> None:
        _check_history(self.history)
        _check_uint(self.last_epoch, "last_epoch")
        _check_uint(self.candidate, "candidate")
        _check_uint(self.grant_epoch, "grant_epoch")
        _check(isinstance(self.grant_to, str) and len(self.grant_to) <= MAX_ID_LEN, "bad grant_to")
        _check(
            isinstance(self.in_sync, list) and all(isinstance(n, str) for n in self.in_sync),
            "in_sync must be a list of node names",
        )
        _check(isinstance(self.handoff_to, str), "handoff_to must be a string")
        _check_id(self.name, "name")
        _check(isinstance(self.role, Role), f"unknown hb role {self.role!r:.40}")
        _check(isinstance(self.state, State), f"unknown hb state {self.state!r:.40}")
        for name in ("epoch", "last_lsn", "committed_lsn", "flushed_lsn"):
            _check_uint(getattr(self, name), name)
        _check(self.link in ("main", "failsafe"), "link must be main or failsafe")


@_register
@dataclass(frozen=True, slots=True)
class Goodbye(Message):
    """A server -> its peers, last on each heartbeat link: it is stopping
    cleanly (everything it processed is flushed and answered). Peers only note
    it (status, log wording); no failover rule reads it, so a lost one costs
    nothing but a warning in a peer's log."""

    TYPE: ClassVar[str] = "bye"
    name: str
    epoch: int

    def validate(self) -> None:
        _check_id(self.name, "name")
        _check_uint(self.epoch, "epoch")


@_register
@dataclass(frozen=True, slots=True)
class ControlRequest(Message):
    """Operator tool -> node control socket: status, fault injection, stop."""

    TYPE: ClassVar[str] = "ctl"
    command: str
    args: dict[str, Any]

    def validate(self) -> None:
        _check_id(self.command, "command")
        _check_map(self.args, "args")


@_register
@dataclass(frozen=True, slots=True)
class ControlReply(Message):
    """Node control socket -> operator tool."""

    TYPE: ClassVar[str] = "ctlrep"
    ok: bool
    result: dict[str, Any]
    error: str

    def validate(self) -> None:
        _check(isinstance(self.ok, bool), "ok must be a boolean")
        _check_map(self.result, "result")
        _check(isinstance(self.error, str), "error must be a string")


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


MESSAGE_TYPES: dict[str, type[Message]] = dict(_REGISTRY)


def _check_size(frame: bytes, max_bytes: int | None) -> None:
    if max_bytes is not None and len(frame) > max_bytes:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds this channel's {max_bytes}")


def decode(frame: bytes, max_bytes: int | None = None) -> Message:
    """Decode and validate one frame; raise ProtocolError on anything else.

    ``max_bytes``: refuse a longer frame before unpacking it (the channel's
    MAX_FRAME_BYTES, when the socket itself does not enforce it)."""
    _check_size(frame, max_bytes)
    try:
        obj = _unpackb(frame, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"not a msgpack frame: {exc}") from None
    _check(isinstance(obj, list) and len(obj) >= 2, "frame must be an array [version, type, ...]")
    version, tag = obj[0], obj[1]
    _check(
        type(version) is int and version == PROTOCOL_VERSION,
        f"unsupported protocol version {version!r}",
    )
    cls = _REGISTRY.get(tag) if isinstance(tag, str) else None
    _check(cls is not None, f"unknown message type {tag!r}")
    assert cls is not None
    expected = _ARITY[tag]
    _check(len(obj) - 2 == expected, f"{tag} takes {expected} fields, got {len(obj) - 2}")
    args = obj[2:]
    for i, name, kind in _ENUM_AT.get(tag, ()):
        args[i] = decode_enum(kind, args[i], f"{tag} {name}")
    msg = cls(*args)
    msg.validate()
    return msg


def encode_reply(
    msg_id: int,
    status: str,
    result: dict[str, Any],
    epoch: int,
    server: str,
    logged: bool = False,
) -> bytes:
    """A `rep` frame without building a Reply object (the server's hot path)."""
    try:
        return _pack([PROTOCOL_VERSION, Reply.TYPE, msg_id, status, result, epoch, server, logged])
    except _PACK_ERRORS:
        values = (msg_id, status, result, epoch, server, logged)
        raise _unpackable(values, _NAMES[Reply.TYPE], Reply.TYPE) from None


def decode_request(
    frame: bytes, max_bytes: int | None = MAX_FRAME_BYTES[Channel.CLIENTS]
) -> Message:
    """Decode a client frame, with a fast path for the common `req`.

    Same checks as ``decode``; a Request is built without the generic lookup.
    """
    _check_size(frame, max_bytes)
    try:
        obj = _unpackb(frame, raw=False, strict_map_key=True, use_list=True)
    except Exception:
        return decode(frame)  # raises the proper ProtocolError
    if (
        type(obj) is list
        and len(obj) == 6
        and type(obj[0]) is int
        and obj[0] == PROTOCOL_VERSION
        and obj[1] == "req"
    ):
        msg = Request(obj[2], obj[3], obj[4], obj[5])
        msg.validate()
        return msg
    return decode(frame)


def decode_as(frame: bytes, cls: type[M], max_bytes: int | None = None) -> M:
    """Decode a frame that must be of one given type."""
    msg = decode(frame, max_bytes)
    if not isinstance(msg, cls):
        raise ProtocolError(f"expected {cls.TYPE}, got {msg.TYPE}")
    return msg
