"""What an operator may ask of a node's failover: the control socket's
`switchover`, `promote`, `pause`, `resume` and `history`.

Each checks what only the node knows (its state, which peers it hears now),
hands the failover machine its event, and answers a dict; or raises
ProtocolError with one line saying why nothing changed. The rules are the
machine's (`failover/manual.py`); this only reads the world for it.
"""

from __future__ import annotations

import logging
from typing import Any

from zmqfail.core.agent import FailoverAgent
from zmqfail.core.journal import StateChange, decode_all
from zmqfail.core.peers import PeerTable
from zmqfail.core.ports import Disk
from zmqfail.errors import ProtocolError
from zmqfail.failover.state import (
    Event,
    IllegalTransition,
    Pause,
    Promote,
    Resume,
    Role,
    State,
    Switchover,
)

log = logging.getLogger("zmqfail.node")


class Operator:
    def __init__(
        self, name: str, agent: FailoverAgent, peers: PeerTable, dead_after: float, disk: Disk
    ) -> None:
        self.name = name
        self.agent = agent
        self.peers = peers
        self.dead_after = dead_after
        self.disk = disk

    def switchover(self, now: float, to: str = "") -> dict[str, Any]:
        fs = self.agent.fs
        if fs.role is not Role.PRIMARY or fs.state is not State.NORMAL:
            raise ProtocolError(
                f"cannot switch over: {self.name} is {fs.role.value}/{fs.state.value}; "
                "only a primary in the normal state (with an in-sync backup) can hand over"
            )
        self._operate(Switchover(to), now, "switch over")
        return {"handoff_to": self.agent.fs.handoff_to, "state": self.agent.fs.state.value}

    def promote(self, force: bool, now: float) -> dict[str, Any]:
        """Take over now (the operator knows the other server is dead)."""
        fs = self.agent.fs
        if fs.role is Role.PRIMARY:
            raise ProtocolError(
                f"cannot promote {self.name}: it already serves ({fs.role.value}/{fs.state.value})"
            )
        if fs.state is State.STARTING:
            raise ProtocolError(
                f"cannot promote {self.name}: it is still starting (it listens for its peers "
                f"for {2 * self.dead_after * 1000:.0f} ms); ask again"
            )
        heard = tuple(p for p in self.agent.peer_names if self.peers.alive(p, now))
        was = f"{fs.role.value}/{fs.state.value}"
        self._operate(Promote(force, heard), now, f"promote {self.name}")
        new = self.agent.fs
        return {
            "was": was,
            "role": new.role.value,
            "state": new.state.value,
            "epoch": new.epoch,
            "asking": new.asking,  # waiting for the witness's grant of this epoch
            "may_lack_records": fs.state is not State.NORMAL,
            "heard": list(heard),
        }

    def pause(self, now: float) -> dict[str, Any]:
        self._operate(Pause(), now, "pause failover")
        return self._paused()

    def resume(self, now: float) -> dict[str, Any]:
        self._operate(Resume(), now, "resume failover")
        return self._paused()

    def _paused(self) -> dict[str, Any]:
        fs = self.agent.fs
        return {"paused": fs.paused, "role": fs.role.value, "state": fs.state.value}

    def history(self) -> list[StateChange]:
        """The failover history kept in the data dir, oldest first (an entry
        that does not decode is logged and left out)."""
        try:
            raw = self.disk.read_history()
        except OSError as exc:
            raise ProtocolError(f"cannot read the failover history: {exc}") from None
        entries, bad = decode_all(raw, "history entry")
        if bad:
            log.warning("%s: %d history entries skipped, first: %s", self.name, len(bad), bad[0])
        return entries

    def _operate(self, event: Event, now: float, what: str) -> None:
        try:
            self.agent.operate(event, now)
        except IllegalTransition as exc:
            raise ProtocolError(f"cannot {what}: {exc}") from None
