"""The campaign's table, from what happened (the faults, when each was
injected and when the pair was whole again), the client history and the
checker's verdict. Pure: it reads no files and asks no node.

Each fault owns the window from its injection to the pair being whole again.
A row per kind counts, over its faults' windows:

- acked: acknowledgements the clients received in those windows;
- lost: acknowledged writes missing from the final log (a violation),
  charged to the first fault that ends after the acknowledgement (nothing
  earlier can have lost it);
- power-lost: those lost to a power loss of every server, acknowledged
  within the periodic flush window before it (allowed by design: counted,
  not a violation; see `power_window`);
- twice: requests applied twice whose acknowledgement fell in the window;
- split: windows in which two servers served at once, as seen by polling
  their status, and as seen in the history (two servers' acknowledgements
  interleaved in time);
- outage p50/p99: per fault, the longest stretch in its window with no
  acknowledgement to any client.

Acknowledgements outside every window go to the `(calm)` row, and the
`total` row sums them all (its outages are every fault's).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from zmqfail.runcheck import History, RunCheck

from .schedule import Kind

CALM = "(calm)"
TOTAL = "total"
# Seconds a loaded disk's fsync may hold the next batch back, beyond the
# flush interval: the flusher writes one batch at a time, so records are
# unflushed for up to the interval plus one fsync.
FLUSH_SLACK = 0.5


@dataclass(frozen=True, slots=True)
class Done:
    """One fault as it happened (monotonic seconds, the history's clock)."""

    index: int
    kind: Kind
    node: str  # whom it hit ("" for power and the witness)
    started: float  # injected
    healed: float  # the heal was sent (or the process restarted)
    whole: float | None  # the pair whole again; None: it never was (stuck)
    real: bool = False  # done on a cable of a network namespace (--netns), not a socket

    @property
    def end(self) -> float:
        return self.whole if self.whole is not None else self.healed


def power_window(faults: Iterable[Done], flush_interval_s: float) -> list[tuple[float, float]]:
    """Where an acknowledgement may be lost by design: from the flush window
    before each power loss (interval plus FLUSH_SLACK) to the restart (a reply
    received while every server was down was sent before the cut)."""
    return [
        (f.started - flush_interval_s - FLUSH_SLACK, f.healed)
        for f in faults
        if f.kind is Kind.POWER
    ]


def power_ages(
    lost: Iterable[float], faults: Sequence[Done], flush_interval_s: float
) -> list[float]:
    """How long before the power loss whose allowance holds it each lost
    acknowledgement was received (seconds; 0 for one received after the cut
    began: sent before it). A time in no allowance is left out."""
    cuts = [
        (f.started, *power_window([f], flush_interval_s)[0]) for f in faults if f.kind is Kind.POWER
    ]
    ages = []
    for t in lost:
        for started, lo, hi in cuts:
            if lo <= t <= hi:
                ages.append(max(started - t, 0.0))
                break
    return ages


def in_any(t: float, windows: Sequence[tuple[float, float]]) -> bool:
    return any(a <= t <= b for a, b in windows)


def gaps(times: Sequence[float]) -> list[tuple[float, float]]:
    """Stretches between consecutive acknowledgements (sorted times)."""
    return list(itertools.pairwise(times))


def outage(times: Sequence[float], start: float, end: float) -> float:
    """The longest stretch overlapping [start, end] with no acknowledgement
    (seconds); a window with none at all after `start` counts to `end`."""
    i = bisect.bisect_left(times, start)
    j = bisect.bisect_right(times, end)
    worst = 0.0
    lo = max(i - 1, 0)
    for a, b in gaps(times[lo : j + 1]):
        worst = max(worst, b - a)
    if j >= len(times):  # nothing acknowledged after the window began to close
        last = times[-1] if times else start
        worst = max(worst, end - max(last, start))
    return worst


def split_from_history(oks: Sequence[tuple[float, str, int]]) -> list[tuple[float, float]]:
    """Stretches in which two servers' acknowledgements interleave: each
    (server, epoch) spans its first to its last acknowledgement, and two
    spans of different servers that overlap are one window."""
    span: dict[tuple[str, int], list[float]] = {}
    for t, server, epoch in oks:
        s = span.setdefault((server, epoch), [t, t])
        s[1] = t
    items = sorted(span.items(), key=lambda kv: kv[1][0])
    out = []
    for i, ((sa, _), (_, a1)) in enumerate(items):
        for (sb, _), (b0, b1) in items[i + 1 :]:
            if sb != sa and b0 < a1:
                out.append((b0, min(a1, b1)))
    return out


def split_from_status(samples: Sequence[tuple[float, int]]) -> list[tuple[float, float]]:
    """Runs of status readings (time, how many nodes said they serve) with
    two or more serving."""
    out: list[tuple[float, float]] = []
    begin: float | None = None
    last = 0.0
    for t, serving in samples:
        if serving >= 2 and begin is None:
            begin = t
        elif serving < 2 and begin is not None:
            out.append((begin, last))
            begin = None
        last = t
    if begin is not None:
        out.append((begin, last))
    return out


@dataclass(slots=True)
class Row:
    kind: str
    faults: int = 0
    acked: int = 0
    lost: int = 0
    power_lost: int = 0
    twice: int = 0
    split_status: int = 0
    split_acks: int = 0
    outages: list[float] = field(default_factory=list)  # seconds, one per fault

    def percentile(self, q: float) -> float | None:
        if not self.outages:
            return None
        xs = sorted(self.outages)  # nearest rank: the p50 of two is the smaller
        return xs[max(0, math.ceil(q * len(xs)) - 1)]

    def as_dict(self) -> dict[str, object]:
        p50, p99 = self.percentile(0.5), self.percentile(0.99)
        return {
            "kind": self.kind,
            "faults": self.faults,
            "acked": self.acked,
            "lost": self.lost,
            "power_lost": self.power_lost,
            "twice": self.twice,
            "split_status": self.split_status,
            "split_acks": self.split_acks,
            "outage_p50_ms": None if p50 is None else round(p50 * 1000, 1),
            "outage_p99_ms": None if p99 is None else round(p99 * 1000, 1),
        }


def tally(
    faults: Sequence[Done],
    history: History,
    check: RunCheck,
    status_samples: Sequence[tuple[float, int]],
    kinds: Sequence[Kind],
) -> list[Row]:
    """One row per kind given (in that order), then (calm) and total."""
    rows = {k.value: Row(k.value) for k in kinds}
    calm, total = Row(CALM), Row(TOTAL)
    windows = sorted(((f.started, f.end), rows[f.kind.value]) for f in faults)

    def row_at(t: float) -> Row:
        for (a, b), row in windows:
            if a <= t <= b:
                return row
        return calm

    def cause_of(t: float) -> Row:
        """An acknowledged request can only be lost by a fault at or after its
        acknowledgement: the first fault whose window ends after it."""
        for (_, b), row in windows:
            if t <= b:
                return row
        return calm

    times = [t for t, _, _ in history.oks]
    for f in faults:
        row = rows[f.kind.value]
        row.faults += 1
        row.outages.append(outage(times, f.started, f.end))
    for t in history.acked.values():
        row_at(t).acked += 1
    for t in check.lost.values():
        cause_of(t).lost += 1
    for t in check.allowed_lost.values():
        cause_of(t).power_lost += 1
    for key in check.twice:
        t_ack = history.acked.get(key)
        row_at(t_ack if t_ack is not None else float("nan")).twice += 1
    for a, _ in split_from_status(status_samples):
        row_at(a).split_status += 1
    for a, _ in split_from_history(history.oks):
        row_at(a).split_acks += 1
    out = [*rows.values(), calm]
    for r in out:
        total.faults += r.faults
        total.acked += r.acked
        total.lost += r.lost
        total.power_lost += r.power_lost
        total.twice += r.twice
        total.split_status += r.split_status
        total.split_acks += r.split_acks
        total.outages += r.outages
    return [*out, total]


def format_table(rows: Sequence[Row]) -> str:
    head = (
        "kind",
        "faults",
        "acked",
        "lost",
        "power-lost",
        "twice",
        "split(status)",
        "split(acks)",
        "outage p50 ms",
        "outage p99 ms",
    )
    body = []
    for r in rows:
        d = r.as_dict()
        body.append(
            tuple(
                "-" if v is None else (f"{v:,}" if isinstance(v, int) else str(v))
                for v in (
                    d["kind"],
                    d["faults"],
                    d["acked"],
                    d["lost"],
                    d["power_lost"],
                    d["twice"],
                    d["split_status"],
                    d["split_acks"],
                    d["outage_p50_ms"],
                    d["outage_p99_ms"],
                )
            )
        )
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join((first, *rest))

    return "\n".join([line(head), *(line(b) for b in body)])
