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

from collections.abc import Callable
from typing import Any

from zmqfail.failover.state import State

from .cluster import Cluster
from .procs import Reaper, cpu_shares, wait_interruptibly

SETTLE = 2.0  # seconds after the pair is whole, before measuring


def bench_idle(reaper: Reaper, seconds: float, say: Callable[[str], None]) -> dict[str, Any]:
    cl = Cluster(reaper, 2, ["a", "b"])
    try:
        for name in ("a", "b"):
            cl.wait_state(name, State.NORMAL)
        wait_interruptibly(SETTLE)
        shares, span = cpu_shares({name: p.pid for name, p in cl.procs.items()}, seconds)
    finally:
        cl.close()
    share = {name: round(v, 4) for name, v in shares.items()}
    say("idle pair, CPU share per server: " + ", ".join(f"{n} {v:.4f}" for n, v in share.items()))
    return {"scenario": "idle", "seconds": round(span, 2), "cpu_share": share}
