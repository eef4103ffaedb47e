"""`tools/bench` as a user runs it: `compare` in a tiny mode (one window, half
a second a row), `--hog`, and Ctrl-C or SIGTERM in the middle of a run ending
every process the bench started. Nothing here times anything: the rows must
have the right shape and every request must be answered."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, wait_for

pytestmark = [pytest.mark.timeout(240), pytest.mark.process]

BENCH = [sys.executable, str(ROOT / "tools" / "bench.py")]
OWN_FLOWS = ("bare", "batched", "single", "normal", "disk", "curve")
PEERS = ("pysyncobj", "redis")


def run_bench(args: list[str], timeout: float = 200) -> tuple[int, str]:
    p = subprocess.Popen(
        BENCH + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # The nodes it started have sessions of their own: not in its group.
        for pid in _descendants(p.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise
    return p.returncode, out


def test_compare_measures_every_flow_and_answers_every_request(tmp_path: Path) -> None:
    out, png = tmp_path / "compare.json", tmp_path / "compare.png"
    args = ["compare", "--seconds", "0.5", "--warmup", "0.2", "--windows", "4"]
    rc, text = run_bench([*args, "--json", str(out), "--plot", str(png)])
    assert rc == 0, text
    res = json.loads(out.read_text())
    assert res["windows"] == [4] and len(res["load_before"]) == 3
    assert 0 <= res["steal_share"] <= 1 and "CPU time stolen by the host" in text
    rows = {r["flow"]: r for r in res["rows"]}
    assert [s for s in res["skipped"] if s["status"] != "skipped"] == []  # no flow failed
    skipped = {s["flow"]: s["reason"] for s in res["skipped"]}
    assert set(rows) | set(skipped) == set(OWN_FLOWS + PEERS)
    assert set(OWN_FLOWS) <= set(rows), skipped  # zmqfail and the bare flows never skip
    for name, reason in skipped.items():
        # A peer is skipped only for something missing, and says how to get it.
        assert name in PEERS and "not installed" in reason, reason
        assert "pip install -e '.[bench]'" in reason or "apt-get install redis-server" in reason
        assert f"{name}: skipped: {reason}" in text
    for name, r in rows.items():
        assert (r["window"], r["hogs"]) == (4, 0), r
        assert r["sent"] > 0 and r["answered"] == r["sent"] and r["unanswered"] == 0, r
        assert r["errors"] == 0 and r["throughput"] > 0, r
        assert 0 < r["p50_us"] <= r["p99_us"], r
        assert r["cpu_us"] > 0, r  # every flow's processes, the client's included
        # the library's Client counts switches of server; the other drivers cannot
        client_driven = name in ("bare", "single", "normal", "disk", "curve", "pysyncobj")
        assert isinstance(r["failovers"], int) if client_driven else r["failovers"] is None
        base = rows["normal"]["throughput"]
        assert r["x_normal_throughput"] == pytest.approx(r["throughput"] / base)
        assert f"| {name} | 4 | {r['throughput']:,} |" in text
    assert rows["normal"]["x_normal_p99_us"] == 1.0
    if importlib.util.find_spec("matplotlib") is None:
        assert "no plot: matplotlib is not installed" in text and not png.exists()
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hog_measures_each_row_quiet_and_under_the_hogs(tmp_path: Path) -> None:
    out = tmp_path / "hog.json"
    args = ["batched", "--seconds", "0.5", "--warmup", "0.2", "--windows", "2", "--hog", "2"]
    rc, text = run_bench([*args, "--json", str(out)])
    assert rc == 0, text
    rows = json.loads(out.read_text())["rows"]
    assert [(r["flow"], r["window"], r["hogs"]) for r in rows] == [
        ("batched", 2, 0),
        ("batched", 2, 2),
    ]
    assert all(r["unanswered"] == 0 and r["errors"] == 0 for r in rows)
    assert rows[1]["x_quiet"] == pytest.approx(rows[1]["throughput"] / rows[0]["throughput"])
    assert "batched window   2 +2 hogs:" in text
    # Measured under the hogs too (that they are left out of it:
    # test_bench_shards.py::test_a_rows_cpu_is_its_flows_never_the_hogs).
    assert rows[0]["cpu_us"] > 0 and rows[1]["cpu_us"] > 0, rows


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(d.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name; [] when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def _started_at(pid: int) -> str | None:
    """When the process started (clock ticks since boot): with its pid, it
    names one process, through an exec (a node is a fork of the bench until it
    execs) and never a later process given the same pid."""
    fields = _stat(pid)
    return fields[19] if fields else None


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class Started:
    """The bench under test and every descendant it was seen with, ended at
    teardown if the test failed before the bench did it."""

    def __init__(self) -> None:
        self.bench: subprocess.Popen[str] | None = None
        self.seen: dict[int, str] = {}  # pid -> start time

    def look(self) -> set[int]:
        assert self.bench is not None
        for pid in _descendants(self.bench.pid):
            started = _started_at(pid)
            if started is not None:
                self.seen.setdefault(pid, started)
        return set(self.seen)

    def running(self, pid: int) -> bool:
        return _alive(pid) and _started_at(pid) == self.seen[pid]

    def end_all(self) -> None:
        if self.bench is not None and self.bench.poll() is None:
            os.killpg(self.bench.pid, signal.SIGKILL)
            self.bench.wait()
        for pid in self.seen:
            with contextlib.suppress(OSError):
                if self.running(pid):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def started() -> Iterator[Started]:
    s = Started()
    try:
        yield s
    finally:
        s.end_all()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_bench_ends_every_process_it_started(
    sig: signal.Signals, tmp_path: Path, started: Started
) -> None:
    log = tmp_path / "bench.log"
    with open(log, "w") as f:
        p = started.bench = subprocess.Popen(
            [*BENCH, "normal", "--seconds", "60", "--windows", "8"],
            stdout=f, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip

    def nodes_and_client() -> bool:
        # Two nodes (their own sessions, once they have exec'd) and the client
        # process (a forked child: the bench's command line).
        cmds = [_cmdline(pid) for pid in started.look() if started.running(pid)]
        nodes = sum(b"zmqfail\x00node" in c for c in cmds)
        return nodes == 2 and len(cmds) > nodes and p.poll() is None

    wait_for(nodes_and_client, 60, "the bench to start the nodes and its client", interval=0.1)
    seen = started.look()
    # As a terminal's Ctrl-C does: the signal goes to the bench's process group
    # (its forked children too, which leave the stopping to the bench).
    os.killpg(p.pid, sig)
    assert p.wait(timeout=60) == 130, log.read_text()
    assert "interrupted; every process it started is stopped" in log.read_text()
    wait_for(lambda: not any(started.running(pid) for pid in seen), 10, "every child to be gone")


# A signal whose KeyboardInterrupt CPython drops: raised inside an at-fork hook
# (multiprocessing forks every client; logging registers such a hook), it is
# printed as "Exception ignored" and the bench measured its whole row.
LOST_INTERRUPT = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from benchkit import procs

def hook() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(100):  # the handler runs here, inside the hook
        pass

if sys.argv[2] == "planted":
    procs.check_interrupted = lambda: None
procs.interrupt_on_signals()
os.register_at_fork(after_in_parent=hook)
with procs.Reaper() as reaper:
    try:
        reaper.process(time.sleep, 0.5)
        reaper.call(dict, timeout=30)
    except KeyboardInterrupt:
        sys.exit(130)
print("carried on")
"""


@pytest.mark.parametrize("planted", [False, True])
def test_an_interrupt_lost_in_a_fork_hook_still_stops_the_bench(planted: bool) -> None:
    args = [str(ROOT / "tools"), "planted" if planted else "real"]
    p = subprocess.run(
        [sys.executable, "-c", LOST_INTERRUPT, *args], capture_output=True, text=True, timeout=60
    )
    assert "Exception ignored" in p.stderr and "KeyboardInterrupt: SIGINT" in p.stderr, p.stderr
    if planted:  # without the check, the bench carries on as if nothing came
        assert (p.returncode, p.stdout) == (0, "carried on\n"), p.stderr
    else:
        assert (p.returncode, p.stdout) == (130, ""), p.stderr
