"""End to end with a witness on its own host (issue 9): the two rows of the
partition table that say "no" without one, with real processes on hosts of
their own (network namespaces: root only, skipped elsewhere).

- The servers cut from each other on every network (replication links and
  the client network between them), each still reaching the witness and the
  clients' host: without a witness each would judge the other gone and
  serve. With it the primary keeps its lease and runs alone, the backup's
  election is refused, and nothing acknowledged is lost.
- The double failure: the primary dies, the backup takes over and
  acknowledges, then dies; the old primary restarts alone with older data.
  It must never lead; once the newer server is back, everything is there.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BUY, Procs, wait_for
from hostlab import HostLab, available

from zmqfail import config
from zmqfail.audit import requests_in_log
from zmqfail.client.control import node_status
from zmqfail.client.sync import Client
from zmqfail.core.status import NodeStatus
from zmqfail.errors import ZmqfailError
from zmqfail.failover.state import Role, State

pytestmark = [pytest.mark.timeout(180), pytest.mark.process]

WHY = available()


@pytest.fixture
def lab() -> Iterator[HostLab]:
    if WHY:
        pytest.skip(WHY)
    lab = HostLab(("a", "b", "w"))
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def st(cfg: config.ClusterConfig, name: str) -> NodeStatus:
    return node_status(cfg.node(name), timeout=2.0)


def serving(s: NodeStatus) -> bool:
    return s.serving


def start(lab: HostLab, procs: Procs, tmp_path: Path) -> tuple[Path, config.ClusterConfig]:
    path = tmp_path / "lab.toml"
    path.write_text(lab.cluster_toml(("a", "b"), witness="w", lease_ms=1000))
    cfg = config.load(path)
    procs.start("witness", "--config", str(path), log="witness", prefix=lab.on("w"))
    procs.node(path, "a", prefix=lab.on("a"))
    procs.node(path, "b", prefix=lab.on("b"))
    wait_for(lambda: st(cfg, "a").is_(Role.PRIMARY, State.NORMAL), 40, "a primary, normal")
    wait_for(lambda: st(cfg, "b").state is State.NORMAL, 40, "b backup, normal")
    return path, cfg


def order(c: Client, acked: list[int]) -> None:
    rep = c.request(BUY)
    if rep.status == "ok":
        acked.append(rep.msg_id)


def in_log(cfg: config.ClusterConfig, name: str, client_id: str) -> collections.Counter[int]:
    return collections.Counter(
        m for cid, m in requests_in_log(cfg.node(name).data_dir) if cid == client_id
    )


def test_servers_cut_apart_with_a_witness_exactly_one_serves_and_nothing_is_lost(
    lab: HostLab, procs: Procs, tmp_path: Path
) -> None:
    _, cfg = start(lab, procs, tmp_path)
    acked: list[int] = []
    with Client(cfg, timeout=10) as c:
        for _ in range(20):
            order(c, acked)
        lab.cut("a", "b")  # every network between the servers; both reach w and us
        t_end = time.monotonic() + 4.0  # the dead time, the probes and several leases
        while time.monotonic() < t_end:
            sa, sb = st(cfg, "a"), st(cfg, "b")
            assert not serving(sb), f"b leads while a may serve: {sb.transitions}"
            order(c, acked)
        sa, sb = st(cfg, "a"), st(cfg, "b")
        assert (sa.role, sa.state) == (Role.PRIMARY, State.PRIMARY_ONLY), sa.transitions
        assert sb.witness is not None and sb.witness["refusals"] > 0, sb.witness  # refused
        alone = len(acked)
        lab.heal("a", "b")
        wait_for(lambda: st(cfg, "b").state is State.NORMAL, 60, "b follows a again")
        wait_for(lambda: st(cfg, "a").state is State.NORMAL, 30, "the pair whole")
        for _ in range(10):
            order(c, acked)
        client_id = c.client_id
    assert alone > 20, "a acknowledged alone while cut from b"
    for name in ("a", "b"):
        call_stop(cfg, name)
    wait_for(lambda: all(p.poll() is not None for p in procs.procs[1:]), 30, "nodes stopped")
    for name in ("a", "b"):
        seen = in_log(cfg, name, client_id)
        lost = [m for m in acked if seen[m] != 1]
        assert not lost, f"acknowledged but not once in {name}'s log: {lost[:10]}"


def call_stop(cfg: config.ClusterConfig, name: str) -> None:
    from zmqfail.client.control import call

    with contextlib.suppress(ZmqfailError):  # already gone
        call(cfg.node(name).control, "stop")


def test_the_double_failure_with_a_witness_the_stale_server_never_leads(
    lab: HostLab, procs: Procs, tmp_path: Path
) -> None:
    path, cfg = start(lab, procs, tmp_path)
    node_a, node_b = procs.procs[1], procs.procs[2]
    acked: list[int] = []
    with Client(cfg, timeout=15) as c:
        for _ in range(10):
            order(c, acked)
        os.killpg(node_a.pid, signal.SIGKILL)
        wait_for(lambda: serving(st(cfg, "b")), 30, "b takes over once a's lease ran out")
        newer = len(acked)
        for _ in range(10):
            order(c, acked)  # acknowledged at epoch 2, by b alone
        assert len(acked) == newer + 10
        client_id = c.client_id
    os.killpg(node_b.pid, signal.SIGKILL)
    procs.node(path, "a", prefix=lab.on("a"))
    wait_for(lambda: st(cfg, "a").reachable, 30, "a restarted")
    t_end = time.monotonic() + 3.0  # several leases: nothing holds it back but the witness
    while time.monotonic() < t_end:
        sa = st(cfg, "a")
        assert not serving(sa), f"the stale a leads: {sa.transitions}"
        time.sleep(0.05)
    assert st(cfg, "a").state is State.STANDBY, "a waits for a peer holding more"
    procs.node(path, "b", prefix=lab.on("b"))
    wait_for(lambda: any(serving(st(cfg, n)) for n in ("a", "b")), 60, "service again")
    leader = next(n for n in ("a", "b") if serving(st(cfg, n)))
    with Client(cfg, timeout=15) as c2:
        c2.request(BUY)
    seen = in_log(cfg, leader, client_id)
    lost = [m for m in acked if seen[m] != 1]
    assert not lost, f"acknowledged but not once in {leader}'s log: {lost[:10]}"
