"""A node's failover history: every change of role or state, every operator
action on failover, and every set of records put aside, as plain dicts.

The newest are kept in memory for `status` (`transitions`); every entry is
also appended to the data dir through the `Disk` port, so `zmqfail history`
reads what happened after a restart. A failed append costs the record of
that entry, never the node: it is logged and counted (`history_errors`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from zmqfail.core.ports import Disk

log = logging.getLogger("zmqfail.node")

RECENT = 50  # entries kept in memory (status shows the last 20)


class Journal:
    def __init__(
        self,
        name: str,
        disk: Disk,
        wall: Callable[[], float],
        where: Callable[[], tuple[str, str, int]],
    ) -> None:
        self.name = name
        self.disk = disk
        self._wall = wall  # the time of day: entries of several nodes merge by it
        self._where = where  # () -> (role, state, epoch) now, for notes
        self.recent: list[dict[str, Any]] = []
        self.errors = 0

    def add(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Stamp `entry` with the time and our name, keep it, and append it."""
        full = {"time": self._wall(), "node": self.name, **entry}
        self.recent.append(full)
        del self.recent[:-RECENT]
        try:
            self.disk.append_history(full)
        except OSError as exc:
            self.errors += 1
            log.error("%s: cannot append to the failover history: %s", self.name, exc)
        return full

    def note(self, why: str, **extra: Any) -> dict[str, Any]:
        """An entry that is no change of state (an operator action, records set
        aside), in the same shape as a change: from and to are the state now."""
        role, state, epoch = self._where()
        place = {"from": state, "to": state, "from_role": role, "to_role": role}
        return self.add({**place, "epoch": epoch, "why": why, **extra})
