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

import pytest
from conftest import MakeCluster, Procs
from runcheck import bench_args, check_run, whole_then_stopped

from zmqfail.client.sync import Client
from zmqfail.failover.state import Role, State

pytestmark = [pytest.mark.timeout(150), pytest.mark.process]


def test_ledger_conserves_money_through_a_kill_of_the_primary(
    procs: Procs, cluster_dir: Callable[..., Path], cluster: MakeCluster, tmp_path: Path
) -> None:
    cfg_path = cluster_dir(app="ledger", app__accounts=20, app__initial_balance=1000)
    cl = cluster(cfg_path)
    cfg = cl.cfg
    cl.start("a", "b")
    cl.wait("a", State.NORMAL)
    cl.wait("b", State.NORMAL)
    history, report = tmp_path / "history.jsonl", tmp_path / "report.json"
    # The bench runs until this test ends it (a bench of fixed length could
    # end, on a busy machine, before the takeover it must live through).
    bench = procs.start(*bench_args(cfg_path, history, report, 300, "ledger"), log="bench")
    cl.wait_until("a", lambda s: (s.last_lsn or 0) > 1500, "past lsn 1500", 60)
    cl.kill("a")  # with transfers in flight
    taken = cl.wait("b", role=Role.PRIMARY).committed_lsn or 0
    cl.start("a")
    primary = cl.wait_whole(30).name  # a caught up (b leads, unless a busy machine moved it)
    flowing = "transfers flowing after the takeover"
    cl.wait_until(primary, lambda s: (s.committed_lsn or 0) > taken + 200, flowing, 30)
    # Ctrl-C: the bench stops sending, drains what is in flight and reports.
    os.killpg(bench.pid, signal.SIGINT)
    assert bench.wait(timeout=90) == 0, procs.log_text("bench")
    with Client(cfg, timeout=10) as c:  # the live cluster's own answer
        total = c.request({"op": "total"}).result
    assert total == {"total": 20 * 1000, "accounts": 20}
    primary, digests = whole_then_stopped(cl)
    acked, epochs = check_run(cfg, history, primary, digests)
    assert acked > 1000 and epochs >= 2
