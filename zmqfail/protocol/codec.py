"""Decoding a frame of any type, with the fast paths of the hot ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from zmqfail.errors import ProtocolError

# Every family's module registers its types when imported: all of them
# before the table is taken (whatever order the package imports them in).
from zmqfail.protocol import client, control, servers, witness  # noqa: F401
from zmqfail.protocol.base import (
    _ARITY,
    _ENUM_AT,
    _NAMES,
    _PACK_ERRORS,
    _REGISTRY,
    M,
    Message,
    _check,
    _pack,
    _unpackable,
    _unpackb,
    decode_enum,
)
from zmqfail.protocol.client import Reply, ReplyBatch, Request, RequestBatch
from zmqfail.protocol.limits import (
    INT_MAX,
    MAX_BATCH,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Channel,
)

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
    if not (type(version) is int and version == PROTOCOL_VERSION):
        raise ProtocolError(f"unsupported protocol version {version!r}")
    cls = _REGISTRY.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {tag!r}")
    expected = _ARITY[tag]
    if len(obj) - 2 != expected:
        raise ProtocolError(f"{tag} takes {expected} fields, got {len(obj) - 2}")
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
    if type(obj) is list and len(obj) >= 3 and type(obj[0]) is int and obj[0] == PROTOCOL_VERSION:
        tag = obj[1]
        if tag == "req" and len(obj) == 6:
            msg: Message = Request(obj[2], obj[3], obj[4], obj[5])
            msg.validate()
            return msg
        if tag == "reqs" and len(obj) == 3:
            msg = RequestBatch(obj[2])
            msg.validate()
            return msg
    return decode(frame)


# --- batches (docs/protocol.md, "Batches") -----------------------------------

_array_header: Callable[[int], bytes] = msgpack.Packer().pack_array_header
# What every frame of a type starts with, as our encoder writes it: a batch is
# spliced from frames already encoded, so neither side encodes anything twice.
_REQ_HEAD = _array_header(6) + _pack(PROTOCOL_VERSION) + _pack(Request.TYPE)
_REP_HEAD = _array_header(8) + _pack(PROTOCOL_VERSION) + _pack(Reply.TYPE)
_ITEM_HEAD = {RequestBatch: _REQ_HEAD, ReplyBatch: _REP_HEAD}
_BATCH_HEAD = {
    cls: _array_header(3) + _pack(PROTOCOL_VERSION) + _pack(cls.TYPE) for cls in _ITEM_HEAD
}


def is_reply_frame(frame: bytes) -> bool:
    """True for a lone `rep` frame as `encode_reply` and `Reply.encode` write it."""
    return frame.startswith(_REP_HEAD)


def encode_batch(cls: type[RequestBatch] | type[ReplyBatch], frames: Sequence[bytes]) -> bytes:
    """One `reqs` (or `reps`) frame holding encoded `req` (or `rep`) frames,
    spliced without decoding or encoding them again."""
    n = len(frames)
    if not 0 < n <= MAX_BATCH:
        raise ProtocolError(f"a {cls.TYPE} frame holds 1 to {MAX_BATCH} frames, not {n}")
    head = _ITEM_HEAD[cls]
    for f in frames:
        if not f.startswith(head):
            raise ProtocolError(f"a {cls.TYPE} frame holds only {head[-3:].decode()} frames")
    return _BATCH_HEAD[cls] + _array_header(n) + b"".join(frames)


@dataclass(frozen=True, slots=True)
class BadItem:
    """A request of a batch that does not decode: answered on its own with an
    error reply (msg_id 0 when its msg_id cannot be read)."""

    msg_id: int
    reason: str


def _item(item: object, tag: str, arity: int) -> list[Any]:
    _check(
        type(item) is list
        and len(item) == arity
        and type(item[0]) is int
        and item[0] == PROTOCOL_VERSION
        and item[1] == tag,
        f"a batched {tag} must be the array of a version {PROTOCOL_VERSION} {tag} frame"
        f" ({arity} items)",
    )
    assert type(item) is list
    return item


def batch_requests(batch: RequestBatch) -> list[Request | BadItem]:
    """Every request of a batch, in order, each validated as a lone `req` is;
    a bad one is a `BadItem` in its place."""
    out: list[Request | BadItem] = []
    for item in batch.requests:
        try:
            fields = _item(item, Request.TYPE, 6)
            req = Request(fields[2], fields[3], fields[4], fields[5])
            req.validate()
            out.append(req)
        except ProtocolError as exc:
            mid = item[3] if type(item) is list and len(item) > 3 else 0
            ok = type(mid) is int and 0 < mid <= INT_MAX
            out.append(BadItem(mid if ok else 0, f"request {len(out) + 1} of the batch: {exc}"))
    return out


def decode_all(frame: bytes, max_bytes: int | None = None) -> list[Message]:
    """Every message a frame carries, in order: a batch's requests or
    replies, each validated (a bad one is a ProtocolError here), or the
    frame's one message. For tools and tests; the hot paths read batches
    item by item."""
    msg = decode(frame, max_bytes)
    if isinstance(msg, RequestBatch):
        out: list[Message] = []
        for item in batch_requests(msg):
            if isinstance(item, BadItem):
                raise ProtocolError(item.reason)
            out.append(item)
        return out
    if isinstance(msg, ReplyBatch):
        replies, bad = batch_replies(msg)
        _check(bad == 0, f"{bad} bad replies in a reps frame")
        return list(replies)
    return [msg]


def batch_replies(batch: ReplyBatch) -> tuple[list[Reply], int]:
    """The valid replies of a batch, in order, and how many items were not."""
    out: list[Reply] = []
    bad = 0
    for item in batch.replies:
        try:
            fields = _item(item, Reply.TYPE, 8)
            rep = Reply(*fields[2:])
            rep.validate()
            out.append(rep)
        except ProtocolError:
            bad += 1
    return out, bad


def decode_as(frame: bytes, cls: type[M], max_bytes: int | None = None) -> M:
    """Decode a frame that must be of one given type."""
    msg = decode(frame, max_bytes)
    if not isinstance(msg, cls):
        raise ProtocolError(f"expected {cls.TYPE}, got {msg.TYPE}")
    return msg
