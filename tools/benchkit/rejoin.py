"""`tools/bench rejoin`: how long a failed backup takes to make the pair
whole again, by how long it was down.

While the backup is gone the primary runs alone, flushing before every
acknowledgement, and a second failure would stop the service: the rejoin is
the time the pair stays exposed after the failed server is back. Per
`--down` value: a pair in the normal state under a closed-loop client (16
in flight, the failover scenario's load); the backup is killed with SIGKILL,
stays down that many seconds while the primary serves alone, and is started
again. Reported: the records it was behind when it started (the primary's
last LSN then, less what the backup had flushed before the kill), the seconds from its
start to the pair's NORMAL on both servers (its recovery from its own disk
included), the records the primary wrote meanwhile, and the catch-up rate
(records the backup took in over those seconds), when it was up and
mirroring again (SYNCING: its start and its recovery from its own disk
before that), and the links the primary reset from then to NORMAL (a
commit unanswered for `link_timeout_ms`: a backup sent more than it holds
in time). The client's replies and errors say that
nothing failed on the way.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

from zmqfail.failover.state import Role, State

from .cluster import Cluster, load_until_stopped
from .procs import BenchError, Reaper, wait_interruptibly

WINDOW = 16
REJOIN_LIMIT = 120.0  # seconds a rejoin may take before the bench gives up on it
MIRRORING = frozenset({State.SYNCING, State.NORMAL})


def bench_rejoin(
    reaper: Reaper, downs: list[float], say: Callable[[str], None]
) -> list[dict[str, Any]]:
    rows = []
    for down in downs:
        row = _one(reaper, down)
        say(format_rejoin(row))
        rows.append(row)
    return rows


def _lsn(cl: Cluster, name: str, flushed: bool = False) -> int:
    st = cl.nodes.status(name)
    lsn = st.flushed_lsn if flushed else st.last_lsn
    if lsn is None:
        raise BenchError(f"rejoin: {name} did not say its LSN ({st.error})")
    return lsn


def _resets(cl: Cluster, name: str) -> int:
    return cl.nodes.status(name).counters.get("link_resets", 0)


def _one(reaper: Reaper, down: float) -> dict[str, Any]:
    cl = Cluster(reaper, 2, ["a", "b"])
    try:
        primary = cl.primary()
        backup = "b" if primary == "a" else "a"
        cl.wait_state(backup, State.NORMAL)
        with load_until_stopped(reaper, cl.path, WINDOW, "rejoin client") as finish:
            wait_interruptibly(1.0)  # the load under way
            # What survives the kill: its unflushed tail (at most
            # flush.interval_ms of records) is lost with the process and is
            # part of what it lacks.
            held = _lsn(cl, backup, flushed=True)
            before = _resets(cl, primary)
            os.killpg(cl.procs[backup].pid, signal.SIGKILL)
            cl.kill(backup)
            wait_interruptibly(down)
            behind = _lsn(cl, primary) - held
            resets_down = _resets(cl, primary) - before
            t0 = time.monotonic()
            cl.start(backup)
            # Up from its own disk and mirroring again: what follows is catch-up.
            cl.wait_for(backup, lambda st: st.state in MIRRORING, "syncing", REJOIN_LIMIT)
            t_sync = time.monotonic()
            resets = _resets(cl, primary)
            cl.wait_role(backup, Role.BACKUP, REJOIN_LIMIT, state=State.NORMAL)
            cl.wait_role(primary, Role.PRIMARY, REJOIN_LIMIT, state=State.NORMAL)
            took = time.monotonic() - t0
            caught = _lsn(cl, backup) - held
            resets = _resets(cl, primary) - resets
            res = finish()
    finally:
        cl.close()
    return {
        "down_s": down,
        "behind": behind,
        "rejoin_s": round(took, 2),
        "syncing_after_s": round(t_sync - t0, 2),
        "written_meanwhile": caught - behind,
        "records_per_s": round(caught / took) if took > 0 else None,
        "link_resets": resets,
        "link_resets_down": resets_down,
        "replies": res["replies"],
        "errors": res["errors"],
    }


def format_rejoin(r: dict[str, Any]) -> str:
    return (
        f"   rejoin after {r['down_s']:g} s down: {r['behind']:,} records behind, "
        f"pair NORMAL {r['rejoin_s']:.2f} s after the backup started "
        f"(syncing after {r['syncing_after_s']:.2f} s; {r['written_meanwhile']:,} written "
        f"meanwhile, {r['records_per_s']:,} records/s taken in, {r['link_resets']} link "
        "resets while it caught up); "
        f"{r['replies']:,} replies, {r['errors']} errors"
    )
