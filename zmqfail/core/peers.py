"""Failure detection: what we heard from each peer and when, and whether our
own loop was paused (the pause guard). Pure: the caller passes `now`.

A peer is alive while some heartbeat of it arrived within the dead time
(heartbeat interval x misses) on any link; silence on every link is what
counts, never a missing first message. A server whose own loop did not run
for more than half the dead time (SIGSTOP, a long stall) would measure every
peer as silent for the length of its own pause: it judges nobody silent until
fresh input has had a full dead time to arrive.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from zmqfail.failover.state import Role
from zmqfail.protocol import Heartbeat
from zmqfail.replication import LINKS
from zmqfail.txlog.history import EpochHistory


@dataclass(slots=True)
class PeerView:
    """The last heartbeat heard from one peer (and its history), and when, per link."""

    last: Heartbeat | None = None
    history: EpochHistory = field(default_factory=EpochHistory)
    heard_at: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LINKS, 0.0))
    # Heartbeats taken as `last` so far: what tells the failover agent a new
    # one came (an unchanged heartbeat may be the very object decoded before).
    count: int = 0

    def age(self, now: float) -> float:
        latest = max(self.heard_at.values())
        return now - latest if latest else float("inf")


def _sent_before(hb: Heartbeat, last: Heartbeat) -> bool:
    """Whether `hb` was sent before `last` in one primary's term: its in-sync
    generations only grow there, so one with an older newest generation came
    late on the other link and must not undo what `last` said. (A restarted
    process is another story: it no longer leads in that term.)"""
    return (
        hb.role is Role.PRIMARY
        and last.role is Role.PRIMARY
        and hb.epoch == last.epoch
        and hb.history[-1:] == last.history[-1:]
        and _newest_gen(hb) < _newest_gen(last)
    )


def _newest_gen(hb: Heartbeat) -> int:
    return max((entry[2] for entry in hb.admitted), default=0)


class PeerTable:
    def __init__(self, names: tuple[str, ...], dead_after: float) -> None:
        self.views: dict[str, PeerView] = {n: PeerView() for n in names}
        self.dead_after = dead_after

    def heard(self, hb: Heartbeat, history: EpochHistory, link: str, now: float) -> bool:
        """Note a heartbeat; False if it is from no peer of ours."""
        view = self.views.get(hb.name)
        if view is None:
            return False
        last = view.last
        if last is None or (hb.epoch >= last.epoch and not _sent_before(hb, last)):
            view.last = hb
            view.history = history
            view.count += 1
        view.heard_at[link] = now
        return True

    def newer_term(self, epoch: int) -> tuple[str, int, PeerView] | None:
        """The peer whose history holds the newest term, if newer than `epoch`."""
        found: tuple[str, int, PeerView] | None = None
        for name, view in self.views.items():
            term = view.history.last
            newest = found[1] if found is not None else epoch
            if view.last is not None and term is not None and term.epoch > newest:
                found = (name, term.epoch, view)
        return found

    def age(self, name: str, now: float) -> float:
        view = self.views.get(name)
        return view.age(now) if view is not None else float("inf")

    def last_heard(self, name: str) -> float:
        """When `name` was last heard on any link (0.0: never)."""
        view = self.views.get(name)
        return max(view.heard_at.values()) if view is not None else 0.0

    def alive(self, name: str, now: float) -> bool:
        return self.age(name, now) <= self.dead_after

    def last(self, name: str) -> Heartbeat | None:
        view = self.views.get(name)
        return view.last if view is not None else None


class PauseGuard:
    """Tells when our own silence measurements can be trusted."""

    def __init__(self, dead_after: float) -> None:
        self.dead_after = dead_after
        self.last_turn: float | None = None
        self.trust_after = 0.0
        self.pauses = 0

    def turn(self, now: float) -> None:
        """Called at the start of every turn of the loop."""
        if self.last_turn is not None and now - self.last_turn > self.dead_after / 2:
            # We were not running: every "silence" we would measure now is ours.
            self.trust_after = now + self.dead_after
            self.pauses += 1
        self.last_turn = now

    def trusted(self, now: float) -> bool:
        return now >= self.trust_after


class Verdict(enum.Enum):
    REACHABLE = "reachable"  # answered over the client network: a link failure
    GONE = "gone"  # no answer there either for the dead time


class Prober:
    """Step 420: a peer silent on the replication paths is asked over the
    client network whether it is alive. Probing starts once it has been quiet
    for half the dead time (so the answer is in by the time silence counts)
    and goes on every `every` seconds while it stays quiet. The verdict:
    REACHABLE if it answered since probing began, GONE if it has not for the
    dead time, none before either."""

    def __init__(self, names: tuple[str, ...], dead_after: float, every: float) -> None:
        self.dead_after = dead_after
        self.every = every
        self.since: dict[str, float | None] = dict.fromkeys(names)
        self.sent_at: dict[str, float] = dict.fromkeys(names, float("-inf"))
        self.answered_at: dict[str, float] = dict.fromkeys(names, float("-inf"))
        self.sent = 0
        self.answers = 0

    def due(self, name: str, quiet_for: float, now: float) -> bool:
        """Given how long `name` has been quiet on the replication paths: should
        a probe go out now?"""
        if quiet_for <= self.dead_after / 2:
            self.since[name] = None
            return False
        if self.since[name] is None:
            self.since[name] = now
        if now - self.sent_at[name] < self.every:
            return False
        self.sent_at[name] = now
        self.sent += 1
        return True

    def answered(self, name: str, now: float) -> None:
        if name in self.answered_at:
            self.answered_at[name] = now
            self.answers += 1

    def unanswered(self, name: str, now: float) -> bool:
        """Probed for the dead time, and no answer within the last dead time:
        gone now, whatever it answered earlier in its silence (a dropped
        backup that answered and then died is not waited for forever)."""
        since = self.since.get(name)
        return (
            since is not None
            and now - since >= self.dead_after
            and now - self.answered_at[name] >= self.dead_after
        )

    def verdict(self, name: str, now: float) -> Verdict | None:
        since = self.since.get(name)
        if since is None:
            return None
        if self.answered_at[name] >= since:
            return Verdict.REACHABLE
        if now - since >= self.dead_after:
            return Verdict.GONE
        return None
