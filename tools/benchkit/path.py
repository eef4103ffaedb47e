"""`tools/bench path`: where one request's time goes, hop by hop, at one in flight.

At one request in flight a request's latency is a chain: the client sends,
the primary wakes and takes it (a loop turn) and sends its record and
commit request (the shell's carry), the backup wakes, holds the record and
answers, the primary wakes again, releases the reply and sends it, and the
client wakes. A pair in the normal state is started with each server's
poll wake-ups, turns and carries timed (a tracer: benchkit/traced.py; the
clocks are CLOCK_MONOTONIC, one clock for every process of the machine),
one client process keeps one request in flight and notes when it sent each
and when the reply came, and each request is matched to the events that
carried it. Reported: the median of each step over the matched requests
and of the whole; "wake" steps are the time from one process's send to the
next process's poll returning (the ZeroMQ I/O threads of both, the kernel,
the scheduler), the others are Python in the servers' loops.

Why: the per-message bare flow has the same hops and wake-ups with almost no
Python in them, so the steps name what zmqfail adds to its latency (issue
10's target for one in flight is 1.2x the bare flow's p50).
"""

from __future__ import annotations

import bisect
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from zmqfail import config
from zmqfail.cli.demo import random_order
from zmqfail.client.sync import Client

from .procs import BenchError, Reaper
from .traced import traced_pair

# Installed as sitecustomize.py for the servers of the run only.
TRACER = """
import atexit, json, os, sys, time
if "node" in sys.argv and "--name" in sys.argv:
    import zmq
    import zmqfail.node.server as _srv
    _clock = time.perf_counter
    _events = []
    _poll = zmq.Poller.poll
    def _polled(self, timeout=None):
        t = _clock()
        got = _poll(self, timeout)
        _events.append(("poll", t, _clock(), len(got)))
        return got
    zmq.Poller.poll = _polled
    for _name in ("_turn", "_carry"):
        def _timed(*args, _real=getattr(_srv.Node, _name), _what=_name[1:]):
            t = _clock()
            _real(*args)
            _events.append((_what, t, _clock(), 0))
        setattr(_srv.Node, _name, _timed)
    def _dump():
        name = sys.argv[sys.argv.index("--name") + 1]
        with open(os.path.join(os.environ["ZMQFAIL_TRACE_OUT"], name + ".json"), "w") as f:
            json.dump(_events[-400000:], f)
    atexit.register(_dump)
"""
STEPS = (
    "client send",
    "wake: client to primary",
    "primary turn (request)",
    "primary carry (record, commit)",
    "wake: primary to backup",
    "backup turn (record, commit)",
    "backup carry (answer)",
    "wake: backup to primary",
    "primary turn (answer)",
    "primary carry (reply)",
    "wake: primary to client",
)
Event = Sequence[Any]  # (kind, start, end, sockets ready)


def one_in_flight(cfg: config.ClusterConfig, seconds: float, warmup: float) -> dict[str, Any]:
    """A client process: one request at a time; (sent, submit returned, reply) each."""
    rng = random.Random(5)
    clock = time.perf_counter
    marks: list[tuple[float, float, float]] = []
    with Client(cfg, timeout=10.0, window=1) as c:
        c.connect()
        warm_end = clock() + warmup
        end = warm_end + seconds
        while clock() < end:
            t0 = clock()
            c.submit(random_order(rng, config.DEFAULT_INSTRUMENTS))
            t1 = clock()
            while not c.poll(1.0):
                pass
            if t0 >= warm_end:
                marks.append((t0, t1, clock()))
    return {"marks": marks}


class Trace:
    """One server's events, searchable by time."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = events
        self.ends = [e[2] for e in events]

    def woken_after(self, t: float) -> int | None:
        """The first poll that returned ready sockets after `t`."""
        i = bisect.bisect_right(self.ends, t)
        while i < len(self.events):
            e = self.events[i]
            if e[0] == "poll" and e[3] > 0:
                return i
            i += 1
        return None

    def next_of(self, kind: str, i: int) -> int | None:
        for j in range(i, len(self.events)):
            if self.events[j][0] == kind:
                return j
        return None

    def span(self, i: int) -> tuple[float, float]:
        return self.events[i][1], self.events[i][2]


def match(mark: Sequence[float], p: Trace, b: Trace) -> list[float] | None:
    """The steps of one request (seconds, in STEPS order), or None when its
    events cannot be told apart (the primary turned for something else in
    between, or a trace ended)."""
    t0, t1, t_reply = mark
    w1 = p.woken_after(t1)
    turn1 = p.next_of("turn", w1) if w1 is not None else None
    carry1 = p.next_of("carry", turn1) if turn1 is not None else None
    if w1 is None or turn1 is None or carry1 is None:
        return None
    wb = b.woken_after(p.span(carry1)[0])
    bturn = b.next_of("turn", wb) if wb is not None else None
    bcarry = b.next_of("carry", bturn) if bturn is not None else None
    if wb is None or bturn is None or bcarry is None:
        return None
    w2 = p.woken_after(b.span(bcarry)[1])
    turn2 = p.next_of("turn", w2) if w2 is not None else None
    carry2 = p.next_of("carry", turn2) if turn2 is not None else None
    if w2 is None or turn2 is None or carry2 is None:
        return None
    c1, c2, cb = p.span(carry1), p.span(carry2), b.span(bcarry)
    if c2[1] > t_reply:
        return None  # the reply came first: those events carried something else
    return [
        t1 - t0,
        p.span(w1)[1] - t1,
        p.span(turn1)[1] - p.span(turn1)[0],
        c1[1] - c1[0],
        b.span(wb)[1] - c1[1],
        b.span(bturn)[1] - b.span(bturn)[0],
        cb[1] - cb[0],
        p.span(w2)[1] - cb[1],
        p.span(turn2)[1] - p.span(turn2)[0],
        c2[1] - c2[0],
        t_reply - c2[1],
    ]


def summarize_path(
    marks: Sequence[Sequence[float]], primary: Sequence[Event], backup: Sequence[Event]
) -> dict[str, Any]:
    p, b = Trace(primary), Trace(backup)
    matched = [s for s in (match(m, p, b) for m in marks) if s is not None]
    if not matched:
        raise BenchError("path: no request could be matched to the servers' events")
    return {
        "requests": len(marks),
        "matched": len(matched),
        "p50_us": round(statistics.median(m[2] - m[0] for m in marks) * 1e6),
        "steps_us": {
            step: round(statistics.median(s[k] for s in matched) * 1e6, 1)
            for k, step in enumerate(STEPS)
        },
    }


def bench_path(
    reaper: Reaper, seconds: float, warmup: float, say: Callable[[str], None]
) -> dict[str, Any]:
    with traced_pair(reaper, TRACER, {}) as pair:
        cl = pair.cluster
        primary = cl.primary()
        r = reaper.call(
            one_in_flight, cl.cfg, seconds, warmup, timeout=seconds + warmup + 60, name="path"
        )
        traces = pair.stop_and_read()
    backup = "b" if primary == "a" else "a"
    row = summarize_path(r["marks"], traces[primary], traces[backup])
    say(format_path(row))
    return row


def format_path(r: dict[str, Any]) -> str:
    lines = [
        f"   path, one in flight: p50 {r['p50_us']} us over {r['requests']:,} requests; "
        f"median of each step over the {r['matched']:,} matched:"
    ]
    steps = r["steps_us"]
    for step, us in steps.items():
        lines.append(f"      {step:32s} {us:8.1f} us")
    lines.append(f"      {'sum of the medians':32s} {sum(steps.values()):8.1f} us")
    return "\n".join(lines)
