"""`tools/bench idle`: what a pair costs when no client sends anything.

An idle node still turns: its tick, its own heartbeats on both links, its
peer's, the commit keepalives. On a 2-core machine that shares its cores
with clients and with the other server, every per cent a server burns at
rest is taken from the request path, and a test suite that starts hundreds
of pairs pays it in wall time. The figure is each server's CPU share (user
+ system, from /proc) over the measured span, after the pair is whole and
has settled; comparing two trees means running this for each, alternating.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from zmqfail.failover.state import State

from .cluster import Cluster
from .procs import BenchError, Reaper, check_interrupted

SETTLE = 2.0  # seconds after the pair is whole, before measuring


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError as exc:
        raise BenchError(f"cannot read the CPU time of process {pid}: {exc}") from None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_idle(reaper: Reaper, seconds: float, say: Callable[[str], None]) -> dict[str, Any]:
    cl = Cluster(reaper, 2, ["a", "b"])
    try:
        for name in ("a", "b"):
            cl.wait_state(name, State.NORMAL)
        deadline = time.monotonic() + SETTLE
        while time.monotonic() < deadline:
            check_interrupted()
            time.sleep(0.1)
        pids = {name: p.pid for name, p in cl.procs.items()}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        t0 = time.monotonic()
        deadline = t0 + seconds
        while time.monotonic() < deadline:
            check_interrupted()
            time.sleep(0.1)
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        span = time.monotonic() - t0
    finally:
        cl.close()
    share = {name: round((after[name] - before[name]) / span, 4) for name in pids}
    say("idle pair, CPU share per server: " + ", ".join(f"{n} {v:.4f}" for n, v in share.items()))
    return {"scenario": "idle", "seconds": round(span, 2), "cpu_share": share}
