"""A bench run over time, from its history file: acknowledged throughput and
latency per time bin, every switch of server with the outage clients saw,
and the latency distribution. What `client bench --plot` draws; pure (events
in, figures out), so the numbers are tested without matplotlib.

The history holds one `invoke` per request and one completion for it (see
`zmqfail/loadgen/history.py`), time-ordered on one monotonic clock. A
request's latency is its completion time minus its invoke time, counted in
the bin of its completion, like the bench's own figures: only `ok`
completions (ok or rejected replies) count as acknowledged. A switch is the
first reply at an epoch higher than any before; its outage runs from the
last reply at the older epoch to that first new one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zmqfail.errors import ZmqfailError
from zmqfail.loadgen.histogram import Histogram

MAX_BINS = 300  # enough to see a 150 ms outage in a minute-long run
MIN_BIN = 0.01  # seconds


@dataclass(frozen=True, slots=True)
class Bin:
    start: float  # seconds from the first invoke
    acked: int
    errors: int  # fail and info completions (no reply, error reply, stale)
    rate: float  # acknowledged per second
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass(frozen=True, slots=True)
class Switch:
    at: float  # seconds from the first invoke: the first reply from the new server
    from_server: str
    to_server: str
    epoch: int
    outage_ms: float  # last reply at an older epoch to the first at this one


@dataclass(frozen=True, slots=True)
class Timeline:
    width: float  # seconds per bin
    bins: list[Bin]
    switches: list[Switch]
    latency_us: Histogram  # every acknowledged request

    @property
    def duration(self) -> float:
        return len(self.bins) * self.width


def bin_width(duration: float, max_bins: int = MAX_BINS) -> float:
    """A round width (1, 2 or 5 x a power of ten) giving at most `max_bins`."""
    want = max(duration / max_bins, MIN_BIN)
    step = MIN_BIN
    while True:
        for m in (1, 2, 5):
            if step * m >= want - 1e-12:
                return round(step * m, 6)
        step *= 10


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    raise ZmqfailError(f"{path}:{n}: not a history line") from None
                if not isinstance(event, dict) or not isinstance(event.get("time"), int | float):
                    raise ZmqfailError(f"{path}:{n}: not a history event")
                yield event
    except OSError as exc:
        raise ZmqfailError(f"cannot read history {path}: {exc.strerror}") from None


def timeline(
    events: Iterable[Mapping[str, Any]], span: tuple[float, float] | None = None
) -> Timeline:
    """Bins over `span` (first, last event time; found from the events when
    not given, which needs a list rather than a one-pass iterator)."""
    if span is None:
        events = list(events)
        times = [float(e["time"]) for e in events]
        span = (min(times), max(times)) if times else (0.0, 0.0)
    t0, t1 = span
    width = bin_width(t1 - t0)
    n = max(1, int((t1 - t0) / width) + 1)
    acked, errors = [0] * n, [0] * n
    hists = [Histogram() for _ in range(n)]
    total = Histogram()
    sent: dict[tuple[str, int], float] = {}
    switches: list[Switch] = []
    top_epoch: int | None = None
    last_at: tuple[str, float] | None = None  # (server, time) of the latest reply at top_epoch
    for e in events:
        t, kind = float(e["time"]), e.get("type")
        key = (str(e.get("client_id")), int(e.get("msg_id", 0)))
        if kind == "invoke":
            sent[key] = t
            continue
        i = min(n - 1, max(0, int((t - t0) / width)))
        began = sent.pop(key, None)
        if kind != "ok":
            errors[i] += 1
            continue
        acked[i] += 1
        if began is not None:
            us = max(0, round((t - began) * 1e6))
            hists[i].record(us)
            total.record(us)
        server, epoch = e.get("server"), e.get("epoch")
        if not isinstance(server, str) or not isinstance(epoch, int):
            continue
        if top_epoch is not None and epoch > top_epoch and last_at is not None:
            outage = round((t - last_at[1]) * 1000.0, 3)
            switches.append(Switch(t - t0, last_at[0], server, epoch, outage))
        if top_epoch is None or epoch >= top_epoch:
            top_epoch, last_at = epoch, (server, t)
    bins = [
        Bin(
            round(i * width, 6),
            acked[i],
            errors[i],
            acked[i] / width,
            _ms(h, 0.5),
            _ms(h, 0.99),
            h.max / 1000.0 if h.total else None,
        )
        for i, h in enumerate(hists)
    ]
    return Timeline(width, bins, switches, total)


def _ms(h: Histogram, q: float) -> float | None:
    return h.percentile(q) / 1000.0 if h.total else None


def load(path: Path) -> Timeline:
    """The timeline of a history file, read twice (span, then bins) so a long
    run never sits in memory whole."""
    first = last = None
    for e in read_events(path):
        t = float(e["time"])
        first = t if first is None else min(first, t)
        last = t if last is None else max(last, t)
    if first is None or last is None:
        raise ZmqfailError(f"history {path} holds no events")
    return timeline(read_events(path), (first, last))


def distribution(h: Histogram, points: int = 60) -> list[tuple[float, float]]:
    """(percentile, latency ms) from p0 up to the last sample's nines, spaced
    evenly in "nines" (1 / (1 - q)) so the tail gets as many points as the
    body; the maximum is `h.max`."""
    if h.total == 0:
        return []
    top = 1.0 - 1.0 / h.total  # beyond this there is no sample left to show
    out: list[tuple[float, float]] = []
    for i in range(points + 1):
        nines = (1.0 / (1.0 - top)) ** (i / points)  # 1 .. 1/(1-top)
        q = min(top, 1.0 - 1.0 / nines)
        out.append((q * 100.0, h.percentile(q) / 1000.0))
    return out
