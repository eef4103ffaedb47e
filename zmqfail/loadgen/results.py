"""What one bench client reports, and the merge of all of them into the figures
the bench prints and writes as JSON.

Each client process counts on its own and ships one ``ClientResult`` at the
end (small: counters, a histogram, its outages), so the parent never sees
individual samples and the merge is a pure function that tests can feed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from zmqfail.loadgen.histogram import Histogram
from zmqfail.loadgen.outage import Outage, merge_outages

US_PER_MS = 1000.0
NO_REPLY = "no_reply"  # kind of error: no reply before the end of the drain


@dataclass(slots=True)
class ClientResult:
    index: int
    client_id: str
    started: float = 0.0  # monotonic: the common start of the load
    finished: float = 0.0  # monotonic: this client's last completion (or its end)
    invoked: int = 0
    ok: int = 0
    rejected_by_code: dict[str, int] = field(default_factory=dict)
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    resends: int = 0
    behind: int = 0  # open loop: sends that were due while the window was full
    new_ok: int = 0  # ok replies to new orders
    crossed: int = 0  # of those, orders that filled at least in part on arrival
    latency_us: Histogram = field(default_factory=Histogram)
    outages: list[Outage] = field(default_factory=list)
    lost: str = ""  # why this client stopped early (it lost every server), else ""

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_code.values())

    @property
    def errors(self) -> int:
        return sum(self.errors_by_kind.values())


def _ms(us: float) -> float:
    return round(us / US_PER_MS, 3)


def summarize(
    results: Sequence[ClientResult],
    *,
    window: int,
    rate: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The bench's figures. Acknowledged means ok or rejected: the cluster
    answered and committed to an answer; errors, stale and missing replies do
    not count, so a run with losses cannot look fast."""
    hist = Histogram()
    rejected: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for r in results:
        hist.merge(r.latency_us)
        rejected.update(r.rejected_by_code)
        errors.update(r.errors_by_kind)
    ok = sum(r.ok for r in results)
    acknowledged = ok + sum(rejected.values())
    started = min((r.started for r in results), default=0.0)
    finished = max((r.finished for r in results), default=0.0)
    duration = max(0.0, finished - started)
    events = merge_outages(r.outages for r in results)
    new_ok = sum(r.new_ok for r in results)
    return {
        "throughput": round(acknowledged / duration, 1) if duration > 0 else 0.0,
        "latency_ms": {
            "p50": _ms(hist.percentile(0.50)),
            "p90": _ms(hist.percentile(0.90)),
            "p99": _ms(hist.percentile(0.99)),
            "p999": _ms(hist.percentile(0.999)),
            "max": _ms(hist.max),
            "mean": _ms(hist.mean()),
        },
        "errors": sum(errors.values()),
        "errors_by_kind": dict(sorted(errors.items())),
        "resends": sum(r.resends for r in results),
        "failovers": [e.outage_ms for e in events],
        "failover_events": [{k: v for k, v in asdict(e).items() if k != "started"} for e in events],
        "requests": sum(r.invoked for r in results),
        "acknowledged": acknowledged,
        "ok": ok,
        "rejected": sum(rejected.values()),
        "rejected_by_code": dict(sorted(rejected.items())),
        "crossed_fraction": round(sum(r.crossed for r in results) / new_ok, 3) if new_ok else 0.0,
        "behind": sum(r.behind for r in results),
        "duration": round(duration, 3),
        "clients": len(results),
        "window": window,
        "rate": rate,
        "seed": seed,
        "lost_clients": [r.index for r in results if r.lost],
    }
