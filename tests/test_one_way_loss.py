"""One-way loss on both replication links of a loaded pair (issue 9 item 7):
each side sees a different story. Cut `in` at the primary, it hears nothing
from its backup (no acks, no heartbeats) while the backup still hears it;
cut `out`, its records and heartbeats stop while it still hears the
backup's heartbeats (and, until the primary drops a backup that answers no
commit, it acknowledged nothing until the heal). The same two at the
backup. Under `client bench` load, through the nodes' control sockets, one
fault at a time, each healed and the pair whole again before the next; then
the run checker (zmqfail/runcheck.py) must find nothing acknowledged lost,
nothing applied twice, and every node equal to its log.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MakeCluster, Procs
from runcheck import bench_args, check_run, whole_then_stopped

from zmqfail.client.control import call
from zmqfail.cluster import Cluster
from zmqfail.core.status import NodeStatus
from zmqfail.failover.state import State
from zmqfail.replication import LINKS

pytestmark = [pytest.mark.timeout(240), pytest.mark.process, pytest.mark.xdist_group("chaos")]

HOLD = 2.5  # seconds each cut lasts: past the 900 ms after which a primary drops a backup
# that answers no commit (zmqfail/core/leader.py, STALLED), with room for a loaded machine
FAULTS = (("primary", "in"), ("primary", "out"), ("backup", "in"), ("backup", "out"))


def cut_one_way(cl: Cluster, node: str, direction: str, seconds: float) -> None:
    """Both replication links at `node`, one way; the node heals them itself."""
    for link in LINKS:
        args = {"link": link, "direction": direction, "for": seconds}
        res = call(cl.cfg.node(node), "cut", args, timeout=3.0)
        assert res["one_way"].get(link) == direction, res


def past(lsn: int) -> Callable[[NodeStatus], bool]:
    return lambda s: (s.committed_lsn or 0) > lsn


def whose(cl: Cluster, role: str) -> str:
    primary = cl.wait_whole(60).name
    return primary if role == "primary" else next(n for n in ("a", "b") if n != primary)


def test_one_way_loss_each_way_at_each_node_loses_no_acknowledged_order(
    procs: Procs, cluster_dir: Callable[..., Path], cluster: MakeCluster, tmp_path: Path
) -> None:
    cfg_path = cluster_dir()
    cl = cluster(cfg_path)
    cl.start("a", "b")
    cl.wait_whole(60)
    history, report = tmp_path / "history.jsonl", tmp_path / "report.json"
    bench = procs.start(*bench_args(cfg_path, history, report, 600, "orders"), log="bench")
    cl.wait_all(lambda rows: any((r.committed_lsn or 0) > 300 for r in rows), "load flowing", 60)
    epoch = cl.wait_whole(60).epoch
    windows = []  # (the node that stopped hearing its peer, the primary, when the cut began, ended)
    for role, direction in FAULTS:
        node = whose(cl, role)
        leader = whose(cl, "primary")
        other = next(n for n in ("a", "b") if n != node)
        before = cl.status(node).committed_lsn or 0
        began = time.time()
        cut_one_way(cl, node, direction, HOLD)
        # The cut holds (the node says so) and heals by itself.
        st = cl.status(node)
        assert st.cut_one_way == dict.fromkeys(LINKS, direction), st
        cl.wait_until(node, lambda s: not s.cut_links, "healed by itself", 30)
        windows.append((node if direction == "in" else other, leader, role, began, time.time()))
        primary = cl.wait_whole(60)
        # Load goes on after the heal, whoever leads.
        floor = max(primary.committed_lsn or 0, before) + 100
        cl.wait_until(primary.name, past(floor), "committing again after the heal", 60)
    # Enough load for the count asked below, however slowly a busy machine got there.
    cl.wait_until(whose(cl, "primary"), past(1500), "past commit 1500", 60)
    os.killpg(bench.pid, signal.SIGINT)
    assert bench.wait(timeout=90) == 0, procs.log_text("bench")
    # Safe, and seen to be: each time, the side that stopped hearing its peer
    # reacted (a primary ran alone; a backup found the primary alive over the
    # client network and stood by), the primary ran alone during the cut
    # whichever way it went (it did not wait for the heal to serve again), and
    # nobody took over while the other lived.
    rows = {r.name: r for r in cl.statuses()}
    assert {r.epoch for r in rows.values()} == {epoch}, "a takeover while both lived"
    history_of = {n: call(cl.cfg.node(n), "history", {})["entries"] for n in rows}
    alone = (State.PRIMARY_ONLY.value, State.STANDBY.value)
    for deaf, leader, role, began, ended in windows:
        seen = [e for e in history_of[deaf] if began <= e["time"] <= ended]
        assert any(e["to"] in alone for e in seen), f"{deaf} never noticed ({role} cut): {seen}"
        led = [e["to"] for e in history_of[leader] if began <= e["time"] <= ended]
        assert State.PRIMARY_ONLY.value in led, f"{leader} never ran alone ({role} cut): {led}"
    leader, digests = whole_then_stopped(cl)
    acked, _ = check_run(cl.cfg, history, leader, digests)
    assert acked > 1000
