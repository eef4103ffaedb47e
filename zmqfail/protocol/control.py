"""Messages between operator tools and a node's control socket."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from zmqfail.protocol.base import Message, _check, _check_id, _check_map, _register


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
