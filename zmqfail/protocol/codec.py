"""Decoding a frame of any type, with the fast paths of the hot ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from zmqfail.errors import ProtocolError

# Every family's module registers its types when imported: all of them
# before the table is taken (whatever order the package imports them in).
from zmqfail.protocol import client, control, servers, typed, witness  # noqa: F401
from zmqfail.protocol.base import (
    _ARITY,
    _ENUM_AT,
    _NAMES,
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
_REQ_FIELDS = ("version", "type", *_NAMES[Request.TYPE])
_REP_FIELDS = ("version", "type", *_NAMES[Reply.TYPE])


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
    values = (PROTOCOL_VERSION, Reply.TYPE, msg_id, status, result, epoch, server, logged)
    return typed.encode_checked(values, _REP_FIELDS, Reply.TYPE)


def encode_request(client_id: str, msg_id: int, body: dict[str, Any], session: int) -> bytes:
    """A `req` frame without building a Request object (the client's hot
    path), the bytes `Request.encode` gives. ``body`` must have passed
    `check_tree` (the client checks it before taking a msg_id): then it holds
    only values msgpack carries, which both encoders write alike."""
    values = (PROTOCOL_VERSION, Request.TYPE, client_id, msg_id, body, session)
    try:
        return typed.encode(values)
    except typed.ENCODE_ERRORS:
        raise _unpackable(values, _REQ_FIELDS, Request.TYPE) from None


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
_REQS_HEAD = _BATCH_HEAD[RequestBatch]
_REPS_HEAD = _BATCH_HEAD[ReplyBatch]


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


# --- the hot paths' readers (protocol.typed) ---------------------------------

AnyRequest = Request | typed.RequestFrame


def read_requests(
    frame: bytes, max_bytes: int | None = MAX_FRAME_BYTES[Channel.CLIENTS]
) -> list[AnyRequest | BadItem] | Message:
    """What the primary reads of a client frame: the requests of a `req` or
    `reqs` frame in order, each checked as `decode_request` and
    `batch_requests` check it (a bad one of a batch is a BadItem in its
    place), or the frame's other message; ProtocolError for a bad frame.

    msgspec's structs read the common frames; anything they refuse goes to
    `decode_request`, which refuses it with the error it always gave (or
    reads the other types)."""
    _check_size(frame, max_bytes)
    if frame.startswith(_REQ_HEAD):
        try:
            req = typed.request_decoder.decode(frame)
        except typed.DECODE_ERRORS:
            pass
        else:
            typed.check_map(req.body, "body")
            return [req]
    elif frame.startswith(_REQS_HEAD):
        try:
            batch = typed.requests_decoder.decode(frame)
        except typed.DECODE_ERRORS:
            pass
        else:
            out: list[AnyRequest | BadItem] = []
            for req in batch.requests:
                try:
                    typed.check_map(req.body, "body")
                    out.append(req)
                except ProtocolError as exc:
                    out.append(BadItem(req.msg_id, f"request {len(out) + 1} of the batch: {exc}"))
            return out
    msg = decode_request(frame, max_bytes)
    if isinstance(msg, Request):
        return [msg]
    if isinstance(msg, RequestBatch):
        return list(batch_requests(msg))
    return msg


def _reply(r: typed.ReplyFrame, plain: bool) -> Reply:
    if not plain:
        typed.check_map(r.result, "result")
    return Reply(r.msg_id, r.status, r.result, r.epoch, r.server, r.logged)


def read_replies(frame: bytes) -> tuple[list[Reply], int] | None:
    """The client's fast path: the valid replies of a `rep` or `reps` frame
    and how many items were not (as `batch_replies` counts them), or None
    for a frame of another type or a malformed one (`decode` it).

    A frame whose results are plain trees as `typed.PlainValue` types them
    (an order's result with its fills) is proved plain by its decoder. Any
    other is read with `Any` results, each checked by `check_map` unless
    the byte scan of `typed.plain_trees` shows no nested map: a frame the
    typed decoder refuses gets the answer it always got."""
    if frame.startswith(_REP_HEAD):
        try:
            return [_reply(typed.plain_reply_decoder.decode(frame), True)], 0
        except typed.DECODE_ERRORS:
            pass
        try:
            rep = typed.reply_decoder.decode(frame)
            return [_reply(rep, typed.plain_trees(frame, 1, 1))], 0
        except (*typed.DECODE_ERRORS, ProtocolError):
            return None
    if frame.startswith(_REPS_HEAD):
        try:
            plain = typed.plain_replies_decoder.decode(frame)
        except typed.DECODE_ERRORS:
            pass
        else:
            return [_reply(r, True) for r in plain.replies], 0
        try:
            batch = typed.replies_decoder.decode(frame)
        except typed.DECODE_ERRORS:
            return None
        n = len(batch.replies)
        walked = typed.plain_trees(frame, n, n + 2)
        out: list[Reply] = []
        bad = 0
        for r in batch.replies:
            try:
                out.append(_reply(r, walked))
            except ProtocolError:
                bad += 1
        return out, bad
    return None
