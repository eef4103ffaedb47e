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
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MakeCluster, Procs, run_zmqfail
from runcheck import bench_args, check_run, whole_then_stopped

from zmqfail.core.status import NodeStatus
from zmqfail.failover.state import Role, State

# Both runs on one xdist worker: each loads the machine on purpose, and the
# two together made false failovers on a busy one.
pytestmark = [pytest.mark.timeout(180), pytest.mark.process, pytest.mark.xdist_group("chaos")]

# {first} is the primary when the test writes the plans, {second} the other
# node: a busy machine may have moved the primary role before (or, a false
# failover, just after); either way {first} is killed, restarted, and takes
# over when the primary is frozen. Two plans, run one after the other: the
# first ends once {first} is back as a backup in sync (a backup still syncing
# may not take over: it may lack acknowledged records), so the second's
# freeze lasts its full three seconds however long the restart took.
KILL_PLAN = """
[[step]]
at = 0.5
node = "{first}"
signal = "KILL"

[[step]]
at = 1.5
node = "{first}"
restart = true
wait = true
"""

# Frozen long enough for {first} to take over even on a loaded machine.
FREEZE_PLAN = """
[[step]]
at = 0.0
node = "primary"
signal = "STOP"

[[step]]
at = 3.0
node = "{second}"
signal = "CONT"

[[step]]
at = 4.5
node = "primary"
link = "main"
for = 1.0
"""


class ServesAfterThePlan:
    """True once, with every cut healed, a primary at `epoch` or later has
    committed requests since it was first seen so, and the run has committed
    past `floor` in all (a condition, not a rate: a busy machine gets there later)."""

    def __init__(self, epoch: int, floor: int) -> None:
        self.epoch, self.floor = epoch, floor
        self.first: dict[tuple[str, int], int] = {}  # (primary, epoch) -> lsn seen first

    def __call__(self, rows: list[NodeStatus]) -> bool:
        if any(row.cut_links for row in rows):
            return False
        for row in rows:
            if row.role is Role.PRIMARY and (row.epoch or 0) >= self.epoch:
                key, lsn = (row.name, row.epoch or 0), row.committed_lsn or 0
                if lsn >= max(self.first.setdefault(key, lsn) + 100, self.floor):
                    return True
        return False


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
    history, report = tmp_path / "history.jsonl", tmp_path / "report.json"
    # The bench runs until this test ends it: on a busy machine the plan's
    # steps slide later (a restart waits for the node to catch up), and a
    # bench of fixed length could end before the third epoch served.
    bench = procs.start(*bench_args(cfg_path, history, report, 300, app), log="bench")
    # The plan's clock starts once the load flows (starting the bench's client
    # processes takes seconds on a busy machine).
    cl.wait_until("a", lambda s: (s.committed_lsn or 0) > 300, "past commit 300 (load flowing)", 30)
    leader = cl.primary()
    assert leader is not None, "no primary under load"
    first = leader.name
    for text, steps in ((KILL_PLAN, 2), (FREEZE_PLAN, 3)):
        plan.write_text(text.format(first=first, second="b" if first == "a" else "a"))
        nemesis = run_zmqfail("kill", "--config", str(cfg_path), "--plan", str(plan))
        assert nemesis.returncode == 0, nemesis.stdout + nemesis.stderr
        assert len(nemesis.stdout.strip().splitlines()) == steps
    # 1500 records committed: more than the 1000 requests acknowledged asked below.
    served = ServesAfterThePlan((leader.epoch or 0) + 2, 1500)
    cl.wait_all(served, "serving at the second takeover's epoch, cuts healed", 60)
    # Ctrl-C: the bench stops sending, drains what is in flight and reports.
    os.killpg(bench.pid, signal.SIGINT)
    assert bench.wait(timeout=90) == 0, procs.log_text("bench")

    primary, digests = whole_then_stopped(cl)
    acked, epochs = check_run(cfg, history, primary, digests)
    assert acked > 1000
    assert epochs >= 3, "the plan forced at least two takeovers"
