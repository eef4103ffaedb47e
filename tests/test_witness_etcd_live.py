"""etcd as the witness, against a real etcd started by the test (etcdkit.py;
skipped where the etcd binary or etcd3gw is absent): first the keys and
leases alone (the gateway's JSON, a real race, a real lease running out),
then a pair of real nodes through the failovers the witness exists for.
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
from etcdkit import Etcd, started

from zmqfail import config
from zmqfail.audit import requests_in_log
from zmqfail.client.control import call, node_status
from zmqfail.client.sync import Client
from zmqfail.configtext import render
from zmqfail.core.status import NodeStatus
from zmqfail.errors import ZmqfailError
from zmqfail.failover.state import Role, State
from zmqfail.netutil import free_base_port
from zmqfail.protocol import WitnessAsk, WitnessKind
from zmqfail.witness.etcd import EtcdKeys, group_base
from zmqfail.witness.etcdplan import Write, plan
from zmqfail.witness.logic import Granted

pytestmark = [pytest.mark.timeout(120), pytest.mark.process]

LEASE_S = 1  # the fixture's etcd (election timeout 500 ms) keeps 1 s leases


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    yield from started(tmp_path)


def elect(server: str, epoch: int, known: int) -> WitnessAsk:
    return WitnessAsk(server, WitnessKind.ELECT.value, epoch, known, 1)


def test_keys_on_a_real_etcd_one_winner_and_a_lease_that_runs_out(etcd: Etcd) -> None:
    keys = EtcdKeys.connect((etcd.url,), "zmqfail/live", 1.0)
    first = plan(elect("a", 1, 0), keys.read())
    assert isinstance(first, Write) and keys.write(first, LEASE_S)
    t_granted = time.monotonic()
    seen = keys.read()
    assert (seen.granted, seen.holder) == (Granted(1, "a"), "a") and seen.lease_id
    assert not plan(elect("b", 2, 1), seen).verdict.granted  # a holds a lease
    # Once it ran out, a and b race for epoch 2 from one read: one wins.
    wait_for(lambda: not keys.read().holder, 10, "etcd expires a's lease")
    assert time.monotonic() - t_granted >= LEASE_S * 0.9, "etcd kept the lease its TTL"
    assert not keys.keep_alive(seen.lease_id), "an expired lease is not brought back"
    seen = keys.read()
    steps = [plan(elect(s, 2, 1), seen) for s in ("a", "b")]
    won = [isinstance(st, Write) and keys.write(st, LEASE_S) for st in steps]
    assert won == [True, False]
    assert keys.read().granted == Granted(2, "a")


# ------------------------------------------------------------ real nodes
def st(cfg: config.ClusterConfig, name: str) -> NodeStatus:
    return node_status(cfg.node(name), timeout=2.0)


def in_log(cfg: config.ClusterConfig, name: str, client_id: str) -> collections.Counter[int]:
    return collections.Counter(
        m for cid, m in requests_in_log(cfg.node(name).data_dir) if cid == client_id
    )


def order(c: Client, acked: list[int], timeout: float = 10.0) -> float | None:
    """One order; when it was acknowledged (None: it was not, in time)."""
    try:
        rep = c.request(BUY, timeout=timeout)
    except ZmqfailError:
        return None
    if rep.status != "ok":
        return None
    acked.append(rep.msg_id)
    return time.monotonic()


def test_a_pair_with_etcd_takes_over_rejoins_and_stops_acknowledging_when_cut(
    etcd: Etcd, procs: Procs, tmp_path: Path
) -> None:
    path = tmp_path / "etcd.toml"
    text = render(2, free_base_port(25), name="live")
    path.write_text(text + f'\n[witness]\netcd = "{etcd.url}"\nlease_ms = {LEASE_S * 1000}\n')
    cfg = config.load(path)
    keys = EtcdKeys.connect((etcd.url,), group_base(cfg), 1.0)
    node_a = procs.node(path, "a")
    procs.node(path, "b")
    wait_for(lambda: st(cfg, "a").is_(Role.PRIMARY, State.NORMAL), 40, "a primary (etcd: epoch 1)")
    wait_for(lambda: st(cfg, "b").state is State.NORMAL, 40, "b backup, normal")
    assert keys.read().granted == Granted(1, "a")
    acked: list[int] = []
    with Client(cfg, timeout=15) as c:
        for _ in range(10):
            assert order(c, acked)

        # 1. The primary dies: b is elected through etcd once a's lease ran out.
        os.killpg(node_a.pid, signal.SIGKILL)
        wait_for(lambda: st(cfg, "b").serving, 30, "b takes over")
        sb = st(cfg, "b")
        assert keys.read().granted == Granted(sb.epoch or 0, "b") and (sb.epoch or 0) >= 2
        for _ in range(10):
            assert order(c, acked)  # at the new epoch, b alone, on its etcd lease

        # 2. The old primary restarts knowing the old epoch only: etcd's
        # refusal tells it the newer one, and it rejoins as b's backup.
        procs.node(path, "a")
        wait_for(lambda: st(cfg, "a").is_(Role.BACKUP, State.NORMAL), 60, "a rejoins as backup")
        wait_for(lambda: st(cfg, "b").state is State.NORMAL, 30, "the pair whole")
        assert st(cfg, "a").epoch == sb.epoch and keys.read().granted.leader == "b"
        for _ in range(5):
            assert order(c, acked)

        # 3. b is cut from a (both links) and from etcd; a still reaches b's
        # clients' side (probes answered), so a stands by: b runs alone on
        # its lease and, once it ends, acknowledges nothing.
        cut = ("main", "failsafe", "witness")
        for link in cut:
            call(cfg.node("b").control, "cut", {"link": link, "for": 30})
        t_cut = time.monotonic()
        # The lease (asked before the cut) has ended by then, with a second for
        # a reply sent just before its end to reach us on a loaded machine.
        quiet_from = t_cut + LEASE_S + 1.0
        late: list[float] = []
        while time.monotonic() < quiet_from + 2.0:
            at = order(c, [], timeout=0.5)
            if at is not None and at > quiet_from:
                late.append(at - t_cut)
        sb, sa = st(cfg, "b"), st(cfg, "a")
        assert not late, f"b acknowledged {len(late)} order(s) without a lease: {late[:5]}"
        assert sb.state is State.PRIMARY_ONLY and not sa.serving, (sb.transitions, sa.transitions)
        assert sb.witness is not None and sb.witness.get("lease_left_ms", 0) <= 0, sb.witness
        for link in cut:
            call(cfg.node("b").control, "heal", {"link": link})
        wait_for(lambda: order(c, acked, timeout=2.0) is not None, 30, "b acknowledges again")
        wait_for(lambda: st(cfg, "a").state is State.NORMAL, 60, "a follows b again")
        for _ in range(5):
            assert order(c, acked)
        client_id = c.client_id
    for name in ("a", "b"):
        with contextlib.suppress(ZmqfailError):
            call(cfg.node(name).control, "stop")
    wait_for(lambda: all(p.poll() is not None for p in procs.procs[1:]), 30, "nodes stopped")
    for name in ("a", "b"):
        seen = in_log(cfg, name, client_id)
        lost = [m for m in acked if seen[m] != 1]
        assert not lost, f"acknowledged but not once in {name}'s log: {lost[:10]}"
