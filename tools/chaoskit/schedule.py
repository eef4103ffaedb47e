"""The seeded schedule of a chaos campaign: which fault comes next, at whom,
for how long, and the pause before it. Pure: the same seed draws the same
faults, so a failing campaign is re-run by its seed.

Faults come one at a time: each is injected, held, healed, and the pair must
be whole again (a primary and an in-sync backup) before the next is drawn.
Two overlapping server faults are a double failure, which without a witness
the design does not survive (docs/architecture.md, partition table); a
campaign of one fault at a time holds the design to what it promises, and
attributes every loss and outage to the fault that caused it.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


class Kind(enum.Enum):
    KILL = "kill"  # kill -9 of one node, restarted after the hold
    PAUSE = "pause"  # SIGSTOP of one node, SIGCONT after the hold
    CUT_MAIN = "cut-main"  # the main replication link cut at one node (both ways)
    CUT_FAILSAFE = "cut-failsafe"
    CUT_BOTH = "cut-both"  # both replication links: the peer is reached over the clients' net
    CUT_CLIENTS = "cut-clients"  # the node's client network
    ONE_WAY = "one-way-loss"  # both replication links at one node, one way (in or out)
    SLOW_LINKS = "slow-links"  # one way: the node's outgoing records held back on both links
    POWER = "power"  # every server at once: frozen, killed, restarted after the hold
    WITNESS = "witness"  # kill -9 of the witness, restarted after the hold

    @property
    def targets_node(self) -> bool:
        return self not in (Kind.POWER, Kind.WITNESS)


# Seconds each kind is held, drawn uniformly: long enough to cross the
# detection time (300 ms of silence), short enough for many per minute.
HOLD: dict[Kind, tuple[float, float]] = {
    Kind.KILL: (0.2, 1.5),
    Kind.PAUSE: (0.2, 1.5),
    Kind.CUT_MAIN: (0.5, 2.0),
    Kind.CUT_FAILSAFE: (0.5, 2.0),
    Kind.CUT_BOTH: (0.5, 2.0),
    Kind.CUT_CLIENTS: (0.5, 2.0),
    Kind.ONE_WAY: (0.5, 2.0),
    Kind.SLOW_LINKS: (1.0, 3.0),
    Kind.POWER: (0.5, 2.0),
    Kind.WITNESS: (1.0, 3.0),
}
DELAY_MS = (50, 500)  # how long SLOW_LINKS holds each outgoing record
GAP = (1.0, 3.0)  # calm seconds between the pair being whole and the next fault
ROLES = ("primary", "backup")
# ONE_WAY: what the node loses. "in": it hears nothing from its peer (a
# primary then runs alone while its backup still hears it); "out": nothing it
# sends arrives (a primary's records and heartbeats stop while it still hears
# its backup's heartbeats).
DIRECTIONS = ("in", "out")


def kinds_for(witness: bool) -> tuple[Kind, ...]:
    """Every kind a cluster can suffer: the witness's loss only when it has one."""
    return tuple(k for k in Kind if witness or k is not Kind.WITNESS)


def parse_kinds(text: str, witness: bool) -> tuple[Kind, ...]:
    """A comma-separated list of kind names (the CLI's --kinds)."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    known = {k.value: k for k in kinds_for(witness)}
    bad = [n for n in names if n not in known]
    if bad or not names:
        extra = "" if witness else " (witness needs --witness)"
        raise ValueError(
            f"unknown fault kind(s) {', '.join(bad) or '(none)'}; "
            f"choose from {', '.join(known)}{extra}"
        )
    return tuple(dict.fromkeys(known[n] for n in names))


@dataclass(frozen=True, slots=True)
class Fault:
    index: int  # 1, 2, ... in campaign order
    kind: Kind
    target: str  # "primary" or "backup" (resolved when injected), or "" for power/witness
    hold: float  # seconds before the heal
    gap: float  # calm seconds before it
    delay_ms: int = 0  # SLOW_LINKS only
    direction: str = ""  # ONE_WAY only: "in" or "out"

    def describe(self) -> str:
        at = f" at the {self.target}" if self.target else ""
        slow = f" ({self.delay_ms} ms per record)" if self.delay_ms else ""
        way = f" ({self.direction})" if self.direction else ""
        return f"#{self.index} {self.kind.value}{way}{at}{slow} for {self.hold:.2f}s"


def draw(seed: int, kinds: Iterable[Kind]) -> Iterator[Fault]:
    """Faults for ever, each kind as likely as the others, in turn when the
    seed is the same. Kinds are cycled in a shuffled order per round, so a
    short campaign still meets every kind it was given."""
    rng = random.Random(seed)
    pool = list(kinds)
    index = 0
    while True:
        order = pool[:]
        rng.shuffle(order)
        for kind in order:
            index += 1
            lo, hi = HOLD[kind]
            yield Fault(
                index=index,
                kind=kind,
                target=rng.choice(ROLES) if kind.targets_node else "",
                hold=round(rng.uniform(lo, hi), 3),
                gap=round(rng.uniform(*GAP), 3),
                delay_ms=rng.randint(*DELAY_MS) if kind is Kind.SLOW_LINKS else 0,
                direction=rng.choice(DIRECTIONS) if kind is Kind.ONE_WAY else "",
            )
