"""Typed reads of one map that came from outside the process (a node's
status reply, a line of a failover history): each read checks the type and
names what was wrong in a ProtocolError, so a tool shows a bad node or line
with the reason instead of passing a bad value on."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from zmqfail.errors import ProtocolError
from zmqfail.protocol import check_tree, decode_enum

E = TypeVar("E", bound=enum.Enum)


class Reader:
    """Reads of the map `d`; every error starts with `what` (where it came from)."""

    def __init__(self, d: object, what: str) -> None:
        if not isinstance(d, Mapping):
            raise ProtocolError(f"{what} must be a map, got {type(d).__name__}")
        self.d = d
        self.what = what

    def _get(self, key: str, ok: Callable[[object], bool], kind: str, required: bool) -> Any:
        v = self.d.get(key)
        if v is None:
            if required:
                raise ProtocolError(f"{self.what} lacks {key!r}")
            return None
        if not ok(v):
            raise ProtocolError(f"{self.what} {key} must be {kind}, got {v!r:.40}")
        return v

    def int_(self, key: str) -> int | None:
        v: int | None = self._get(key, is_int, "an integer", False)
        return v

    def number(self, key: str) -> float | None:
        v = self._get(key, lambda x: is_int(x) or isinstance(x, float), "a number", False)
        return None if v is None else float(v)

    def text(self, key: str, required: bool = False) -> str | None:
        v: str | None = self._get(key, lambda x: isinstance(x, str), "a string", required)
        return v

    def enum(self, key: str, cls: type[E], required: bool = False) -> E | None:
        v = self.d.get(key)
        if v is None and not required:
            return None
        return decode_enum(cls, v, f"{self.what} {key}")

    def flag(self, key: str) -> bool:
        v = self.d.get(key, False)
        if not isinstance(v, bool):
            raise ProtocolError(f"{self.what} {key} must be true or false, got {v!r:.40}")
        return v

    def list_(self, key: str) -> list[Any]:
        v: list[Any] | None = self._get(key, lambda x: isinstance(x, list), "a list", False)
        return v or []

    def map_(self, key: str) -> Mapping[str, Any]:
        v = self._get(key, lambda x: isinstance(x, Mapping), "a map", False)
        return v or {}

    def tree(self, key: str) -> dict[str, Any]:
        v = dict(self.map_(key))
        check_tree(v, f"{self.what} {key}")
        return v

    def item_int(self, key: str, v: object) -> int:
        if not is_int(v):
            raise ProtocolError(f"{self.what} {key} must hold integers, got {v!r:.40}")
        assert isinstance(v, int)
        return v

    def item_text(self, key: str, v: object) -> str:
        if not isinstance(v, str):
            raise ProtocolError(f"{self.what} {key} must hold strings, got {v!r:.40}")
        return v

    def item_map(self, key: str, v: object) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise ProtocolError(f"{self.what} {key} must hold maps, got {v!r:.40}")
        check_tree(v, f"{self.what} {key}")
        return v


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
