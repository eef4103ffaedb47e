"""What every message shares: field checks that raise ProtocolError, the
shared packer, the `Message` base class and the registry of message types
that decoding looks a type tag up in."""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

import msgpack

from zmqfail.errors import ProtocolError
from zmqfail.protocol.limits import INT_MAX, INT_MIN, MAX_DEPTH, MAX_ID_LEN, PROTOCOL_VERSION


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


# The checks below run on every field of every frame: the message is built
# only when the check fails (an f-string argument would be formatted each
# time, an enum's repr included).


def _check_id(v: object, what: str) -> None:
    if not (isinstance(v, str) and 0 < len(v) <= MAX_ID_LEN):
        raise ProtocolError(f"{what} must be a non-empty string")


def _check_uint(v: object, what: str) -> None:
    if type(v) is int and 0 <= v <= INT_MAX:
        return  # the common case, without a call (bool is not `int` here)
    if not (_is_int(v) and 0 <= v <= INT_MAX):  # type: ignore[operator]
        raise ProtocolError(f"{what} must be a non-negative integer below 2**64")


_SCALARS: frozenset[type] = frozenset({str, bytes, bool, float, type(None)})
# A decoder's integers are in range by construction (msgpack carries no
# other), so a tree it made skips the range test: about a fifth of a walk.
_DECODED_SCALARS = _SCALARS | {int}


def check_tree(root: object, what: str) -> None:
    """Refuse anything in a map or list field that a frame must not carry.

    Only plain msgpack values (nil, bool, int in range, float, str, bin, array,
    map with string keys), at most MAX_DEPTH levels of containers. Level by
    level rather than recursive, so a hostile depth costs no Python stack.
    """
    _walk(root, what, _SCALARS)


def check_decoded(root: object, what: str) -> None:
    """`check_tree` of a tree a msgpack decoder (msgpack's or msgspec's) made."""
    _walk(root, what, _DECODED_SCALARS)


def _walk(root: object, what: str, scalars: frozenset[type]) -> None:
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
                if t in scalars:
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


# msgpack type bytes: ext (timestamps included) and bin (bytes: the only map
# key besides str that strict_map_key lets through), and every container.
_EXT_OR_BIN = bytes((0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8))
_CONTAINER = bytes((*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF))
_NOT_A_MARK = bytes(b for b in range(256) if b not in _EXT_OR_BIN + _CONTAINER)


def plain_frame(frame: bytes) -> bool:
    """True when every tree in `frame`, once decoded by msgpack with
    strict_map_key, is sure to pass `check_tree`, so the walk can be skipped.

    Every msgpack object starts with its type byte. With no ext or bin type
    byte anywhere in the frame, it holds no ext value and no bytes (so every
    map key is a str); with at most MAX_DEPTH container type bytes, no tree is
    deeper than MAX_DEPTH; msgpack's integers are all in range. The same byte
    values also occur inside strings and numbers, so a False only means "walk
    the tree" (a record with an order id above 65,535 often gets one): two C
    passes over the bytes instead of a Python walk over every value, which
    took two thirds of a backup's or a recovery's time per record."""
    marks = frame.translate(None, _NOT_A_MARK)
    return len(marks) <= MAX_DEPTH and not marks.translate(None, _CONTAINER)


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
        spots = tuple(i for i, _n, _e in at)

        def values(m: Any) -> tuple[Any, ...]:
            # An enum field goes out as its value (a member of the wrong enum
            # too: validate() refuses it before anything is sent). Only the
            # enum positions are looked at: every commit answer goes through
            # here (a generator over every field cost 4 us an ack).
            got = list(plain(m))
            for i in spots:
                v = got[i]
                if isinstance(v, enum.Enum):
                    got[i] = v.value
            return tuple(got)

        _GETTERS[cls.TYPE] = values
    return cls
