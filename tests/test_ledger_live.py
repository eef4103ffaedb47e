"""The ledger under kill -9 of the primary, with real processes: `zmqfail
client bench` moves money between accounts from two clients while the
primary is killed and restarted; the total of all balances is conserved by
every transaction in every node's log, no transfer is applied twice, nothing
acknowledged is lost, and both nodes end equal (runcheck.py)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Procs, wait_for
from runcheck import bench_args, check_run, whole_then_stopped

from zmqfail import config
from zmqfail.client.control import node_status
from zmqfail.client.sync import Client

pytestmark = [pytest.mark.timeout(150), pytest.mark.process]


def st(cfg: config.ClusterConfig, name: str) -> dict[str, Any]:
    return node_status(cfg.node(name), digest=False, timeout=1.0)


def test_ledger_conserves_money_through_a_kill_of_the_primary(
    procs: Procs, cluster_dir: Callable[..., Path], tmp_path: Path
) -> None:
    cfg_path = cluster_dir(app="ledger", app__accounts=20, app__initial_balance=1000)
    cfg = config.load(cfg_path)
    node_a = procs.node(cfg_path, "a")
    procs.node(cfg_path, "b")
    wait_for(lambda: st(cfg, "a")["state"] == "normal", 20, "a normal")
    wait_for(lambda: st(cfg, "b")["state"] == "normal", 20, "b normal")
    history, report = tmp_path / "history.jsonl", tmp_path / "report.json"
    bench = procs.start(*bench_args(cfg_path, history, report, 8, "ledger"), log="bench")
    wait_for(lambda: st(cfg, "a")["last_lsn"] > 1500, 30, "transfers to flow")
    os.killpg(node_a.pid, signal.SIGKILL)  # with transfers in flight
    node_a.wait(10)
    wait_for(lambda: st(cfg, "b").get("role") == "primary", 20, "b to take over")
    procs.node(cfg_path, "a")
    assert bench.wait(timeout=90) == 0, procs.log_text("bench")
    with Client(cfg, timeout=10) as c:  # the live cluster's own answer
        total = c.request({"op": "total"}).result
    assert total == {"total": 20 * 1000, "accounts": 20}
    primary, digests = whole_then_stopped(cfg)
    acked, epochs = check_run(cfg, history, primary, digests)
    assert acked > 1000 and epochs >= 2
