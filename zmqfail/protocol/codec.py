"""Decoding a frame of any type, with the fast paths of the hot ones."""

from __future__ import annotations

from typing import Any

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
from zmqfail.protocol.client import Reply, Request
from zmqfail.protocol.limits import MAX_FRAME_BYTES, PROTOCOL_VERSION, Channel

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
