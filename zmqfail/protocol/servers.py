"""Messages between the servers: replication records, snapshot images,
commit requests and their acks, heartbeats and goodbyes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar

from zmqfail.errors import ProtocolError
from zmqfail.failover.state import Role, State
from zmqfail.protocol.base import (
    AckStatus,
    Message,
    _check,
    _check_history,
    _check_id,
    _check_uint,
    _is_int,
    _register,
)
from zmqfail.protocol.limits import MAX_ID_LEN

# Backups a heartbeat may list in `admitted`: a cluster has a handful of servers.
MAX_ADMITTED = 64


@_register
@dataclass(frozen=True, slots=True)
class ReplRecords(Message):
    """Primary -> backup (PUSH/PULL): encoded transaction records, consecutive LSNs."""

    TYPE: ClassVar[str] = "records"
    sender: str
    epoch: int
    first_lsn: int
    records: list[bytes]

    def validate(self) -> None:
        _check_id(self.sender, "sender")
        _check_uint(self.epoch, "epoch")
        _check(_is_int(self.first_lsn) and self.first_lsn > 0, "first_lsn must be positive")
        _check(
            isinstance(self.records, list) and all(isinstance(r, bytes) for r in self.records),
            "records must be a list of byte strings",
        )


@_register
@dataclass(frozen=True, slots=True)
class SnapshotImage(Message):
    """Primary -> backup (PUSH/PULL): the whole table state at ``lsn``, for a
    backup too far behind for the records the primary still keeps in RAM."""

    TYPE: ClassVar[str] = "snapshot"
    sender: str
    epoch: int
    lsn: int
    state: bytes
    history: list[Any]  # the terms of the log up to lsn (txlog.history wire form)

    def validate(self) -> None:
        _check_id(self.sender, "sender")
        _check_uint(self.epoch, "epoch")
        _check_uint(self.lsn, "lsn")
        _check(isinstance(self.state, bytes), "state must be a byte string")
        _check_history(self.history)


@_register
@dataclass(frozen=True, slots=True)
class CommitRequest(Message):
    """Primary -> backup (REQ): 'do you hold everything up to lsn?'."""

    TYPE: ClassVar[str] = "commit"
    sender: str
    epoch: int
    lsn: int

    def validate(self) -> None:
        _check_id(self.sender, "sender")
        _check_uint(self.epoch, "epoch")
        _check_uint(self.lsn, "lsn")


@_register
@dataclass(frozen=True, slots=True)
class CommitAck(Message):
    """Backup -> primary (REP): the highest consecutive LSN it holds.

    ``status`` is an ``AckStatus``: ok, gap (resend from ``held + 1``), fenced
    (the sender's epoch is lower than the backup's: it must step down) or wait
    (this server does not follow the sender yet: ``held`` means nothing).
    ``incarnation`` is random per process start: within one incarnation
    ``held`` never decreases, so a lower value from the same incarnation is an
    old answer arriving late on the other link, not a restart. ``last_epoch``
    is the epoch of the record at ``held``: a backup holding records of an older
    epoch beyond the point where the asker's epoch began has a history the
    asker never had, and gets a snapshot instead of records.
    """

    TYPE: ClassVar[str] = "ack"
    ENUMS: ClassVar[dict[str, type[enum.Enum]]] = {"status": AckStatus}
    sender: str
    epoch: int
    held: int
    status: AckStatus
    incarnation: int
    last_epoch: int

    def validate(self) -> None:
        _check_uint(self.incarnation, "incarnation")
        _check_uint(self.last_epoch, "last_epoch")
        _check_id(self.sender, "sender")
        _check_uint(self.epoch, "epoch")
        _check_uint(self.held, "held")
        if not isinstance(self.status, AckStatus):
            raise ProtocolError(f"unknown ack status {self.status!r:.40}")


@_register
@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Every server -> its peers (PUB/SUB, on each link)."""

    TYPE: ClassVar[str] = "hb"
    ENUMS: ClassVar[dict[str, type[enum.Enum]]] = {"role": Role, "state": State}
    name: str
    role: Role
    state: State
    epoch: int
    last_lsn: int
    committed_lsn: int
    flushed_lsn: int
    link: str
    in_sync: list[str]
    handoff_to: str
    last_epoch: int
    history: list[Any]  # the terms of the sender's log (txlog.history wire form)
    candidate: int  # the epoch the sender asks to lead at (0: it does not ask)
    grant_to: str  # whom the sender lets lead ("" for nobody) ...
    grant_epoch: int  # ... at this epoch
    # As a primary: [backup, incarnation, generation] for every backup it
    # admitted in sync or dropped since, the generation counting both. A
    # backup counts itself in sync only from a listing of its own incarnation
    # at a generation no older than any it heard: a heartbeat sent before the
    # primary dropped it, delivered late or to a restarted process, no longer
    # makes it NORMAL (docs/reliability.md, "In-sync generations").
    admitted: list[Any] = field(default_factory=list)
    # As a backup: the primary ``gen_of`` at our epoch, and the newest
    # generation of it we hold ourselves to (the one we are NORMAL under,
    # else the newest we heard). A primary that dropped us waits for it.
    gen_of: str = ""
    gen: int = 0
    # The sender's process incarnation (as its commit answers give it): a
    # primary waiting for a dropped backup's word ends the wait on another
    # one (the process it dropped is gone, or cut its log, or stood still:
    # it takes no listing of the one before).
    incarnation: int = 0

    def validate(self) -> None:
        _check_history(self.history)
        _check_admitted(self.admitted)
        _check(isinstance(self.gen_of, str) and len(self.gen_of) <= MAX_ID_LEN, "bad gen_of")
        _check_uint(self.gen, "gen")
        _check_uint(self.incarnation, "incarnation")
        _check_uint(self.last_epoch, "last_epoch")
        _check_uint(self.candidate, "candidate")
        _check_uint(self.grant_epoch, "grant_epoch")
        _check(isinstance(self.grant_to, str) and len(self.grant_to) <= MAX_ID_LEN, "bad grant_to")
        _check(
            isinstance(self.in_sync, list) and all(isinstance(n, str) for n in self.in_sync),
            "in_sync must be a list of node names",
        )
        _check(isinstance(self.handoff_to, str), "handoff_to must be a string")
        _check_id(self.name, "name")
        if not isinstance(self.role, Role):
            raise ProtocolError(f"unknown hb role {self.role!r:.40}")
        if not isinstance(self.state, State):
            raise ProtocolError(f"unknown hb state {self.state!r:.40}")
        for name in ("epoch", "last_lsn", "committed_lsn", "flushed_lsn"):
            _check_uint(getattr(self, name), name)
        _check(self.link in ("main", "failsafe"), "link must be main or failsafe")


def _check_admitted(admitted: Any) -> None:
    _check(
        isinstance(admitted, list) and len(admitted) <= MAX_ADMITTED,
        f"admitted must be a list of at most {MAX_ADMITTED} entries",
    )
    for entry in admitted:
        _check(
            isinstance(entry, list) and len(entry) == 3,
            "an admitted entry is [name, incarnation, generation]",
        )
        _check_id(entry[0], "admitted name")
        _check_uint(entry[1], "admitted incarnation")
        _check_uint(entry[2], "admitted generation")


@_register
@dataclass(frozen=True, slots=True)
class Goodbye(Message):
    """A server -> its peers, last on each heartbeat link: it is stopping
    cleanly (everything it processed is flushed and answered). Peers only note
    it (status, log wording); no failover rule reads it, so a lost one costs
    nothing but a warning in a peer's log."""

    TYPE: ClassVar[str] = "bye"
    name: str
    epoch: int

    def validate(self) -> None:
        _check_id(self.name, "name")
        _check_uint(self.epoch, "epoch")
