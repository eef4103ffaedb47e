"""Power loss of both servers with real processes (kill -9 of both under load,
as tests/test_audit_cases.py does: what a node had not written is gone).

- `[flush] durability = "disk"`: nothing acknowledged is lost.
- The default ("memory"): what neither had flushed is lost, and the client
  is told exactly which of its acknowledged requests are gone, while the
  requests it had in flight are resent and processed; the leading server
  counts the gap.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Load, MakeCluster, wait_for
from test_audit_cases import lost_acks
from test_failover_live import start_pair, stop_all, wait_more

from zmqfail.cluster import Cluster
from zmqfail.failover.state import Role, State

pytestmark = [pytest.mark.timeout(300), pytest.mark.process]


def power_loss_and_back(cl: Cluster) -> str:
    """kill -9 both, restart both, wait for the pair; returns the primary."""
    for n in ("a", "b"):  # both at once: neither may take over from the other
        cl.signal(n, signal.SIGKILL)
    for n in ("a", "b"):
        cl.procs[n].wait(timeout=10)
    cl.start("a", "b")

    def primary() -> str | None:
        for st in cl.statuses(timeout=1.0):
            if st.reachable and st.role is Role.PRIMARY and st.state is State.NORMAL:
                return st.name
        return None

    wait_for(lambda: primary() is not None, 40, "a primary in the normal state again")
    leader = primary()
    assert leader is not None
    cl.wait("b" if leader == "a" else "a", State.NORMAL, role=Role.BACKUP, timeout=30)
    return leader


def test_with_durability_disk_a_power_loss_of_both_loses_nothing_acknowledged(
    cluster: MakeCluster, cluster_dir: Callable[..., Path]
) -> None:
    _, cl = start_pair(cluster, cluster_dir, flush__durability='"disk"')
    load = Load(cl.cfg, window=16)
    wait_more(load, 500, "load on a", timeout=90)  # a deadline, not a rate: 5 req/s would do
    leader = power_loss_and_back(cl)
    wait_more(load, 300, "load after the power loss")
    load.stop()
    assert load.client.acks_lost == []
    stop_all(cl)
    assert lost_acks(cl.cfg, leader, load) == []


def test_with_durability_memory_the_client_is_told_exactly_what_was_lost(
    cluster: MakeCluster, cluster_dir: Callable[..., Path]
) -> None:
    """Flushes every 2 s: what came after the last one dies with both servers."""
    _, cl = start_pair(cluster, cluster_dir, flush__interval_ms=2000)
    load = Load(cl.cfg, window=16)
    wait_for(
        lambda: all((st.flushed_lsn or 0) > 0 for st in cl.statuses(timeout=1.0)),
        60,
        "a first flush on both",
    )
    wait_more(load, 300, "acknowledged after the flush")
    leader = power_loss_and_back(cl)
    wait_more(load, 300, "load after the power loss")  # in-flight ones resent, processed
    load.stop()
    told = sorted(m for loss in load.client.acks_lost for m in loss.msg_ids)
    (loss,) = load.client.acks_lost
    assert loss.session_known and loss.complete and loss.server == leader
    counters = cl.status(leader).counters
    assert counters["ack_gaps"] == 1 and counters["ack_gap_ids"] >= len(told)
    stop_all(cl)
    lost = lost_acks(cl.cfg, leader, load)
    assert lost, "the power loss should have cost acknowledged requests"
    assert told == lost
    assert loss.known < min(lost)
