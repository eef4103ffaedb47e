"""Checks every parser of a config table shares, so a mistyped key or a bad
number reads the same whichever table it is in ([cluster], [nodes.NAME],
[sessions], [flush], [failover], [retention], [witness], [security], [app]).

A key a table does not know is an error, never ignored: a misspelt
``heartbeat_mises`` would otherwise leave the default in force without a word.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

from zmqfail.errors import ConfigError


def check_keys(where: str, table: Mapping[str, Any], known: Iterable[str]) -> None:
    """ConfigError naming every key of `table` not in `known`, and the known ones."""
    allowed = set(known)
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(
            f"{where} unknown key(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(allowed))})"
        )


def positive_ints(where: str, table: Mapping[str, Any]) -> dict[str, int]:
    """`table`'s values, each a positive integer (a bool is not one)."""
    for key, v in table.items():
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"{where} {key} must be a positive integer, got {v!r}")
    return dict(table)


def int_fields(where: str, table: Mapping[str, Any], cls: type[Any]) -> dict[str, int]:
    """A table whose every key is a field of dataclass `cls` and a positive integer."""
    check_keys(where, table, (f.name for f in fields(cls)))
    return positive_ints(where, table)
