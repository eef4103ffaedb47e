"""Failover outages as a client sees them, from its reply stream.

``Client.failovers`` says when the client noticed the loss of its server and
when it adopted the next one, but neither instant is what a user waits
through: the outage a client lives is the time from the last reply of the old
server to the first reply of the new one, detection, vote, takeover and
resends included. The client's reply stream supplies both ends; the failover
record says which servers and which switch they belong to.

Replies come in batches (one ``poll``), all stamped with the time the batch
was returned, and the order inside a batch is lost. So within the batch in
which a failover is recorded, replies from the old server count as before the
switch and replies from the new one as after it; when old and new server are
the same (a client that left a server which then answered again), they count
as after, which errs towards a longer outage rather than a negative one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


class FailoverLike(Protocol):
    @property
    def started(self) -> float: ...
    @property
    def ended(self) -> float: ...
    @property
    def from_server(self) -> str: ...
    @property
    def to_server(self) -> str: ...
    @property
    def epoch(self) -> int: ...
    @property
    def resent(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Outage:
    """One failover lived through by one client."""

    from_server: str
    to_server: str
    epoch: int
    outage_ms: float
    resent: int
    started: float  # monotonic: the client noticed the loss
    ended: float  # monotonic: the client adopted the new server
    answered: bool = True  # False: no reply from the new server before the run ended

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.from_server, self.to_server, self.epoch)


@dataclass(frozen=True, slots=True)
class SwitchEvent:
    """One failover of the cluster, merged over every client that lived through it."""

    from_server: str
    to_server: str
    epoch: int
    outage_ms: float  # the worst any client saw
    clients: int
    resent: int  # requests resent, summed over clients
    started: float


class OutageTracker:
    """Fed each poll's replies and new failover records, in the order they happen."""

    def __init__(self) -> None:
        self.last_reply: dict[str, float] = {}  # server -> time of its latest reply batch
        self.pending: list[tuple[FailoverLike, float]] = []  # (failover, last old reply)
        self.outages: list[Outage] = []

    def batch(
        self, now: float, servers: Sequence[tuple[str, int]], failovers: Sequence[FailoverLike]
    ) -> None:
        """One poll's worth: `servers` holds (server, epoch) of each reply returned."""
        in_batch = {s for s, _ in servers}
        for f in failovers:
            if f.from_server != f.to_server and f.from_server in in_batch:
                last = now
            else:
                last = self.last_reply.get(f.from_server, f.started)
            self.pending.append((f, last))
        still: list[tuple[FailoverLike, float]] = []
        for f, last in self.pending:
            if any(s == f.to_server and e >= f.epoch for s, e in servers):
                self.outages.append(_outage(f, last, now, True))
            else:
                still.append((f, last))
        self.pending = still
        for s in in_batch:
            self.last_reply[s] = now

    def finish(self) -> list[Outage]:
        """All outages; one the run ended in counts up to the adoption of the new server."""
        for f, last in self.pending:
            self.outages.append(_outage(f, last, max(f.ended, last), False))
        self.pending = []
        return list(self.outages)


def _outage(f: FailoverLike, last: float, first: float, answered: bool) -> Outage:
    return Outage(
        f.from_server,
        f.to_server,
        f.epoch,
        round((first - last) * 1000.0, 3),
        f.resent,
        f.started,
        f.ended,
        answered,
    )


def merge_outages(per_client: Iterable[Iterable[Outage]]) -> list[SwitchEvent]:
    """One event per switch (same from -> to at the same epoch), in time order,
    with the longest outage any client saw: the figure that bounds what every
    client lived through."""
    groups: dict[tuple[str, str, int], list[Outage]] = {}
    for outages in per_client:
        for o in outages:
            groups.setdefault(o.key, []).append(o)
    events = [
        SwitchEvent(
            key[0],
            key[1],
            key[2],
            max(o.outage_ms for o in group),
            len(group),
            sum(o.resent for o in group),
            min(o.started for o in group),
        )
        for key, group in groups.items()
    ]
    events.sort(key=lambda e: (e.started, e.epoch))
    return events
