"""What an operator asks of a cluster, answered from the nodes' status rows:
who is primary, is the pair protected, and when was the last failover.

Pure (rows and transitions in, words and a verdict out), shared by `zmqfail
status`, `zmqfail health` and `zmqfail watch`. The verdict is the exit code
of `status` and `health`, so monitors and scripts branch on it:

    0  ok        a primary serves in the normal state and every node is an
                 in-sync backup of it: every acknowledgement is on two servers
    3  degraded  a primary serves, but not protected: it runs alone, a node
                 is syncing, unreachable or stepping down, a switchover
                 is under way, or automatic failover is paused
    4  down      no node serves clients
(1 is any error of the command itself, 2 a usage error.)
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from zmqfail.core.status import UNREACHABLE, NodeStatus
from zmqfail.failover.state import Role, State

__all__ = ["UNREACHABLE", "Health", "Transition", "Verdict", "classify", "role_words", "serves"]


class Verdict(enum.IntEnum):
    """The cluster's health; the value is the exit status of `status` and `health`."""

    OK = 0
    DEGRADED = 3
    DOWN = 4

    @property
    def word(self) -> str:
        return self.name.lower()


def serves(row: NodeStatus) -> bool:
    """Takes client requests now (the role and states a client accepts)."""
    return row.serving


PRIMARY_WORDS = {
    State.NORMAL: "primary",
    State.PRIMARY_ONLY: "primary (alone)",
    State.BACKUP_ONLY: "primary (alone, took over)",
    State.HANDOFF: "primary (handing over)",
}
BACKUP_WORDS = {
    State.NORMAL: "backup (in sync)",
    State.SYNCING: "backup (syncing)",
    State.STANDBY: "standby (waiting)",
    State.STARTING: "starting",
    State.FENCED: "stepping down",
    State.STOPPED: "stopping",
}


def role_words(row: NodeStatus) -> str:
    """The role and state as an operator says them: a node that took over is
    "primary (alone, took over)", never "primary backup_only"; a node whose
    automatic failover is paused says so."""
    words = _role_words(row)
    return f"{words}, failover paused" if row.failover_paused else words


def _role_words(row: NodeStatus) -> str:
    state, role = row.state, row.role
    if state is None:
        return UNREACHABLE
    if role is Role.PRIMARY:
        return PRIMARY_WORDS.get(state, f"primary ({state.value})")
    if role is Role.BACKUP:
        return BACKUP_WORDS.get(state, f"backup ({state.value})")
    return state.value


def said_stopped(rows: Iterable[NodeStatus]) -> set[str]:
    """Nodes a live peer heard say goodbye (a clean stop) and not since: an
    operator's stop, not a failure, though the node is as gone."""
    out: set[str] = set()
    for r in rows:
        if r.reachable:
            out.update(n for n, p in r.peers.items() if p.stopped)
    return out


def node_words(row: NodeStatus, stopped: Iterable[str] = ()) -> str:
    """`role_words`, except that an unreachable node its peers heard stop cleanly
    is "stopped (clean)"."""
    if not row.reachable and row.name in set(stopped):
        return "stopped (clean)"
    return role_words(row)


@dataclass(frozen=True, slots=True)
class Health:
    verdict: Verdict
    primary: str | None
    summary: str  # one line: the verdict's reasons

    def line(self) -> str:
        return f"{self.verdict.word}: {self.summary}"


def _lag_text(row: NodeStatus) -> str:
    return f"lag {row.lag}" if row.lag is not None else "lag unknown"


OWN_WORDS = {
    State.PRIMARY_ONLY: " runs alone",
    State.BACKUP_ONLY: " took over and runs alone",
    State.HANDOFF: " is handing over",
}


def classify(rows: Sequence[NodeStatus]) -> Health:
    """The verdict for the whole cluster from one status per configured node."""
    serving = sorted((r for r in rows if r.serving), key=lambda r: -(r.epoch or 0))
    handing = [r for r in rows if r.is_(Role.PRIMARY, State.HANDOFF)]
    stopped = said_stopped(rows)
    if not serving and not handing:
        states = ", ".join(f"{r.name} {node_words(r, stopped)}" for r in rows)
        return Health(Verdict.DOWN, None, f"no node serves ({states})")
    p = serving[0] if serving else handing[0]
    name = p.name
    head = f"primary {name} (epoch {p.epoch})"
    own = OWN_WORDS.get(p.state, "") if p.state is not None else ""
    problems: list[str] = []
    synced: list[str] = []
    for r in rows:
        if r is p:
            continue
        n = r.name
        if r.is_(Role.BACKUP, State.NORMAL):
            synced.append(n)
        elif r.serving or r.state is State.HANDOFF:
            problems.append(f"{n} also claims primary (epoch {r.epoch})")
        else:
            problems.append(f"{n} {node_words(r, stopped)}")
    if synced:
        problems.append(f"backup {', '.join(synced)} in sync")
    leaving = sorted(n for n, b in (p.backups or {}).items() if b.leaving)
    if leaving:
        # The primary acknowledges nothing new until they say they know.
        problems.append(
            f"waiting for {', '.join(leaving)} to confirm it was dropped "
            "(acknowledging nothing beyond what it holds)"
        )
    held = [r.name for r in rows if r.failover_paused]
    if held:
        # Not protected: a failure of the primary would not be taken over.
        problems.append(f"automatic failover paused on {', '.join(held)} (zmqfail resume)")
    if not own and len(problems) == 1 and synced:
        return Health(Verdict.OK, name, f"protected: {head}, {problems[0]}, {_lag_text(p)}")
    return Health(Verdict.DEGRADED, name, f"{head}{own}; {'; '.join(problems)}".rstrip("; "))


# ---------------------------------------------------------------- failovers


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change of one node; `time` is wall-clock seconds, so changes
    merge across nodes."""

    time: float
    node: str
    src: str
    dst: str
    why: str
    epoch: int | None


@dataclass(frozen=True, slots=True)
class Failover:
    time: float  # wall clock of the takeover
    node: str  # who took over
    epoch: int
    switchover: bool  # a planned handover, not a failure
    outage_ms: float | None  # no primary from the old one's last sign of life to the takeover


def takeovers(changes: Iterable[Transition]) -> list[tuple[Transition, bool]]:
    """Changes that made a node primary at a new epoch, oldest first, each with
    whether it was a switchover (the backup follows a handover offer)."""
    out: list[tuple[Transition, bool]] = []
    top: int | None = None
    for c in sorted(changes, key=lambda c: (c.time, c.node)):
        if c.epoch is None or c.src == c.dst:
            continue  # a note (a start, a pause, ...), no change of state
        if top is not None and c.epoch > top and c.dst in ("backup_only", "primary_only"):
            out.append((c, c.why == "PeerActive"))
        top = c.epoch if top is None else max(top, c.epoch)
    return out


def primary_last_heard(rows: Iterable[NodeStatus], wall: float) -> dict[tuple[str, int], float]:
    """For each (node, epoch) some node last heard as primary: when (wall clock).

    A node keeps the last heartbeat of each peer and its age, so after a
    primary dies its former backup still says how long ago it last heard it;
    the watcher keeps these readings per (node, epoch) across polls."""
    out: dict[tuple[str, int], float] = {}
    for r in rows:
        for name, p in r.peers.items():
            age, epoch = p.heartbeat_age_ms, p.epoch
            if p.role is Role.PRIMARY and age is not None and epoch is not None:
                at = wall - age / 1000.0
                key = (str(name), epoch)
                out[key] = max(out.get(key, at), at)
    return out


def last_failover(
    changes: Sequence[Transition], heard: Mapping[tuple[str, int], Iterable[float]]
) -> Failover | None:
    """The newest takeover, with its outage: for a switchover from the old
    primary's handover to the takeover, for a failure from the old primary's
    last heartbeat before the takeover (as its backup heard it; `heard` holds
    the readings of one or more polls) to the takeover. A primary that only
    stalled goes on sending heartbeats after it was taken over from, hence
    "before"; without a reading from before, no figure."""
    found = takeovers(changes)
    if not found:
        return None
    c, switch = found[-1]
    assert c.epoch is not None
    start: float | None = None
    if switch:
        offers = [h.time for h in changes if h.dst == "handoff" and h.time <= c.time]
        start = max(offers) if offers else None
    else:
        lasts = [
            t
            for (n, e), ts in heard.items()
            if e == c.epoch - 1 and n != c.node
            for t in ts
            if t <= c.time
        ]
        start = max(lasts) if lasts else None
    outage = round((c.time - start) * 1000.0) if start is not None and start <= c.time else None
    return Failover(c.time, c.node, c.epoch, switch, outage)


def failover_words(f: Failover | None, clock: str) -> str:
    if f is None:
        return "no failover seen"
    kind = "switchover" if f.switchover else "failover"
    lasted = ""
    if f.outage_ms is not None:
        lasted = f", {f.outage_ms:.0f} ms without a primary"
    return f"last {kind} {clock}: {f.node} took over at epoch {f.epoch}{lasted}"
