"""`zmqfail kill`: every form changes what status reports as expected, and
plans parse strictly and run in order with an injected clock."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import pytest
from conftest import Procs, wait_for

from zmqfail import config
from zmqfail.chaos import Step, parse_plan, run_plan
from zmqfail.client.control import node_status
from zmqfail.errors import ConfigError, ZmqfailError

pytestmark = pytest.mark.timeout(120)


def zk(cfg_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zmqfail", "kill", "--config", str(cfg_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def st(cfg: config.ClusterConfig, name: str) -> dict[str, Any]:
    return node_status(cfg.node(name), digest=False, timeout=1.0)


def pair(procs: Procs, cluster_dir: Callable[..., Path]) -> tuple[Path, config.ClusterConfig]:
    cfg_path = cluster_dir()
    cfg = config.load(cfg_path)
    procs.node(cfg_path, "a")
    procs.node(cfg_path, "b")
    wait_for(lambda: st(cfg, "a")["state"] == "normal", 20, "normal state")
    wait_for(lambda: st(cfg, "b")["state"] == "normal", 20, "b in sync")
    return cfg_path, cfg


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
        ("[[step]]\nnode = 'a'\nsignal = 'KILL'\nwait = 1", "wait must be true or false"),
        ("[[step]\n", "invalid TOML"),
    ],
)
def test_bad_plans_are_refused(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_plan(text, NODES)


class FakeTime:
    """A clock that moves only when the plan sleeps, and a pool whose steps
    run when submitted but count as finished only once the clock has passed
    their duration: a restart that takes 3 s, in no time."""

    def __init__(self, durations: dict[str, float] | None = None) -> None:
        self.now = 100.0
        self.durations = durations or {}
        self.pending: list[tuple[float, Future[str], str | Exception]] = []
        self.started: list[tuple[float, str]] = []  # (offset, step) as `do` saw them

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


class FakePool(Executor):
    def __init__(self, t: FakeTime) -> None:
        self.t = t

    def submit(  # type: ignore[override]
        self, fn: Callable[[Step], str], step: Step
    ) -> Future[str]:
        fut: Future[str] = Future()
        self.t.started.append((round(self.t.now - 100.0, 6), step.describe()))
        try:
            outcome: str | Exception = fn(step)
        except ZmqfailError as exc:
            outcome = exc
        self.t.pending.append(
            (self.t.now + self.t.durations.get(step.describe(), 0.0), fut, outcome)
        )
        self.t._settle()
        return fut


def run(steps: list[Step], t: FakeTime, do: Callable[[Step], str]) -> tuple[int, list[Any]]:
    reports: list[Any] = []

    def report(began: float, step: Step, result: str) -> None:
        reports.append((round(began, 6), step.describe(), result))

    failed = run_plan(steps, do, t.clock, t.sleep, report, FakePool(t))
    return failed, reports


def test_a_long_step_delays_nothing_after_it() -> None:
    """The bug of issue 13: a STOP planned at 7 s ran at 9.46 s after a restart."""
    t = FakeTime({"restart a": 3.0})
    steps = [
        Step(0.0, "a", signal="KILL"),
        Step(4.0, "a", restart=True),
        Step(7.0, "b", signal="STOP"),
        Step(9.0, "b", signal="CONT"),
    ]
    failed, reports = run(steps, t, lambda s: f"did {s.describe()}")
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


def test_a_step_that_waits_holds_the_later_ones() -> None:
    t = FakeTime({"restart a (the plan waits for it)": 3.0})
    steps = [
        Step(1.0, "a", restart=True, wait=True),
        Step(2.0, "b", signal="STOP"),
        Step(2.5, "b", signal="CONT"),
    ]
    failed, reports = run(steps, t, lambda s: "ok")
    assert failed == 0
    (_, restart), (stop_at, stop), (cont_at, _) = t.started
    assert restart.startswith("restart a") and stop == "signal STOP to b"
    # The STOP waited for the restart to finish at 4.0 (seen within one look).
    assert 4.0 <= stop_at < 4.0 + 0.06 and cont_at == stop_at
    assert reports[0][1].startswith("restart a")


def test_a_failed_step_is_reported_and_the_plan_goes_on() -> None:
    steps = [
        Step(0.0, "a", signal="STOP"),
        Step(0.0, "b", signal="KILL"),
        Step(1.0, "a", signal="CONT"),
    ]

    def do(s: Step) -> str:
        if s.node == "b":
            raise ZmqfailError("node b is not running")
        return "ok"

    failed, reports = run(steps, FakeTime(), do)
    assert failed == 1
    assert [r[2] for r in reports] == ["ok", "FAILED: node b is not running", "ok"]


def test_the_real_pool_runs_steps_side_by_side() -> None:
    """Without an injected pool every step gets a thread: a step that blocks
    does not keep the next one from starting."""
    import threading
    import time

    release = threading.Event()
    seen: list[str] = []

    def do(s: Step) -> str:
        seen.append(s.node)
        if s.node == "a":
            assert release.wait(10), "the step after it never ran"
            return "slow done"
        release.set()
        return "fast done"

    reports: list[str] = []
    steps = [Step(0.0, "a", restart=True), Step(0.05, "b", signal="STOP")]
    failed = run_plan(steps, do, time.monotonic, time.sleep, lambda b, s, r: reports.append(r))
    assert failed == 0 and seen == ["a", "b"] and sorted(reports) == ["fast done", "slow done"]


def test_primary_means_the_one_at_the_highest_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted old primary may claim the role at its old epoch for a moment."""
    from zmqfail.cli import killcmd

    rows = [
        {"name": "a", "role": "primary", "state": "primary_only", "epoch": 1},
        {"name": "b", "role": "primary", "state": "backup_only", "epoch": 2},
        {"name": "c", "role": "backup", "state": "unreachable", "epoch": None},
    ]
    monkeypatch.setattr(killcmd, "cluster_status", lambda *a, **k: rows)
    cfg = config.loads(config.render(nodes=3, base_port=6000), Path("."))
    assert killcmd.resolve(cfg, "primary") == "b"
    assert killcmd.resolve(cfg, "a") == "a"
    with pytest.raises(ZmqfailError, match="no reachable node is backup"):
        killcmd.resolve(cfg, "backup")


# ------------------------------------------------------------------ live forms
def test_link_cuts_move_replication_and_isolate(
    procs: Procs, cluster_dir: Callable[..., Path]
) -> None:
    cfg_path, cfg = pair(procs, cluster_dir)
    out = zk(cfg_path, "b", "--link", "main")
    assert out.returncode == 0, out.stderr
    assert "main link cut at b" in out.stdout
    wait_for(lambda: st(cfg, "a")["replication_link"] == "failsafe", 10, "failsafe carries")
    assert st(cfg, "b")["cut_links"] == ["main"]
    assert zk(cfg_path, "b", "--link", "main", "--heal").returncode == 0
    wait_for(lambda: st(cfg, "a")["replication_link"] == "main", 10, "main again")
    # Both links cut at the primary: it runs alone.
    for link in ("main", "failsafe"):
        # Long enough to overlap even when each CLI call takes seconds to start.
        assert zk(cfg_path, "primary", "--link", link, "--for", "4.0").returncode == 0
    wait_for(lambda: st(cfg, "a")["state"] == "primary_only", 10, "a primary-only")
    # The cuts heal by themselves and the pair is whole again.
    wait_for(lambda: st(cfg, "a")["cut_links"] == [], 10, "self-heal")
    wait_for(lambda: st(cfg, "a")["state"] == "normal", 20, "normal again")
    # Cutting the clients channel drops client traffic at that node.
    assert zk(cfg_path, "a", "--link", "clients", "--for", "0.5").returncode == 0
    assert st(cfg, "a")["cut_links"] == ["clients"]


def test_signals_and_restart(procs: Procs, cluster_dir: Callable[..., Path]) -> None:
    cfg_path, cfg = pair(procs, cluster_dir)
    out = zk(cfg_path, "backup", "--signal", "STOP")
    assert out.returncode == 0 and "SIGSTOP sent to b" in out.stdout, out.stderr
    wait_for(lambda: st(cfg, "a")["state"] == "primary_only", 10, "backup frozen")
    assert zk(cfg_path, "b", "--signal", "CONT").returncode == 0
    wait_for(lambda: st(cfg, "a")["state"] == "normal", 20, "backup back")
    out = zk(cfg_path, "b", "--signal", "KILL")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: st(cfg, "b")["state"] == "unreachable", 10, "b dead")
    out = zk(cfg_path, "b", "--restart")
    assert out.returncode == 0 and "b restarted" in out.stdout, out.stderr
    wait_for(lambda: st(cfg, "b")["state"] == "normal", 20, "b rejoined")
    # Restarting the primary with no clients: nobody votes for a takeover, and
    # the restarted primary, holding everything (all flushed while idle), leads
    # again; the pair is whole.
    before = st(cfg, "a")["pid"]
    out = zk(cfg_path, "primary", "--restart")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: st(cfg, "a")["state"] == "normal", 20, "a primary again")
    assert st(cfg, "a")["pid"] != before and st(cfg, "a")["role"] == "primary"
    wait_for(lambda: st(cfg, "b")["state"] == "normal", 20, "b follows")
    # Errors are one line, never a traceback.
    for args in (("zz", "--signal", "KILL"), ("a",), ("a", "--heal"), ("--plan", "/nope")):
        res = zk(cfg_path, *args)
        assert res.returncode != 0, args
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_plan_runs_steps_in_order(
    procs: Procs, cluster_dir: Callable[..., Path], tmp_path: Path
) -> None:
    cfg_path, cfg = pair(procs, cluster_dir)
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[[step]]\nat = 0\nnode = "b"\nsignal = "STOP"\n'
        '[[step]]\nat = 0.6\nnode = "b"\nsignal = "CONT"\n'
        '[[step]]\nat = 0.8\nnode = "a"\nlink = "main"\nfor = 0.5\n'
    )
    out = zk(cfg_path, "--plan", str(plan))
    assert out.returncode == 0, out.stderr
    # One line per step as it finishes (the CONT waits out a status call to the
    # frozen node, so the cut may finish first), stamped with when it began.
    lines = sorted(out.stdout.strip().splitlines())
    assert len(lines) == 3
    assert "signal STOP to b" in lines[0] and "signal CONT to b" in lines[1]
    assert "cut main link at a" in lines[2]
    times = [float(line.split("s]")[0].strip("[ ")) for line in lines]
    for began, planned in zip(times, (0.0, 0.6, 0.8), strict=True):
        assert planned <= began < planned + 0.5, lines
    wait_for(lambda: st(cfg, "a")["state"] == "normal", 20, "whole again")
    wait_for(lambda: st(cfg, "b")["state"] == "normal", 20, "b resumed and in sync")


def test_the_shipped_example_plan_is_valid() -> None:
    from conftest import ROOT

    from zmqfail.chaos import load_plan

    steps = load_plan(ROOT / "etc" / "faults.toml", ("a", "b"))
    assert [s.at for s in steps] == sorted(s.at for s in steps) and len(steps) == 5
