"""Failover with real processes through the CLI, under load from the client
library: kill -9 and SIGSTOP of the primary, cut replication links, backup
loss, rejoin of the old primary, switchover (issue: failover)."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BUY, Load, MakeCluster, Procs, moves, wait_for

from zmqfail import config
from zmqfail.audit import replay, requests_in_log
from zmqfail.client.control import call
from zmqfail.client.sync import Client
from zmqfail.cluster import Cluster
from zmqfail.failover.state import Role, State

pytestmark = [pytest.mark.timeout(120), pytest.mark.process]

PRIMARY, BACKUP = Role.PRIMARY, Role.BACKUP
NORMAL, BACKUP_ONLY = State.NORMAL, State.BACKUP_ONLY


def start_pair(
    cluster: MakeCluster, cluster_dir: Callable[..., Path], **settings: object
) -> tuple[Path, Cluster]:
    cfg_path = cluster_dir(**settings)
    cl = cluster(cfg_path)
    cl.start("a", "b")
    cl.wait("a", NORMAL, role=PRIMARY)
    cl.wait("b", NORMAL, role=BACKUP)
    return cfg_path, cl


def start_three(cluster: MakeCluster, cluster_dir: Callable[..., Path]) -> tuple[Path, Cluster]:
    """a primary, b and c its in-sync backups."""
    cfg_path = cluster_dir(nodes=3)
    cl = cluster(cfg_path)
    cl.start("a", "b", "c")
    cl.wait("a", NORMAL, role=PRIMARY)
    for n in ("b", "c"):
        cl.wait(n, NORMAL, role=BACKUP)
    return cfg_path, cl


def check_exactly_once(cfg: config.ClusterConfig, name: str, load: Load) -> None:
    """Every acknowledged request is in `name`'s log once; no request twice."""
    seen = collections.Counter(requests_in_log(cfg.node(name).data_dir))
    twice = [k for k, n in seen.items() if n > 1]
    assert not twice, f"applied twice: {twice[:5]}"
    cid = load.client.client_id
    lost = [m for m in load.acked if seen[(cid, m)] != 1]
    assert not lost, f"acknowledged but not in {name}'s log: {lost[:10]}"


def wait_equal_digests(cl: Cluster, x: str, y: str) -> None:
    def same() -> bool:
        dx, dy = (cl.status(n, digest=True, timeout=2.0).digest for n in (x, y))
        return dx is not None and dx == dy

    wait_for(same, 20, f"equal digests on {x} and {y}")


def stop_all(cl: Cluster) -> None:
    """Clean stops, so every record a node holds is on its disk for the checks."""
    for st in cl.statuses(timeout=2.0):
        if st.reachable:
            cl.stop(st.name)
    assert all(p.poll() is not None for p in cl.procs.values()), "clean stops"


def wait_more(load: Load, n: int, what: str, timeout: float = 30) -> None:
    base = load.count()
    wait_for(lambda: load.count() >= base + n, timeout, what)


def test_kill9_primary_backup_takes_over_and_old_primary_rejoins(
    cluster: MakeCluster, cluster_dir: Callable[..., Path]
) -> None:
    _, cl = start_pair(cluster, cluster_dir)
    cfg = cl.cfg
    load = Load(cfg, window=16)
    wait_more(load, 800, "load on a")
    cl.kill("a")
    cl.wait("b", BACKUP_ONLY, role=PRIMARY)  # b takes over
    wait_more(load, 800, "load continuing on b")
    assert cl.status("b").epoch == 2
    assert moves(load.client.failovers) == ["b"]
    # The old primary comes back as the backup, catches up, and the pair is whole.
    cl.start("a")
    cl.wait("a", NORMAL, role=BACKUP, timeout=30)
    cl.wait("b", NORMAL, role=PRIMARY, timeout=10)
    wait_more(load, 300, "load with the pair whole again")
    load.stop()
    wait_equal_digests(cl, "a", "b")
    stop_all(cl)
    check_exactly_once(cfg, "b", load)
    proc, _ = replay(cfg.node("b").data_dir, cfg)
    assert proc.app.describe().tables["orders"] == len(load.acked)


def test_primary_killed_with_no_client_connected_the_backup_serves_within_2s(
    cluster: MakeCluster, cluster_dir: Callable[..., Path]
) -> None:
    """Step 420: silent on the links and on the client network, the primary is
    gone; the backup takes over on its own (no client vote), and a client
    started afterwards is served by it."""
    _, cl = start_pair(cluster, cluster_dir)
    cfg = cl.cfg
    killed_at = time.time()
    cl.kill("a")
    b = cl.wait("b", BACKUP_ONLY, role=PRIMARY, timeout=10)  # b takes over
    took = [t for t in b.transitions if t.dst is BACKUP_ONLY]
    assert len(took) == 1 and took[0].why == "PrimaryGone", took
    assert took[0].time - killed_at < 2.0, f"took over {took[0].time - killed_at:.2f} s late"
    assert b.counters["votes"] == 0
    with Client(cfg, timeout=10) as c:
        rep = c.request(BUY)
    assert (rep.server, rep.epoch, rep.status) == ("b", 2, "ok")


def test_paused_primary_steps_down_and_never_acknowledges_after_takeover(
    cluster: MakeCluster, cluster_dir: Callable[..., Path]
) -> None:
    _, cl = start_pair(cluster, cluster_dir)
    cfg = cl.cfg
    load = Load(cfg, window=16)
    wait_more(load, 500, "load on a")
    cl.signal("a", signal.SIGSTOP)
    try:
        cl.wait("b", BACKUP_ONLY, role=PRIMARY)  # the takeover
        wait_more(load, 300, "load on b while a is paused")
    finally:
        cl.signal("a", signal.SIGCONT)
    cl.wait("a", role=BACKUP, timeout=10)  # a steps down
    cl.wait("a", NORMAL, role=BACKUP, timeout=30)  # and rejoins as the backup
    wait_more(load, 300, "load after a rejoined")
    load.stop()
    first_b = min(t for t, server, epoch, _ in load.replies if server == "b")
    late = [(t, e, m) for t, server, e, m in load.replies if server == "a" and t > first_b]
    assert not late, f"a acknowledged after b took over: {late[:5]}"
    assert all(e == 1 for _, server, e, _ in load.replies if server == "a")
    wait_equal_digests(cl, "a", "b")
    stop_all(cl)
    check_exactly_once(cfg, "b", load)


def test_both_links_cut_primary_alone_no_takeover(
    cluster: MakeCluster, cluster_dir: Callable[..., Path]
) -> None:
    _, cl = start_pair(cluster, cluster_dir)
    cfg = cl.cfg
    load = Load(cfg, window=16)
    wait_more(load, 300, "load on a")
    for link in ("main", "failsafe"):
        call(cfg.node("a").control, "cut", {"link": link})
    cl.wait("a", State.PRIMARY_ONLY, timeout=10)
    wait_more(load, 800, "load on a, alone")
    sb = cl.status("b")
    assert sb.role is BACKUP and sb.epoch == 1, f"no takeover expected: {sb}"
    # Step 420: b asked a over the client network, heard it, and waits (it no
    # longer holds everything a acknowledges).
    assert sb.state is State.STANDBY, sb.transitions
    assert sb.transitions[-1].why == "PrimaryReachable"
    assert moves(load.client.failovers) == [], "clients kept their primary"
    for link in ("main", "failsafe"):
        call(cfg.node("a").control, "heal", {"link": link})
    cl.wait("a", NORMAL, role=PRIMARY)  # the pair whole again
    wait_more(load, 200, "load after heal")
    load.stop()
    wait_equal_digests(cl, "a", "b")


def test_backup_killed_primary_alone_then_backup_returns(
    cluster: MakeCluster, cluster_dir: Callable[..., Path]
) -> None:
    _, cl = start_pair(cluster, cluster_dir)
    load = Load(cl.cfg, window=16)
    wait_more(load, 300, "load")
    cl.kill("b")
    cl.wait("a", State.PRIMARY_ONLY, timeout=10)
    wait_more(load, 300, "load on a alone")
    cl.start("b")
    cl.wait("a", NORMAL, role=PRIMARY, timeout=30)
    load.stop()
    wait_equal_digests(cl, "a", "b")


def test_switchover_loses_and_fails_no_request(
    cluster: MakeCluster, cluster_dir: Callable[..., Path]
) -> None:
    cfg_path, cl = start_pair(cluster, cluster_dir)
    cfg = cl.cfg
    load = Load(cfg, window=16)
    wait_more(load, 500, "load on a")
    out = subprocess.run(
        [sys.executable, "-m", "zmqfail", "switchover", "--config", str(cfg_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert cl.status("b").role is PRIMARY
    cl.wait("a", NORMAL, role=BACKUP, timeout=30)
    cl.wait("b", NORMAL, role=PRIMARY, timeout=10)
    wait_more(load, 500, "load on b")
    load.stop()  # asserts no request failed
    assert cl.status("b").epoch == 2
    wait_equal_digests(cl, "a", "b")
    with Client(cfg, timeout=5) as c:
        assert c.request({"op": "book", "instrument": "ABC"}).server == "b"
    stop_all(cl)
    check_exactly_once(cfg, "b", load)


def test_several_backups_most_up_to_date_takes_over_others_follow(
    cluster: MakeCluster, cluster_dir: Callable[..., Path]
) -> None:
    cl = start_three(cluster, cluster_dir)[1]
    cfg = cl.cfg
    load = Load(cfg, window=16)
    wait_more(load, 800, "load on a")
    cl.kill("a")
    took = cl.wait_all(
        lambda rows: any(r.role is PRIMARY for r in rows if r.name != "a"), "taken over by b or c"
    )
    new = next(r.name for r in took if r.name != "a" and r.role is PRIMARY)
    other = "c" if new == "b" else "b"
    cl.wait(other, NORMAL, role=BACKUP)  # it follows
    cl.wait(new, NORMAL, role=PRIMARY)
    assert cl.status(new).epoch == 2 and cl.status(other).epoch == 2
    wait_more(load, 500, f"load on {new}")
    load.stop()
    wait_equal_digests(cl, new, other)
    stop_all(cl)
    check_exactly_once(cfg, new, load)
    check_exactly_once(cfg, other, load)


def test_async_client_fails_over_with_its_requests(
    cluster: MakeCluster, cluster_dir: Callable[..., Path]
) -> None:
    import asyncio

    from zmqfail.client.aio import AsyncClient

    _, cl = start_pair(cluster, cluster_dir)

    async def main() -> tuple[list[Any], list[str]]:
        c = AsyncClient(cl.cfg, timeout=20)
        try:
            await c.connect()
            first = await asyncio.gather(*(c.request(BUY) for _ in range(100)))
            cl.signal("a", signal.SIGKILL)  # a dies; some requests follow
            rest = await asyncio.gather(*(c.request(BUY) for _ in range(300)))
            return [*first, *rest], moves(c.failovers)
        finally:
            await c.close()

    replies, moved = asyncio.run(main())
    assert all(r.status == "ok" for r in replies)
    assert len({r.result["order_id"] for r in replies}) == 400, "one order per request"
    assert moved == ["b"]
    assert replies[-1].server == "b" and replies[-1].epoch == 2


def test_a_paused_primary_does_not_blame_its_backup_for_its_own_pause(
    procs: Procs, cluster: MakeCluster, cluster_dir: Callable[..., Path]
) -> None:
    """Woken from SIGSTOP, a server measures every peer as silent for the whole
    pause. It must not act on that (run alone, acknowledge by flush) before fresh
    input had time to arrive; with no clients, nobody took over meanwhile."""
    _, cl = start_pair(cluster, cluster_dir)
    cl.signal("a", signal.SIGSTOP)
    try:
        wait_for(lambda: "silent" in procs.log_text("node-b"), 10, "b notices a is silent")
    finally:
        cl.signal("a", signal.SIGCONT)
    a = cl.wait("a", NORMAL, role=PRIMARY, timeout=10)  # serving again
    # b, which was probing a (standby), follows it again once it hears it.
    b = cl.wait("b", NORMAL, role=BACKUP, timeout=10)
    assert b.epoch == a.epoch == 1, "someone took over a paused primary"
    # a never judged b gone from the silence its own pause made.
    assert "silent on every link" not in procs.log_text("node-a")
    # State changes only (the history also notes a start, a pause, ...).
    changes = [t.dst for t in a.transitions if t.src is not t.dst]
    if State.PRIMARY_ONLY in changes[1:]:
        # Only as b's doing: b judged a silent (it was), probed it, found it
        # answering (woken by then) and stood by until its links carry again,
        # and a primary whose backup stands by runs alone. Whether b's probe
        # or a's replication reaches b first is a race of the woken process.
        assert "answers over the client network" in procs.log_text("node-b"), changes


def test_switchover_to_a_backup_that_freezes_is_called_off(
    cluster: MakeCluster, cluster_dir: Callable[..., Path]
) -> None:
    _, cl = start_pair(cluster, cluster_dir)
    cfg = cl.cfg
    cl.signal("b", signal.SIGSTOP)
    try:
        res = call(cfg.node("a").control, "switchover", {})  # b still counts as in sync
        assert res["handoff_to"] == "b"
        cl.wait("a", State.PRIMARY_ONLY, timeout=10)  # the handoff called off
        with Client(cfg, timeout=5) as c:
            rep = c.request(BUY)
        assert (rep.status, rep.server, rep.epoch) == ("ok", "a", 1)
    finally:
        cl.signal("b", signal.SIGCONT)
    # Woken, b must not act on the offer a called off: a keeps serving, and the
    # order it acknowledged alone survives on both servers.
    cl.wait("b", NORMAL, role=BACKUP)  # back in sync
    cl.wait("a", NORMAL, role=PRIMARY, timeout=10)
    assert cl.status("a").epoch == 1
    with Client(cfg, timeout=5) as c:
        found = c.request({"op": "status", "order_id": rep.result["order_id"]})
    assert found.status == "ok"
    wait_equal_digests(cl, "a", "b")
