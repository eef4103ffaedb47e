"""Chaos: a fault plan (kill -9, restart, pause, link cut) run by `zmqfail kill
--plan` while `zmqfail client bench` records a history, then a checker that
trusts only the history and the nodes' durable logs (runcheck.py): nothing
acknowledged lost, nothing applied twice, order kept, every node equal to a
replay of its log, no epoch served twice; for the ledger also the total
conserved by every transaction and no transfer id applied twice. Once with
each shipped application.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MakeCluster, Procs
from runcheck import bench_args, check_run, whole_then_stopped

from zmqfail.failover.state import State

pytestmark = [pytest.mark.timeout(180), pytest.mark.process]

PLAN = """
[[step]]
at = 2.0
node = "primary"
signal = "KILL"

[[step]]
at = 3.0
node = "a"
restart = true
wait = true    # the STOP below needs a back as a backup to take over from b

# a needs time to start and catch up: a backup still syncing may not take over
# (it may lack acknowledged records), so the next takeover waits for it.
[[step]]
at = 9.0
node = "primary"
signal = "STOP"

[[step]]
at = 10.5
node = "b"
signal = "CONT"

[[step]]
at = 12.0
node = "primary"
link = "main"
for = 1.0
"""


@pytest.mark.parametrize("app", ["orders", "ledger"])
def test_faults_under_load_lose_and_repeat_nothing(
    procs: Procs, cluster_dir: Callable[..., Path], cluster: MakeCluster, tmp_path: Path, app: str
) -> None:
    cfg_path = cluster_dir(app=app)
    cl = cluster(cfg_path, sole_owner=False)  # the plan restarts nodes itself
    cfg = cl.cfg
    cl.start("a", "b")
    cl.wait("a", State.NORMAL)
    cl.wait("b", State.NORMAL)
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    history, report = tmp_path / "history.jsonl", tmp_path / "report.json"
    bench = procs.start(*bench_args(cfg_path, history, report, 15, app), log="bench")
    # The plan's clock starts once the load flows (starting the bench's client
    # processes takes seconds on a busy machine).
    cl.wait_until("a", lambda s: (s.committed_lsn or 0) > 300, "past commit 300 (load flowing)", 30)
    nemesis = subprocess.run(
        [sys.executable, "-m", "zmqfail", "kill", "--config", str(cfg_path), "--plan", str(plan)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nemesis.returncode == 0, nemesis.stdout + nemesis.stderr
    assert len(nemesis.stdout.strip().splitlines()) == 5
    assert bench.wait(timeout=90) == 0, procs.log_text("bench")

    primary, digests = whole_then_stopped(cl)
    acked, epochs = check_run(cfg, history, primary, digests)
    assert acked > 1000
    assert epochs >= 3, "the plan forced at least two takeovers"
