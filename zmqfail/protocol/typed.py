"""The hot path's codec: msgspec structs for the frames every request costs.

Requests (and `reqs` batches) on the primary, replies (and `reps` batches)
on the client, and transaction records on the backup and in recovery are
decoded by msgspec into array-like frozen structs, which check the version,
the tag, the field count and every field's type and bounds in C while
decoding: the same rules as the dataclasses' ``validate`` (docs/protocol.md),
two to four times faster (docs/benchmarks.md, "Codec study"). The bytes are
MessagePack as before, encoded by one shared msgspec encoder.

What a struct cannot say about a free-form map (string keys at every level,
no extension types, at most MAX_DEPTH levels) is proved from the frame's bytes
where it can be (``plain_trees``) and walked by ``check_tree`` where not.

The generic decoder (codec.decode, msgpack) stays the reference: a frame
these fast paths refuse is handed to it, so its error says what it always
said, and a frame they accept, it accepts too (tests/test_typed_codec.py).
"""

from __future__ import annotations

from collections.abc import Callable
from types import GenericAlias
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import msgspec

from zmqfail.errors import ProtocolError
from zmqfail.protocol.base import (
    _CONTAINER,
    _NOT_A_MARK,
    _unpackable,
    check_decoded,
    pack,
)
from zmqfail.protocol.limits import (
    MAX_BATCH,
    MAX_DEPTH,
    MAX_ID_LEN,
    PROTOCOL_VERSION,
    REPLY_STATUSES,
)

Version = Annotated[int, msgspec.Meta(ge=PROTOCOL_VERSION, le=PROTOCOL_VERSION)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LEN)]
Positive = Annotated[int, msgspec.Meta(gt=0)]
UInt = Annotated[int, msgspec.Meta(ge=0)]  # msgpack's integers stop at 2**64 - 1
Status = Literal["ok", "rejected", "error", "not_active", "stale", "expired"]
assert set(get_args(Status)) == REPLY_STATUSES, "Status must list limits.REPLY_STATUSES"

# What the structs' decoders raise: a frame of the wrong shape or type.
DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError)
# What the encoder raises on a value MessagePack cannot carry.
ENCODE_ERRORS = (OverflowError, ValueError, TypeError, RecursionError)

# A plain tree as msgspec can type it, so that its decoder proves in C what
# `check_tree` would walk: string keys at every level, no ext value, a bounded
# depth (integers are in range on the wire). A union may hold one str-like
# type, so bytes are left out: a tree holding bytes, or nested deeper than
# PLAIN_LEVELS, fails the typed decoder and is read as before (decoded with
# `Any` trees, then checked), which refuses exactly what it always refused.
PLAIN_LEVELS = 6  # real messages use at most 4 (limits.MAX_DEPTH); <= MAX_DEPTH
_SCALAR: Any = None | bool | int | float | str


def _plain_value(levels: int) -> Any:
    """A value holding at most ``levels`` levels of containers (each one
    doubles msgspec's type nodes: keep it small)."""
    value = _SCALAR
    for _ in range(levels):
        value = _SCALAR | GenericAlias(list, (value,)) | GenericAlias(dict, (str, value))
    return value


if TYPE_CHECKING:
    PlainValue = Any
else:  # a value inside a map or list field, the field itself being level 1
    PlainValue = _plain_value(PLAIN_LEVELS - 1)
assert PLAIN_LEVELS <= MAX_DEPTH, "a typed plain tree must be one check_tree lets through"

_encoder = msgspec.msgpack.Encoder()
# One shared encoder, like the one shared msgpack Packer before: its C
# encode() runs whole under the GIL for plain values, so threads (the disk
# writer) cannot interleave inside it.
encode: Callable[[Any], bytes] = _encoder.encode


class RequestFrame(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """A `req` frame as the primary reads it (the fields of protocol.Request)."""

    version: Version
    tag: Literal["req"]
    client_id: Id
    msg_id: Positive
    body: dict[str, Any]
    session: UInt


class RequestsFrame(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """A `reqs` frame whose every request is well formed (the common case;
    one bad request sends the frame to the item-by-item path)."""

    version: Version
    tag: Literal["reqs"]
    requests: Annotated[list[RequestFrame], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class ReplyFrame(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """A `rep` frame as the client reads it (the fields of protocol.Reply)."""

    version: Version
    tag: Literal["rep"]
    msg_id: UInt
    status: Status
    result: dict[str, Any]
    epoch: UInt
    server: Id
    logged: bool


class RepliesFrame(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """A `reps` frame whose every reply is well formed."""

    version: Version
    tag: Literal["reps"]
    replies: Annotated[list[ReplyFrame], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class PlainReplyFrame(ReplyFrame, frozen=True):
    """A `rep` frame whose result is a plain tree as typed (PlainValue): no
    walk after decoding. Most replies; the others are read as ReplyFrame."""

    if not TYPE_CHECKING:
        result: dict[str, PlainValue]


class PlainRepliesFrame(RepliesFrame, frozen=True):
    """A `reps` frame whose every result is a plain tree as typed."""

    if not TYPE_CHECKING:
        replies: Annotated[list[PlainReplyFrame], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


request_decoder = msgspec.msgpack.Decoder(RequestFrame)
requests_decoder = msgspec.msgpack.Decoder(RequestsFrame)
reply_decoder = msgspec.msgpack.Decoder(ReplyFrame)
replies_decoder = msgspec.msgpack.Decoder(RepliesFrame)
plain_reply_decoder = msgspec.msgpack.Decoder(PlainReplyFrame)
plain_replies_decoder = msgspec.msgpack.Decoder(PlainRepliesFrame)

_ARRAYS = bytes((*range(0x90, 0xA0), 0xDC, 0xDD))
_MAPS = bytes(b for b in _CONTAINER if b not in _ARRAYS)


def plain_trees(frame: bytes, maps: int, arrays: int) -> bool:
    """True when the free-form values of a frame a struct decoded are sure to
    pass `check_tree`, so the walk can be skipped.

    ``maps``: how many map fields the struct typed ``dict[str, Any]`` (their
    own keys checked as strings by msgspec); ``arrays``: how many arrays it
    read itself (the frame's, a batch's list, a record's ``changes``). Every
    msgpack container and ext or bin value starts with its type byte, so the
    frame holds at most as many of each as such bytes. With no ext or bin
    byte, no value is an ext (or a bytes map key); with no more map bytes
    than typed maps, no map is nested (msgspec would give a nested map's int
    keys through, where msgpack's strict_map_key refused them); with fewer
    than MAX_DEPTH other container bytes, no tree is deeper than MAX_DEPTH.
    The same byte values also occur inside strings and numbers: False only
    means "walk the trees" (orders with fills nest maps, and do walk)."""
    marks = frame.translate(None, _NOT_A_MARK)
    if len(marks) - maps - arrays >= MAX_DEPTH:
        return False
    rest = marks.translate(None, _ARRAYS)
    return len(rest) <= maps and not rest.translate(None, _MAPS)


# msgspec writes a datetime as the msgpack timestamp extension (type -1) in
# one of three forms; msgpack refused a datetime. Nothing else of the types
# msgspec knows becomes an ext (a msgspec.msgpack.Ext aside, made on purpose).
_TIMESTAMPS = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")


def may_hold_timestamp(frame: bytes) -> bool:
    """Whether `frame` may hold a timestamp extension (or only the same
    bytes inside a string or number): what the encoders double-check."""
    # An int needle is a memchr; a bytes one goes through the buffer protocol
    # first, several times slower on a frame this size.
    return 0xFF in frame and any(t in frame for t in _TIMESTAMPS)


def why(exc: Exception, names: tuple[str, ...], what: str) -> ProtocolError:
    """A msgspec error as a ProtocolError naming the field: msgspec says
    "Expected `int` >= 1 - at `$[3]`", the field being the array's fourth."""
    text = str(exc)
    head, sep, where = text.rpartition(" - at `$[")
    if sep:
        index, _, rest = where.partition("]")
        if index.isdigit() and int(index) < len(names):
            return ProtocolError(f"{what} {names[int(index)]}{rest.rstrip('`')}: {head}")
    return ProtocolError(f"{what}: {text}")


_FLAT = frozenset({str, bytes, bool, float, int, type(None)})


def check_map(tree: dict[str, Any], what: str) -> None:
    """`check_tree` of a map a struct decoded (its keys checked as strings,
    its integers in range), without the walk when no value is a container:
    a request body is such a flat map."""
    if not _FLAT.issuperset(map(type, tree.values())):
        check_decoded(tree, what)


_STR = frozenset({str})


def flat_map(tree: object) -> bool:
    """True for a map of string keys and scalar values (a request body),
    which `check_tree` lets through once an encoder has written it: only an
    integer out of range could still be refused, and the encoder refuses it."""
    return (
        type(tree) is dict
        and _STR.issuperset(map(type, tree))
        and _FLAT.issuperset(map(type, tree.values()))
    )


def encode_checked(values: tuple[Any, ...], names: tuple[str, ...], what: str) -> bytes:
    """msgpack an array of ``values`` (fields ``names`` of a ``what``) with the
    shared msgspec encoder, for values an application made: ProtocolError
    naming the field, never the encoder's own errors.

    msgspec writes a datetime, which msgpack refused, as a timestamp
    extension that a peer's decoder would refuse: a frame that may hold one
    goes through the msgpack packer as before, which refuses it here (and
    gives the same bytes otherwise). msgspec also writes a set, an enum or a
    dataclass as the plain array, value or map msgpack refused
    (docs/protocol.md, "Encoding")."""
    try:
        out = encode(values)
    except ENCODE_ERRORS:
        raise _unpackable(values, names, what) from None
    if may_hold_timestamp(out):
        return pack(values, names, what)
    return out
