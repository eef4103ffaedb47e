"""Closed-loop accounting shared by every client driver of the bench.

All flows are measured the same way, so that their rows compare: a warm-up
whose replies are not counted, then a measured span; throughput is the
replies received inside that span divided by its length, latency is
submit-to-reply of those same replies. After the span a driver keeps
collecting until every request it sent is answered (or a deadline passes), so
a row can say that nothing went unanswered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from zmqfail.loadgen.histogram import Histogram


@dataclass(frozen=True, slots=True)
class Timing:
    """How long a driver warms up and then measures, and how long it may take
    to collect the replies still outstanding at the end."""

    seconds: float
    warmup: float = 1.0
    drain: float = 10.0


class Meter:
    """Send times by request key, replies counted inside the measured span.

    ``now`` is always passed in (time.perf_counter() in the drivers), so the
    accounting is plain arithmetic and testable without a clock."""

    __slots__ = ("answered", "end", "errors", "hist", "in_span", "sent", "sent_at", "warm_end")

    def __init__(self, timing: Timing, start: float) -> None:
        self.warm_end = start + timing.warmup
        self.end = self.warm_end + timing.seconds
        self.sent_at: dict[Any, float] = {}
        self.hist = Histogram()
        self.sent = 0
        self.answered = 0
        self.in_span = 0
        self.errors = 0

    def running(self, now: float) -> bool:
        return now < self.end

    def on_sent(self, key: Any, now: float) -> None:
        if key in self.sent_at:
            raise ValueError(f"request {key!r} is already in flight")
        self.sent_at[key] = now
        self.sent += 1

    def on_reply(self, key: Any, now: float, ok: bool) -> None:
        """One reply; a key not in flight (a duplicate reply) is an error."""
        t0 = self.sent_at.pop(key, None)
        if t0 is None:
            self.errors += 1
            return
        self.answered += 1
        if not ok:
            self.errors += 1
        if self.warm_end <= now < self.end:
            self.in_span += 1
            self.hist.record(max(0, round((now - t0) * 1e6)))

    @property
    def in_flight(self) -> int:
        return len(self.sent_at)

    def result(self) -> dict[str, Any]:
        """What a client process sends back: counts and the latency histogram."""
        return {
            "seconds": self.end - self.warm_end,
            "sent": self.sent,
            "answered": self.answered,
            "in_span": self.in_span,
            "errors": self.errors,
            "hist": self.hist.to_dict(),
        }


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """A row from a client's result: acknowledged req/s, p50, p99 (microseconds)."""
    hist = Histogram.from_dict(res["hist"])
    return {
        "throughput": round(res["in_span"] / res["seconds"]) if res["seconds"] > 0 else 0,
        "p50_us": round(hist.percentile(0.50)) if hist.total else None,
        "p99_us": round(hist.percentile(0.99)) if hist.total else None,
        "sent": res["sent"],
        "answered": res["answered"],
        "unanswered": res["sent"] - res["answered"],
        "errors": res["errors"],
        "failovers": res.get("failovers"),  # None: the driver cannot tell
    }


def ratio(value: float | None, base: float | None) -> float | None:
    """value / base, or None when either is missing or the base is zero."""
    if value is None or base is None or base == 0 or math.isnan(base):
        return None
    return value / base
