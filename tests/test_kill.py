"""`zmqfail kill`: every form changes what status reports as expected, and
plans parse strictly and run in order with an injected clock."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import pytest
from conftest import MakeCluster

from zmqfail import config
from zmqfail.chaos import Direction, Step, parse_plan, run_plan
from zmqfail.cluster import Cluster
from zmqfail.core.status import NodeStatus
from zmqfail.errors import ConfigError, ZmqfailError
from zmqfail.failover.state import Role, State

pytestmark = pytest.mark.timeout(120)


def zk(cfg_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zmqfail", "kill", "--config", str(cfg_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def pair(cluster: MakeCluster, cluster_dir: Callable[..., Path]) -> tuple[Path, Cluster]:
    """A started pair in the normal state; the tool under test restarts nodes too."""
    cfg_path = cluster_dir()
    cl = cluster(cfg_path, sole_owner=False)
    cl.start("a", "b")
    cl.wait("a", State.NORMAL)
    cl.wait("b", State.NORMAL)
    return cfg_path, cl


def carried_by(cl: Cluster, link: str) -> None:
    cl.wait_until("a", lambda s: s.replication_link == link, f"replicating on {link}", 30)


# ------------------------------------------------------------------ plans (pure)
NODES = ("a", "b")


def test_plan_parses_sorts_and_describes() -> None:
    steps = parse_plan(
        """
        [[step]]
        at = 2.0
        node = "a"
        link = "main"
        for = 1.5
        [[step]]
        at = 0.5
        node = "primary"
        signal = "STOP"
        [[step]]
        at = 2.0
        node = "b"
        restart = true
        """,
        NODES,
    )
    assert [s.at for s in steps] == [0.5, 2.0, 2.0]
    assert steps[1].link == "main" and steps[1].seconds == 1.5  # file order kept on ties
    assert [s.describe() for s in steps] == [
        "signal STOP to primary",
        "cut main link at a for 1.5s",
        "restart b",
    ]
    (waits,) = parse_plan('[[step]]\nnode = "a"\nrestart = true\nwait = true\n', NODES)
    assert waits.wait and waits.describe() == "restart a (the plan waits for it)"
    (deaf,) = parse_plan('[[step]]\nnode = "b"\nlink = "main"\ndirection = "in"\n', NODES)
    assert deaf.direction is Direction.IN and deaf.describe() == "cut (in only) main link at b"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "no \\[\\[step\\]\\]"),
        ("x = 1", "only \\[\\[step\\]\\]"),
        ("[[step]]\nnode = 'zz'\nsignal = 'KILL'", "node must be one of"),
        ("[[step]]\nnode = 'a'", "exactly one of"),
        ("[[step]]\nnode = 'a'\nsignal = 'KILL'\nrestart = true", "exactly one of"),
        ("[[step]]\nnode = 'a'\nsignal = 'HUP'", "signal must be one of"),
        ("[[step]]\nnode = 'a'\nlink = 'eth0'", "link must be one of"),
        ("[[step]]\nnode = 'a'\nsignal = 'KILL'\nat = -1", "non-negative"),
        ("[[step]]\nnode = 'a'\nsignal = 'KILL'\nfor = 1", "'for' only goes with a link cut"),
        ("[[step]]\nnode = 'a'\nlink = 'main'\nfor = 0", "positive"),
        ("[[step]]\nnode = 'a'\nsignal = 'KILL'\nheal = true", "only for a link"),
        ("[[step]]\nnode = 'a'\nsignal = 'KILL'\nwhen = 3", "unknown key"),
        ("[[step]]\nnode = 'a'\nrestart = true\nwait = 1", "wait is true or false"),
        ("[[step]]\nnode = 'a'\nsignal = 'KILL'\nwait = true", "only for a restart"),
        ("[[step]\n", "invalid TOML"),
        ("[[step]]\nnode = 'a'\nlink = 'main'\ndirection = 'up'", "direction must be one of"),
        ("[[step]]\nnode = 'a'\nsignal = 'KILL'\ndirection = 'in'", "'direction' only goes"),
        ("[[step]]\nnode = 'a'\nlink = 'main'\nheal = true\ndirection = 'in'", "only goes"),
    ],
)
def test_bad_plans_are_refused(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_plan(text, NODES)


class FakeTime:
    """A clock that moves only when the plan sleeps or a step takes time, and
    a pool whose restarts run when submitted but count as finished only once
    the clock has passed their duration: a restart of 3 s, in no time."""

    def __init__(self, durations: dict[str, float] | None = None) -> None:
        self.now = 100.0
        self.durations = durations or {}  # step description -> seconds it takes
        self.pending: list[tuple[float, Future[str], str | Exception]] = []
        self.started: list[tuple[float, str]] = []  # (offset, step) as they began

    def clock(self) -> float:
        return self.now

    def sleep(self, d: float) -> None:
        assert d > 0
        self.now += d
        self._settle()

    def _settle(self) -> None:
        for item in list(self.pending):
            end, fut, outcome = item
            if end <= self.now + 1e-9:
                self.pending.remove(item)
                if isinstance(outcome, Exception):
                    fut.set_exception(outcome)
                else:
                    fut.set_result(outcome)

    def wrap(self, do: Callable[[Step], str]) -> Callable[[Step], str]:
        """`do` as the plan sees it: noted when it begins; a step run on the
        plan's thread takes its duration off the clock right there."""

        def run(step: Step) -> str:
            self.started.append((round(self.now - 100.0, 6), step.describe()))
            result = do(step)
            if not (step.restart and not step.wait):
                self.now += self.durations.get(step.describe(), 0.0)
            return result

        return run


class FakePool(Executor):
    def __init__(self, t: FakeTime) -> None:
        self.t = t

    def submit(  # type: ignore[override]
        self, fn: Callable[[Step], str], step: Step
    ) -> Future[str]:
        fut: Future[str] = Future()
        try:
            outcome: str | Exception = fn(step)
        except ZmqfailError as exc:
            outcome = exc
        end = self.t.now + self.t.durations.get(step.describe(), 0.0)
        self.t.pending.append((end, fut, outcome))
        self.t._settle()
        return fut


def run(steps: list[Step], t: FakeTime, do: Callable[[Step], str]) -> tuple[int, list[Any]]:
    reports: list[Any] = []

    def report(began: float, step: Step, result: str) -> None:
        reports.append((round(began, 6), step.describe(), result))

    failed = run_plan(steps, t.wrap(do), t.clock, t.sleep, report, FakePool(t))
    return failed, reports


def did(s: Step) -> str:
    return f"did {s.describe()}"


def test_a_restart_delays_nothing_after_it() -> None:
    """The bug of issue 13: a STOP planned at 7 s ran at 9.46 s after a restart."""
    t = FakeTime({"restart a": 3.0})
    steps = [
        Step(0.0, "a", signal="KILL"),
        Step(4.0, "a", restart=True),
        Step(7.0, "b", signal="STOP"),
        Step(9.0, "b", signal="CONT"),
    ]
    failed, reports = run(steps, t, did)
    assert failed == 0
    assert t.started == [
        (0.0, "signal KILL to a"),
        (4.0, "restart a"),
        (7.0, "signal STOP to b"),  # while the restart still runs
        (9.0, "signal CONT to b"),
    ]
    # Reported as each finishes, stamped with when it began.
    assert reports == [
        (0.0, "signal KILL to a", "did signal KILL to a"),
        (4.0, "restart a", "did restart a"),  # finished at 7.0, as the STOP began
        (7.0, "signal STOP to b", "did signal STOP to b"),
        (9.0, "signal CONT to b", "did signal CONT to b"),
    ]


def test_a_restart_that_waits_holds_the_later_steps() -> None:
    waits = Step(1.0, "a", restart=True, wait=True)
    t = FakeTime({waits.describe(): 3.0})
    failed, reports = run(
        [waits, Step(2.0, "b", signal="STOP"), Step(2.5, "b", signal="CONT")], t, did
    )
    assert failed == 0
    assert t.started == [
        (1.0, "restart a (the plan waits for it)"),
        (4.0, "signal STOP to b"),  # late: the restart ended at 4.0
        (4.0, "signal CONT to b"),
    ]
    assert [r[0] for r in reports] == [1.0, 4.0, 4.0]


def test_late_steps_keep_their_order() -> None:
    """A STOP whose step is slow (a status call to time out) must not be
    overtaken by the CONT planned after it: the CONT would find nothing to
    wake and the node would stay frozen."""
    t = FakeTime({"signal STOP to primary": 1.0})
    steps = [Step(0.5, "primary", signal="STOP"), Step(0.6, "b", signal="CONT")]
    failed, reports = run(steps, t, did)
    assert failed == 0
    assert t.started == [(0.5, "signal STOP to primary"), (1.5, "signal CONT to b")]
    assert [r[1] for r in reports] == ["signal STOP to primary", "signal CONT to b"]


def test_a_failed_step_is_reported_and_the_plan_goes_on() -> None:
    steps = [
        Step(0.0, "a", signal="STOP"),
        Step(0.0, "b", restart=True),
        Step(0.0, "c", signal="KILL"),
        Step(1.0, "a", signal="CONT"),
    ]

    def do(s: Step) -> str:
        if s.node in ("b", "c"):
            raise ZmqfailError(f"node {s.node} is not running")
        return "ok"

    failed, reports = run(steps, FakeTime(), do)
    assert failed == 2
    assert sorted(r[2] for r in reports) == [
        "FAILED: node b is not running",
        "FAILED: node c is not running",
        "ok",
        "ok",
    ]


def test_the_real_pool_runs_a_restart_beside_the_next_steps() -> None:
    """Without an injected pool a restart gets a thread: while it blocks,
    the next step runs."""
    import threading
    import time

    release = threading.Event()

    def do(s: Step) -> str:
        if s.restart:
            assert release.wait(10), "the step after the restart never ran"
            return "restart done"
        release.set()
        return "stop done"

    reports: list[str] = []
    steps = [Step(0.0, "a", restart=True), Step(0.05, "b", signal="STOP")]
    failed = run_plan(steps, do, time.monotonic, time.sleep, lambda b, s, r: reports.append(r))
    assert failed == 0 and reports == ["stop done", "restart done"]


def test_primary_means_the_one_at_the_highest_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted old primary may claim the role at its old epoch for a moment."""
    from zmqfail.cli import killcmd

    rows = [
        NodeStatus("a", Role.PRIMARY, State.PRIMARY_ONLY, epoch=1),
        NodeStatus("b", Role.PRIMARY, State.BACKUP_ONLY, epoch=2),
        NodeStatus.unreachable("c", "no answer"),
    ]
    monkeypatch.setattr(killcmd, "cluster_status", lambda *a, **k: rows)
    cfg = config.loads(config.render(nodes=3, base_port=6000), Path("."))
    assert killcmd.resolve(cfg, "primary") == "b"
    assert killcmd.resolve(cfg, "a") == "a"
    with pytest.raises(ZmqfailError, match="no reachable node is backup"):
        killcmd.resolve(cfg, "backup")


# ------------------------------------------------------------------ live forms
def test_link_cuts_move_replication_and_isolate(
    cluster: MakeCluster, cluster_dir: Callable[..., Path]
) -> None:
    cfg_path, cl = pair(cluster, cluster_dir)
    out = zk(cfg_path, "b", "--link", "main")
    assert out.returncode == 0, out.stderr
    assert "main link cut at b" in out.stdout
    carried_by(cl, "failsafe")
    assert cl.status("b").cut_links == ["main"]
    assert zk(cfg_path, "b", "--link", "main", "--heal").returncode == 0
    carried_by(cl, "main")
    # One way only: b still hears main, sends nothing on it.
    out = zk(cfg_path, "b", "--link", "main", "--direction", "out", "--for", "60")
    assert out.returncode == 0, out.stderr
    assert "main link cut out at b" in out.stdout and "cut now: main (out)" in out.stdout
    st = cl.status("b")
    assert (st.cut_links, st.cut_one_way) == (["main"], {"main": "out"})
    assert zk(cfg_path, "b", "--link", "main", "--heal").returncode == 0
    assert cl.status("b").cut_links == []
    # Both links cut at the primary: it runs alone. The cuts last far longer
    # than a CLI call takes to start on a loaded machine, so they overlap.
    for link in ("main", "failsafe"):
        assert zk(cfg_path, "primary", "--link", link, "--for", "60").returncode == 0
    cl.wait("a", State.PRIMARY_ONLY, timeout=10)
    # Cut again for a second (a new cut sets when it heals): the cuts heal by
    # themselves and the pair is whole again.
    for link in ("main", "failsafe"):
        assert zk(cfg_path, "primary", "--link", link, "--for", "1").returncode == 0
    cl.wait_until("a", lambda s: s.cut_links == [], "healed by itself", 20)
    cl.wait("a", State.NORMAL)
    # Cutting the clients channel drops client traffic at that node. The cut
    # outlasts any slow CLI start on a loaded machine; healing ends it.
    assert zk(cfg_path, "a", "--link", "clients", "--for", "60").returncode == 0
    assert cl.status("a").cut_links == ["clients"]
    assert zk(cfg_path, "a", "--link", "clients", "--heal").returncode == 0
    assert cl.status("a").cut_links == []


def test_signals_and_restart(cluster: MakeCluster, cluster_dir: Callable[..., Path]) -> None:
    cfg_path, cl = pair(cluster, cluster_dir)
    out = zk(cfg_path, "backup", "--signal", "STOP")
    assert out.returncode == 0 and "SIGSTOP sent to b" in out.stdout, out.stderr
    cl.wait("a", State.PRIMARY_ONLY, timeout=10)  # the backup frozen
    assert zk(cfg_path, "b", "--signal", "CONT").returncode == 0
    cl.wait("a", State.NORMAL)  # the backup back
    out = zk(cfg_path, "b", "--signal", "KILL")
    assert out.returncode == 0, out.stderr
    # Its process is ours: its exit says it is dead, where a status reading
    # would wait out its whole timeout (2 s) for an answer that never comes.
    assert cl.procs["b"].wait(10) == -signal.SIGKILL
    out = zk(cfg_path, "b", "--restart")
    assert out.returncode == 0 and "b restarted" in out.stdout, out.stderr
    cl.wait("b", State.NORMAL)  # rejoined
    # Killing the primary with no clients: the backup finds it gone on every
    # path (step 420: no client vote needed) and takes over; the restarted a
    # rejoins as its backup and the pair is whole. (Killed and restarted at
    # once, a came back before b judged it gone on a loaded machine, b's
    # pause guard distrusting silence: then a simply leads again.)
    before = cl.status("a").pid
    out = zk(cfg_path, "primary", "--signal", "KILL")
    assert out.returncode == 0, out.stderr
    cl.wait("b", role=Role.PRIMARY)  # b took over
    out = zk(cfg_path, "a", "--restart")
    assert out.returncode == 0 and "a restarted" in out.stdout, out.stderr
    cl.wait("b", State.NORMAL)  # the pair whole again
    sa = cl.status("a")
    assert sa.pid != before and (sa.role, sa.state) == (Role.BACKUP, State.NORMAL)
    # Errors are one line, never a traceback.
    for args in (("zz", "--signal", "KILL"), ("a",), ("a", "--heal"), ("--plan", "/nope")):
        res = zk(cfg_path, *args)
        assert res.returncode != 0, args
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_plan_runs_steps_in_order(
    cluster: MakeCluster, cluster_dir: Callable[..., Path], tmp_path: Path
) -> None:
    cfg_path, cl = pair(cluster, cluster_dir)
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[[step]]\nat = 0\nnode = "b"\nsignal = "STOP"\n'
        '[[step]]\nat = 0.6\nnode = "b"\nsignal = "CONT"\n'
        '[[step]]\nat = 0.8\nnode = "a"\nlink = "main"\nfor = 0.5\n'
    )
    out = zk(cfg_path, "--plan", str(plan))
    assert out.returncode == 0, out.stderr
    # One line per step, in plan order, stamped with when it began; the cut
    # may begin late: the CONT before it waits out a status call to the frozen node.
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3
    assert "signal STOP to b" in lines[0] and "signal CONT to b" in lines[1]
    assert "cut main link at a" in lines[2]
    times = [float(line.split("s]")[0].strip("[ ")) for line in lines]
    for began, planned in zip(times, (0.0, 0.6, 0.8), strict=True):
        assert planned <= began < planned + 2.0, lines
    cl.wait("a", State.NORMAL)  # whole again
    cl.wait("b", State.NORMAL)  # b resumed and in sync


def test_the_shipped_example_plan_is_valid() -> None:
    from conftest import ROOT

    from zmqfail.chaos import load_plan

    steps = load_plan(ROOT / "etc" / "faults.toml", ("a", "b"))
    assert [s.at for s in steps] == sorted(s.at for s in steps) and len(steps) == 5
