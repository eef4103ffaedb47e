"""A node's failover history: every change of role or state, every operator
action on failover, every start and stop, and every set of records put
aside, each a typed `StateChange`.

The newest are kept in memory for `status` (`transitions`); every entry is
also appended to the data dir through the `Disk` port, so `zmqfail history`
reads what happened after a restart. A failed append costs the record of
that entry, never the node: it is logged and counted (`history_errors`).

On the wire and in `history.jsonl` an entry is a flat map (`from`, `to`,
`from_role`, `to_role`, ...) holding only the keys that say something, so a
line reads on its own; `StateChange.from_wire` checks every key it knows and
ignores others, as `NodeStatus.from_wire` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from zmqfail.core.ports import Disk
from zmqfail.core.reader import Reader
from zmqfail.errors import ProtocolError
from zmqfail.failover.state import FailoverState, Role, State
from zmqfail.protocol import decode_enum

log = logging.getLogger("zmqfail.node")

RECENT = 50  # entries kept in memory (status shows the last 20)


@dataclass(frozen=True, slots=True)
class SetAside:
    """Records a node cut from its log and kept in quarantine, because no
    other server's history holds them."""

    records: int
    first_lsn: int
    last_lsn: int
    file: str  # the quarantine file (`zmqfail log dump --data-dir` reads it)
    acknowledged_here: int | None = None  # None: not known (found at start-up)


@dataclass(frozen=True, slots=True)
class StateChange:
    """One entry of a node's failover history: a change of role or state, or
    a note (an operator action, a start, records set aside: `src` is `dst`)."""

    time: float  # the node's wall clock (the journal stamps it): nodes merge by it
    src: State
    dst: State
    why: str  # the event, or what the note says
    epoch: int
    node: str = ""  # whose history ("" within one node's status)
    src_role: Role | None = None
    dst_role: Role | None = None
    lsn: int | None = None  # the last record held then
    took_over_from: str | None = None  # a takeover: the primary it replaced
    outage_ms: int | None = None  # ... and how long since it was last heard
    may_lack_records: bool = False  # promoted from a state that may lack acked records
    primary: str | None = None  # a primary whose loss was noted, not acted on
    paused: bool = False  # at a start: automatic failover is held
    set_aside: SetAside | None = None
    quarantined: int | None = None  # records in quarantine in all, after a cut
    error: str | None = None  # why the node stopped

    @property
    def changed(self) -> bool:
        """A change of role or state (not a note)."""
        return self.src is not self.dst or self.src_role is not self.dst_role

    def to_wire(self) -> dict[str, Any]:
        d: dict[str, Any] = {"time": self.time, "from": self.src.value, "to": self.dst.value}
        d.update(why=self.why, epoch=self.epoch)
        for f in fields(self)[5:]:  # the optional fields: only those that say something
            v = getattr(self, f.name)
            if v is None or v is False or v == "":
                continue
            if isinstance(v, Role):
                d[_ROLE_KEYS[f.name]] = v.value
            elif isinstance(v, SetAside):
                d.update((g.name, getattr(v, g.name)) for g in fields(v))
                if v.acknowledged_here is None:
                    del d["acknowledged_here"]
            else:
                d[f.name] = v
        return d

    @classmethod
    def from_wire(cls, t: object, what: str = "history entry") -> StateChange:
        """Decode and check one entry (a line of the file, or a status's);
        anything of the wrong type is a ProtocolError naming it."""
        r = Reader(t, what)
        records = r.int_("records")
        return cls(
            r.number("time") or 0.0,
            decode_enum(State, r.d.get("from"), f"{what} from"),
            decode_enum(State, r.d.get("to"), f"{what} to"),
            r.text("why") or "",
            r.int_("epoch") or 0,
            node=r.text("node") or "",
            src_role=r.enum("from_role", Role),
            dst_role=r.enum("to_role", Role),
            lsn=r.int_("lsn"),
            took_over_from=r.text("took_over_from"),
            outage_ms=r.int_("outage_ms"),
            may_lack_records=r.flag("may_lack_records"),
            primary=r.text("primary"),
            paused=r.flag("paused"),
            set_aside=None if records is None else _set_aside(r, records),
            quarantined=r.int_("quarantined"),
            error=r.text("error"),
        )


_ROLE_KEYS = {"src_role": "from_role", "dst_role": "to_role"}


def _set_aside(r: Reader, records: int) -> SetAside:
    first, last, file = r.int_("first_lsn"), r.int_("last_lsn"), r.text("file")
    if first is None or last is None or file is None:
        raise ProtocolError(f"{r.what} sets {records} records aside without their lsns or file")
    return SetAside(records, first, last, file, r.int_("acknowledged_here"))


def decode_all(entries: list[Any], what: str) -> tuple[list[StateChange], list[str]]:
    """The entries that decode, and why each other one does not (a tool shows
    what it can and names what it skipped)."""
    good: list[StateChange] = []
    bad: list[str] = []
    for e in entries:
        try:
            good.append(StateChange.from_wire(e, what))
        except ProtocolError as exc:
            bad.append(str(exc))
    return good, bad


class Journal:
    def __init__(
        self,
        name: str,
        disk: Disk,
        wall: Callable[[], float],
        where: Callable[[], FailoverState],
    ) -> None:
        self.name = name
        self.disk = disk
        self._wall = wall  # the time of day: entries of several nodes merge by it
        self._where = where  # the failover state now, for notes
        self.recent: list[StateChange] = []
        self.errors = 0

    def add(self, change: StateChange) -> StateChange:
        """Stamp `change` with the time and our name, keep it, and append it."""
        full = replace(change, time=self._wall(), node=self.name)
        self.recent.append(full)
        del self.recent[:-RECENT]
        try:
            self.disk.append_history(full.to_wire())
        except OSError as exc:
            self.errors += 1
            log.error("%s: cannot append to the failover history: %s", self.name, exc)
        return full

    def note(self, why: str, **more: Any) -> StateChange:
        """An entry that is no change of state (an operator action, records set
        aside), in the same shape as a change: from and to are the state now.
        `more`: StateChange fields (lsn, set_aside, ...)."""
        fs = self._where()
        role, state = fs.role, fs.state
        here = StateChange(0.0, state, state, why, fs.epoch, src_role=role, dst_role=role)
        return self.add(replace(here, **more))
