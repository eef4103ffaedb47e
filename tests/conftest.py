"""Shared fixtures: random free ports, ZeroMQ sockets closed with linger 0,
clusters on loopback in temporary directories, and processes that are always
ended by the test that started them, also on failure."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import zmq
from hypothesis import settings

from zmqfail import config
from zmqfail.client.core import Failover
from zmqfail.cluster import Cluster
from zmqfail.netutil import SLICE_ENV, free_base_port

ROOT = Path(__file__).resolve().parent.parent

# Under pytest-xdist each worker draws ports from its own part of the range,
# it and every process it starts (see zmqfail.netutil).
if "PYTEST_XDIST_WORKER" in os.environ:  # "gw0", "gw1", ...
    _index = int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw"))
    os.environ[SLICE_ENV] = f"{_index}/{os.environ['PYTEST_XDIST_WORKER_COUNT']}"
BUY = {
    "op": "new",
    "instrument": "ABC",
    "side": "buy",
    "type": "limit",
    "qty": 10,
    "price": "10.00",
}


T = TypeVar("T")

# Property tests give their example counts as examples(N), N being what CI
# runs; `pytest --hypothesis-profile=thorough` runs ten times as many (and
# scales those tests' timeouts by example_scale()) for a deeper look by hand.
settings.register_profile("thorough", max_examples=1000)


def example_scale() -> int:
    """The loaded profile's max_examples over Hypothesis's default (100)."""
    return max(1, settings().max_examples // 100)


def examples(n: int) -> int:
    return n * example_scale()


def wait_for(
    cond: Callable[[], object], timeout: float, what: str, interval: float = 0.02
) -> object:
    """Poll `cond` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def moves(failovers: Iterable[Failover]) -> list[str]:
    """The servers a client moved to, from its failovers. A client that heard
    nothing for client_timeout_ms (150 ms: a busy machine can stall a node that
    long) searches and may find the same server again: a failover in its log,
    but no move."""
    return [f.to_server for f in failovers if f.to_server != f.from_server]


def run_zmqfail(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m zmqfail ARGS` to the end, with plain output (no forced colour,
    no COLUMNS from the caller's terminal)."""
    base = dict(os.environ if env is None else env)
    for key in ("FORCE_COLOR", "COLUMNS"):
        base.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "zmqfail", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=base,
        cwd=cwd,
    )


@pytest.fixture(autouse=True)
def private_client_state(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`zmqfail client ...` keeps the user's client id and msg_ids under
    $XDG_STATE_HOME; tests (and the commands they start) keep theirs apart."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """No log output for the test (the simulator's campaigns log every
    transition of every run)."""
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


@pytest.fixture
def zctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    ctx.setsockopt(zmq.LINGER, 0)
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Callable[..., Path]:
    """Write a cluster config in tmp_path; returns the config path."""

    def make(nodes: int = 2, app: str = "orders", **kw: object) -> Path:
        base = free_base_port(10 * nodes + 5)
        text = config.render(nodes=nodes, base_port=base, app=app)
        for key, value in kw.items():
            section, name = key.split("__")
            pattern = re.compile(rf"^{name} = .*$", re.M)
            head, sep, rest = text.partition(f"[{section}]")
            if pattern.search(rest.split("\n[", 1)[0]):
                rest = pattern.sub(f"{name} = {value}", rest, count=1)
                text = head + sep + rest
            else:
                text = text.replace(f"[{section}]", f"[{section}]\n{name} = {value}", 1)
        path = tmp_path / "zmqfail.toml"
        path.write_text(text)
        return path

    return make


PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent(parent: int) -> Callable[[], None]:
    """What a child runs before exec: the kernel kills it when the thread that
    started it (this test run) dies, so a killed pytest leaves no node behind."""

    def preexec() -> None:
        assert _LIBC is not None
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # it died before the request was made
            os._exit(1)

    return preexec


class Procs:
    """Processes started by a test; all are killed at teardown, and by the
    kernel if the test run itself is killed (Linux)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, *args: str, log: str = "proc", prefix: tuple[str, ...] = ()
    ) -> subprocess.Popen[bytes]:
        out = open(self.tmp / f"{log}.log", "ab")  # noqa: SIM115 - closed by the child/GC
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        p = subprocess.Popen(
            [*prefix, sys.executable, "-m", "zmqfail", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.tmp,
            start_new_session=True,
            preexec_fn=None if _LIBC is None else _die_with_parent(os.getpid()),
        )
        self.procs.append(p)
        return p

    def node(self, cfg: Path, name: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        args = ("node", "--config", str(cfg), "--name", name)
        return self.start(*args, log=f"node-{name}", prefix=prefix)

    def log_text(self, log: str) -> str:
        p = self.tmp / f"{log}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop_all(self) -> None:
        # Nodes started by the tool under test (`zmqfail kill --restart`) are not
        # our children: find them by the pid files in this test's data dirs.
        for pidfile in self.tmp.glob("**/node.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().strip())
                # A stale pid file may name a reused pid: only kill our own nodes.
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"zmqfail" in cmdline and str(self.tmp).encode() in cmdline:
                    os.kill(pid, signal.SIGKILL)
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                p.kill()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    ps = Procs(tmp_path)
    try:
        yield ps
    finally:
        ps.stop_all()


MakeCluster = Callable[..., Cluster]


@pytest.fixture
def cluster(procs: Procs) -> MakeCluster:
    """The package's cluster helper (`zmqfail.cluster`) on a config file, its
    nodes started through `procs`, so every one is killed at teardown, also
    on failure. `prefix`: a command to run a node's process under, by name
    (a network namespace); `sole_owner=False` when a tool under test restarts
    nodes itself."""

    def make(
        cfg_path: Path,
        sole_owner: bool = True,
        prefix: dict[str, tuple[str, ...]] | None = None,
    ) -> Cluster:
        before = dict(prefix or {})

        def spawn(name: str) -> subprocess.Popen[bytes]:
            return procs.node(cfg_path, name, prefix=before.get(name, ()))

        return Cluster(config.load(cfg_path), spawn, sole_owner=sole_owner)

    return make


class NodeThread:
    """A Node running its poll loop on a thread of the test process."""

    def __init__(self, cfg: config.ClusterConfig, name: str) -> None:
        from zmqfail.node.server import Node

        self.node = Node(cfg, name, ctx=zmq.Context())
        self.node.open()
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run, name=f"node-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.rc = self.node.run()

    def wait_state(self, *states: str, timeout: float = 10.0) -> None:
        wait_for(lambda: self.node.state in states, timeout, f"{self.node.name} in {states}")

    def wait_active(self, timeout: float = 10.0) -> None:
        wait_for(lambda: self.node.active, timeout, f"{self.node.name} to serve")

    def stop(self) -> None:
        self.node.stop()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive(), "node thread did not stop"
        self.node.ctx.destroy(linger=0)


@pytest.fixture
def node_threads() -> Iterator[Callable[[config.ClusterConfig, str], NodeThread]]:
    started: list[NodeThread] = []

    def start(cfg: config.ClusterConfig, name: str) -> NodeThread:
        nt = NodeThread(cfg, name)
        started.append(nt)
        return nt

    yield start
    for nt in started:
        if nt.thread.is_alive():
            nt.stop()


class Load:
    """Orders from a client on a background thread; records every acknowledged reply."""

    def __init__(self, cfg: config.ClusterConfig, window: int = 16, seed: int = 1) -> None:
        from zmqfail.client.sync import Client

        self.client = Client(cfg, timeout=10.0, window=window)
        self.acked: dict[int, dict[str, object]] = {}  # msg_id -> result
        self.replies: list[tuple[float, str, int, int]] = []  # (time, server, epoch, msg_id)
        self.errors: list[str] = []
        self.stop_event = threading.Event()
        self.seed = seed
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import random

        from zmqfail.cli.demo import random_order

        rng = random.Random(self.seed)
        c = self.client
        try:
            while not self.stop_event.is_set():
                c.submit(random_order(rng, config.DEFAULT_INSTRUMENTS))
                for rep in c.poll(0):
                    self._take(rep)
            while c.session.outstanding:
                for rep in c.poll(10.0, raise_on_timeout=True):
                    self._take(rep)
        except Exception as exc:  # reported by stop()
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _take(self, rep: object) -> None:
        from zmqfail.protocol import Reply

        assert isinstance(rep, Reply)
        if rep.status != "ok":
            self.errors.append(f"msg {rep.msg_id}: {rep.status} {rep.result}")
        self.acked[rep.msg_id] = rep.result
        self.replies.append((time.monotonic(), rep.server, rep.epoch, rep.msg_id))

    def count(self) -> int:
        return len(self.acked)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=60)
        self.client.close()
        assert not self.thread.is_alive(), "load thread did not finish"
        assert not self.errors, self.errors


StartNode = Callable[[config.ClusterConfig, str], NodeThread]


def _tree_cpu() -> float:
    """CPU seconds of this process (all its threads) and of its reaped children
    (nodes and tools a test started and waited for)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


_PYTHONS_STARTED = [0]  # Python processes this process started (see _count_pythons)


def _count_pythons(event: str, args: tuple[object, ...]) -> None:
    """Audit hook: each Python child costs most of a second of CPU to import
    zmqfail before it does anything, so the log counts them."""
    if event == "subprocess.Popen":
        argv = args[1] if isinstance(args[1], list | tuple) else [args[1]]
        # [*prefix, python, ...]: a command to run it under (a network namespace)
        if any("python" in str(a) for a in argv[:5]):
            _PYTHONS_STARTED[0] += 1


if os.environ.get("ZMQFAIL_TEST_CPU_LOG"):
    sys.addaudithook(_count_pythons)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files of few tests first, files of many last (the order within a file
    kept). Few tests a file are the long ones (processes under load, a
    campaign); many are quick (property and unit tests). pytest-xdist hands
    tests out in this order, so each worker's last tests are short ones and
    neither waits long on the other's last process test."""
    per_file = collections.Counter(item.path for item in items)
    items.sort(key=lambda item: per_file[item.path])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """With ZMQFAIL_TEST_CPU_LOG=FILE, append each test's CPU (set-up, call and
    tear-down, its processes included), wall time and the Python processes it
    started to FILE, a tab-separated line a test: the suite is CPU-bound on a
    shared machine, where wall times alone say little about what a test costs
    (tools/test_cpu.py sums it up)."""
    path = os.environ.get("ZMQFAIL_TEST_CPU_LOG")
    if not path:
        yield
        return
    cpu, wall, pythons = _tree_cpu(), time.monotonic(), _PYTHONS_STARTED[0]
    yield
    cpu, wall = _tree_cpu() - cpu, time.monotonic() - wall
    pythons = _PYTHONS_STARTED[0] - pythons
    worker = os.environ.get("PYTEST_XDIST_WORKER", "-")
    with open(path, "a") as out:
        out.write(f"{cpu:.3f}\t{wall:.3f}\t{worker}\t{pythons}\t{item.nodeid}\n")
