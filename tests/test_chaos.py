"""Chaos: a fault plan (kill -9, restart, pause, link cut) run by `zmqfail kill
--plan` while `zmqfail client bench` records a history, then a checker that
trusts only the history and the nodes' durable logs (runcheck.py): nothing
acknowledged lost, nothing applied twice, order kept, every node equal to a
replay of its log, no epoch served twice; for the ledger also the total
conserved by every transaction and no transfer id applied twice. Once with
each shipped application.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Procs, wait_for
from runcheck import bench_args, check_run, whole_then_stopped

from zmqfail import config
from zmqfail.client.control import node_status

# Both runs on one xdist worker: each loads the machine on purpose, and the
# two together made false failovers on a busy one.
pytestmark = [pytest.mark.timeout(180), pytest.mark.process, pytest.mark.xdist_group("chaos")]

# {first} is the primary when the test writes the plan, {second} the other
# node: a busy machine may have moved the primary role before (or, a false
# failover, just after); either way {first} is killed, restarted, and takes
# over when the primary is frozen.
PLAN = """
[[step]]
at = 2.0
node = "{first}"
signal = "KILL"

[[step]]
at = 3.0
node = "{first}"
restart = true
wait = true    # the STOP below needs {first} back as a backup to take over

# {first} needs time to start and catch up: a backup still syncing may not take
# over (it may lack acknowledged records), so the next takeover waits for it.
# Frozen long enough for {first} to take over even on a loaded machine.
[[step]]
at = 9.0
node = "primary"
signal = "STOP"

[[step]]
at = 12.0
node = "{second}"
signal = "CONT"

[[step]]
at = 13.5
node = "primary"
link = "main"
for = 1.0
"""


def st(cfg: config.ClusterConfig, name: str, digest: bool = False) -> dict[str, Any]:
    return node_status(cfg.node(name), digest=digest, timeout=1.0)


def rows(cfg: config.ClusterConfig) -> list[dict[str, Any]]:
    return [st(cfg, name) for name in ("a", "b")]


class ServesAfterThePlan:
    """True once, with every cut healed, a primary at `epoch` or later has
    committed requests since it was first seen so."""

    def __init__(self, cfg: config.ClusterConfig, epoch: int) -> None:
        self.cfg = cfg
        self.epoch = epoch
        self.first: dict[tuple[str, int], int] = {}  # (primary, epoch) -> lsn seen first

    def __call__(self) -> bool:
        now = rows(self.cfg)
        if any(row.get("cut_links") for row in now):
            return False
        for row in now:
            if row["role"] == "primary" and (row["epoch"] or 0) >= self.epoch:
                key, lsn = (row["name"], row["epoch"]), row["committed_lsn"] or 0
                if lsn >= self.first.setdefault(key, lsn) + 100:
                    return True
        return False


@pytest.mark.parametrize("app", ["orders", "ledger"])
def test_faults_under_load_lose_and_repeat_nothing(
    procs: Procs, cluster_dir: Callable[..., Path], tmp_path: Path, app: str
) -> None:
    cfg_path = cluster_dir(app=app)
    cfg = config.load(cfg_path)
    procs.node(cfg_path, "a")
    procs.node(cfg_path, "b")
    wait_for(lambda: st(cfg, "a")["state"] == "normal", 20, "a normal")
    wait_for(lambda: st(cfg, "b")["state"] == "normal", 20, "b normal")
    plan = tmp_path / "plan.toml"
    history, report = tmp_path / "history.jsonl", tmp_path / "report.json"
    # The bench runs until this test ends it: on a busy machine the plan's
    # steps slide later (a restart waits for the node to catch up), and a
    # bench of fixed length could end before the third epoch served.
    bench = procs.start(*bench_args(cfg_path, history, report, 300, app), log="bench")
    # The plan's clock starts once the load flows (starting the bench's client
    # processes takes seconds on a busy machine).
    wait_for(lambda: (st(cfg, "a")["committed_lsn"] or 0) > 300, 30, "load flowing")
    primary = wait_for(
        lambda: next((r for r in rows(cfg) if r["role"] == "primary"), None), 10, "a primary"
    )
    assert isinstance(primary, dict)
    first = primary["name"]
    plan.write_text(PLAN.format(first=first, second="b" if first == "a" else "a"))
    nemesis = subprocess.run(
        [sys.executable, "-m", "zmqfail", "kill", "--config", str(cfg_path), "--plan", str(plan)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nemesis.returncode == 0, nemesis.stdout + nemesis.stderr
    assert len(nemesis.stdout.strip().splitlines()) == 5
    served = ServesAfterThePlan(cfg, primary["epoch"] + 2)
    wait_for(served, 60, "the second takeover's epoch serving after the cut heals")
    # Ctrl-C: the bench stops sending, drains what is in flight and reports.
    os.killpg(bench.pid, signal.SIGINT)
    assert bench.wait(timeout=90) == 0, procs.log_text("bench")

    primary, digests = whole_then_stopped(cfg)
    acked, epochs = check_run(cfg, history, primary, digests)
    assert acked > 1000
    assert epochs >= 3, "the plan forced at least two takeovers"
