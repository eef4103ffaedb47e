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
and of the whole. "Client send" is the library's submit and flush (encoding
and handing the frame to ZeroMQ); the last step includes the client's
reading of the reply. "Wake" steps are the time from the end of one process's
carry to the next process's poll returning (the ZeroMQ I/O threads of both,
the kernel, the scheduler), the others are Python in the servers' loops. A
frame leaves during the call that sends it, so on a busy machine, where
that call can be preempted before it returns, a wake step can come out
negative.

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
if TRACING:
    import zmq
    import zmqfail.node.server as _srv
    _clock = time.perf_counter
    _events = []
    _poll = zmq.Poller.poll
    def _polled(self, timeout=None):
        t = _clock()
        got = _poll(self, timeout)
        _events.append(("poll", t, _clock(), 0))
        return got
    zmq.Poller.poll = _polled
    _real_turn = _srv.Node._turn
    def _turn(self, events, now):
        nlog = self.core.nlog
        held, committed = nlog.held, nlog.committed
        t = _clock()
        _real_turn(self, events, now)
        # What the turn did: 1 held a new record, 2 advanced the commit point.
        did = (nlog.held > held) | (nlog.committed > committed) << 1
        _events.append(("turn", t, _clock(), did))
    _srv.Node._turn = _turn
    _real_carry = _srv.Node._carry
    def _carry(self, now):
        t = _clock()
        _real_carry(self, now)
        _events.append(("carry", t, _clock(), 0))
    _srv.Node._carry = _carry
    trace_at_exit(lambda: _events[-400000:])
"""
HELD, COMMITTED = 1, 2  # what a turn did (the tracer's flags)
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
    "wake: primary to client, reply read",
)
Event = Sequence[Any]  # (kind, start, end, what a turn did: HELD | COMMITTED)


def one_in_flight(cfg: config.ClusterConfig, seconds: float, warmup: float) -> dict[str, Any]:
    """A client process: one request at a time; (submitted, sent, reply read) each."""
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
            c.flush()  # sent now, not at the poll below: the send is its own step
            t1 = clock()
            while not c.poll(1.0):
                pass
            if t0 >= warm_end:
                marks.append((t0, t1, clock()))
    return {"marks": marks}


class Trace:
    """One server's events (poll, turn, carry, in the loop's order), searchable by time."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = events
        self.starts = [e[1] for e in events]

    def turn_after(self, t: float, did: int) -> int | None:
        """The first turn begun after `t` that did `did` (HELD or COMMITTED)."""
        i = bisect.bisect_right(self.starts, t)
        for j in range(i, len(self.events)):
            e = self.events[j]
            if e[0] == "turn" and e[3] & did:
                return j
        return None

    def around(self, turn: int) -> tuple[float, tuple[float, float], tuple[float, float]] | None:
        """(when the poll before it returned, the turn, the carry after it)."""
        ev = self.events
        if turn < 1 or turn + 1 >= len(ev) or ev[turn - 1][0] != "poll":
            return None
        if ev[turn + 1][0] != "carry":
            return None
        return ev[turn - 1][2], (ev[turn][1], ev[turn][2]), (ev[turn + 1][1], ev[turn + 1][2])


def match(mark: Sequence[float], p: Trace, b: Trace) -> list[float] | None:
    """The steps of one request (seconds, in STEPS order), or None when its
    chain cannot be told apart: each server's turn is known by what it did
    (the primary's first writes the record, the backup's holds it, the
    primary's second advances the commit point), and each must have been
    woken after the step before it (not already running for something else)."""
    t0, t1, t_reply = mark
    i1 = p.turn_after(t0, HELD)
    first = p.around(i1) if i1 is not None else None
    if first is None:
        return None
    w1, turn1, c1 = first
    ib = b.turn_after(c1[0], HELD)
    mid = b.around(ib) if ib is not None else None
    if mid is None:
        return None
    wb, bturn, cb = mid
    i2 = p.turn_after(cb[0], COMMITTED)
    last = p.around(i2) if i2 is not None else None
    if last is None:
        return None
    w2, turn2, c2 = last
    # A frame leaves during the call that sends it: a process woke for it if
    # it woke after that call began (the client's submit, a carry), and a
    # reply may arrive before the carry that sent it returns.
    if w1 < t0 or wb < c1[0] or w2 < cb[0] or c2[0] > t_reply:
        return None  # woken for something else, or the reply came first
    return [
        t1 - t0,
        w1 - t1,
        turn1[1] - turn1[0],
        c1[1] - c1[0],
        wb - c1[1],
        bturn[1] - bturn[0],
        cb[1] - cb[0],
        w2 - cb[1],
        turn2[1] - turn2[0],
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
        lines.append(f"      {step:36s} {us:8.1f} us")
    lines.append(f"      {'sum of the medians':36s} {sum(steps.values()):8.1f} us")
    return "\n".join(lines)
