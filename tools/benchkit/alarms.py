"""False alarms against detection time (the `alarms` scenario of tools/bench).

A server declares its peer gone after `heartbeat_interval_ms x heartbeat_misses`
of silence on every link. Shorter means a dead primary is replaced sooner, but
a live one whose loop stalls (a busy machine, a fork, a GC pause) for longer
than that is taken for dead: the pair runs alone for nothing (a primary flips
to fsync-per-ack) or, worse, the backup takes over a live primary. The only
honest way to choose the default is to measure both sides on a busy machine,
with the same hogs, in one run: that is what this does, per setting:

  idle    the pair with no clients, N busy-loop hogs, for --seconds
  loaded  the same with one closed-loop client (16 in flight)
  kills   kill -9 of the primary --kills times, hogs still running: the time
          from the kill to the backup's own transition to serving

A false alarm is read from the nodes themselves: takeovers (their counter and
the epoch), running-alone episodes (a transition to primary-only or
backup-only), and the loop stalls the pause guard noticed.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from zmqfail.core.status import NodeStatus
from zmqfail.failover.state import Role, State

from .cluster import Cluster, drive_client
from .meter import Timing
from .procs import BenchError, Reaper, wait_interruptibly

ALONE = frozenset({State.PRIMARY_ONLY, State.BACKUP_ONLY})
DEFAULT_SETTINGS = [(30, 5), (30, 10), (30, 20)]  # (heartbeat_interval_ms, heartbeat_misses)


@dataclass(frozen=True)
class AlarmRow:
    interval_ms: int
    misses: int
    phase: str  # idle | loaded | kills
    seconds: float
    hogs: int
    takeovers: int = 0  # epochs begun: each one a takeover of a live primary here
    alone: int = 0  # running-alone episodes with both servers alive
    stalls: int = 0  # loop stalls the pause guard noticed
    replies: int = 0
    client_failovers: int = 0  # the client moved to the other server
    detect_ms: tuple[float, ...] = ()  # kills: kill -9 to the backup serving

    @property
    def dead_ms(self) -> int:
        return self.interval_ms * self.misses

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dead_ms": self.dead_ms}


def tuned(interval_ms: int, misses: int) -> Callable[[str], str]:
    """The rewrite of a generated config that sets the detection timing."""

    def tune(text: str) -> str:
        for key, value in (("heartbeat_interval_ms", interval_ms), ("heartbeat_misses", misses)):
            text, n = re.subn(rf"(?m)^{key} = \d+", f"{key} = {value}", text)
            if n != 1:
                raise BenchError(f"the generated config has no single {key} line to set")
        return text

    return tune


def _snapshot(cl: Cluster) -> dict[str, NodeStatus]:
    rows = {s.name: s for s in cl.nodes.statuses(timeout=2.0)}
    dead = [n for n, s in rows.items() if not s.reachable]
    if dead:
        cl.failed = True
        raise BenchError(f"node {', '.join(dead)} stopped answering; see {cl.dir}")
    return rows


def false_alarms(
    before: dict[str, NodeStatus], after: dict[str, NodeStatus], since: float
) -> tuple[int, int, int]:
    """(takeovers, running-alone episodes, stalls) between two snapshots of
    the same processes (`since`: the nodes' wall clock at the first)."""

    def grew(key: str) -> int:
        return sum(after[n].counters.get(key, 0) - before[n].counters.get(key, 0) for n in after)

    epochs = max(s.epoch or 0 for s in after.values()) - max(s.epoch or 0 for s in before.values())
    alone = sum(
        1
        for s in after.values()
        for t in s.transitions
        if t.time >= since and t.dst in ALONE and t.src not in ALONE
    )
    return max(grew("takeovers"), epochs), alone, grew("pauses")


def _watch(
    cl: Cluster, hogs: int, seconds: float, phase: str, setting: tuple[int, int], load: Any
) -> AlarmRow:
    cl.wait_state("a", State.NORMAL, 30)
    cl.wait_state("b", State.NORMAL, 30)
    before, since = _snapshot(cl), time.time()
    replies = failovers = 0
    with cl.reaper.hogging(hogs):
        if load is None:
            wait_interruptibly(seconds)
        else:
            res = load()
            replies, failovers = int(res["answered"]), int(res["failovers"])
    takeovers, alone, stalls = false_alarms(before, _snapshot(cl), since)
    return AlarmRow(*setting, phase, seconds, hogs, takeovers, alone, stalls, replies, failovers)


def _kills(cl: Cluster, hogs: int, kills: int, setting: tuple[int, int]) -> AlarmRow:
    detect: list[float] = []
    with cl.reaper.hogging(hogs):
        for _ in range(kills):
            cl.wait_state("a", State.NORMAL, 60)
            cl.wait_state("b", State.NORMAL, 60)
            primary = cl.primary()
            backup = next(n.name for n in cl.cfg.nodes if n.name != primary)
            t0 = time.time()
            os.killpg(cl.procs[primary].pid, signal.SIGKILL)
            cl.kill(primary)
            cl.wait_role(backup, Role.PRIMARY, 30)
            took = [
                t.time
                for t in cl.nodes.status(backup).transitions
                if t.time >= t0 and t.dst in ALONE
            ]
            if not took:
                cl.failed = True
                raise BenchError(f"{backup} leads with no transition to running alone noted")
            detect.append(round((min(took) - t0) * 1000, 1))
            cl.start(primary)
            cl.wait_role(primary, Role.BACKUP, 60, state=State.NORMAL)
    return AlarmRow(*setting, "kills", 0.0, hogs, detect_ms=tuple(detect))


def bench_alarms(
    reaper: Reaper,
    seconds: float,
    hogs: int,
    kills: int,
    settings: list[tuple[int, int]] | None = None,
    say: Callable[[str], None] = print,
) -> list[AlarmRow]:
    rows: list[AlarmRow] = []
    for setting in settings or DEFAULT_SETTINGS:
        cl = Cluster(reaper, 2, ["a", "b"], tune=tuned(*setting))
        eps = [cl.cfg.node(n).client for n in ("a", "b")]
        try:
            load = functools.partial(
                reaper.call,
                drive_client,
                eps,
                16,
                Timing(seconds, 0.0),
                3,
                timeout=seconds + 60,
                name="load",
            )
            for phase, drive in (("idle", None), ("loaded", load)):
                rows.append(_watch(cl, hogs, seconds, phase, setting, drive))
                say(format_row(rows[-1]))
            rows.append(_kills(cl, hogs, kills, setting))
            say(format_row(rows[-1]))
        finally:
            cl.close()
    return rows


def format_row(r: AlarmRow) -> str:
    head = f"dead {r.dead_ms:>4} ms ({r.interval_ms} x {r.misses:<2}) {r.phase:<6} hogs {r.hogs}"
    if r.phase == "kills":
        d = sorted(r.detect_ms)
        mid = d[len(d) // 2] if d else float("nan")
        return f"{head}: {len(d)} kill -9, detected and serving p50 {mid} ms, max {max(d)} ms"
    extra = ""
    if r.phase == "loaded":
        extra = f", {r.replies:,} replies, client failovers {r.client_failovers}"
    return (
        f"{head}: {r.seconds:g} s, false takeovers {r.takeovers}, "
        f"running alone {r.alone}, stalls noticed {r.stalls}{extra}"
    )
