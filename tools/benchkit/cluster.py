"""zmqfail itself under the bench: nodes started through the CLI (as an
operator would), loaded through the public ``Client``. Neither depends on how
the node works inside, so the bench keeps working while the node changes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing as mp
import queue
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from zmqfail import config
from zmqfail.cli.demo import random_order
from zmqfail.client.aio import AsyncClient
from zmqfail.client.sync import Client
from zmqfail.cluster import Cluster as NodeCluster
from zmqfail.cluster import spawn_node
from zmqfail.core.status import NodeStatus
from zmqfail.errors import ZmqfailError
from zmqfail.failover.state import Role, State
from zmqfail.protocol import STATUS_OK

from .meter import Meter, Timing
from .procs import BenchError, Reaper, check_interrupted

READY_STATES = frozenset({State.PRIMARY_ONLY, State.NORMAL, State.STANDBY, State.SYNCING})


def drive_client(
    endpoints: list[str] | config.ClusterConfig,
    window: int,
    timing: Timing,
    seed: int,
    per_message: bool = False,
) -> dict[str, Any]:
    """One closed-loop client process: keep ``window`` requests in flight
    through the library's Client, which sends what its window lets out in one
    frame (``per_message``: one frame per request, flushed at each submit, for
    the per-message bare flow and the peers' fronts, which take lone `req`
    frames only). A config instead of endpoints: the client takes its CURVE
    keys from it."""
    rng = random.Random(seed)
    instruments = config.DEFAULT_INSTRUMENTS
    clock = time.perf_counter
    with Client(endpoints, timeout=10.0, window=window) as c:
        c.connect()
        m = Meter(timing, clock())
        while m.running(clock()):
            while len(c.session.outstanding) < window:
                mid = c.submit(random_order(rng, instruments))
                if per_message:
                    c.flush()
                m.on_sent(mid, clock())
            for rep in c.poll(1.0):
                m.on_reply(rep.msg_id, clock(), rep.status == STATUS_OK)
        drain_end = clock() + timing.drain
        while m.in_flight and clock() < drain_end:
            for rep in c.poll(0.5):
                m.on_reply(rep.msg_id, clock(), rep.status == STATUS_OK)
    # A switch of server during a quiet bench is a false failover (or, for
    # PySyncObj, a re-election): the row says so.
    return {**m.result(), "failovers": len(c.failovers)}


def drive_per_message(
    endpoints: list[str] | config.ClusterConfig, window: int, timing: Timing, seed: int
) -> dict[str, Any]:
    """`drive_client` with one frame per request."""
    return drive_client(endpoints, window, timing, seed, per_message=True)


def drive_aio(endpoints: list[str], window: int, timing: Timing, seed: int) -> dict[str, Any]:
    """One client process of the asyncio client: ``window`` coroutines, each
    awaiting one request after another (its I/O thread batches what they
    have out at once)."""
    return asyncio.run(_aio_load(endpoints, window, timing, seed))


async def _aio_load(endpoints: list[str], window: int, timing: Timing, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    instruments = config.DEFAULT_INSTRUMENTS
    clock = time.perf_counter
    keys = itertools.count()
    c = AsyncClient(endpoints, timeout=10.0, window=window)
    try:
        await c.connect()
        m = Meter(timing, clock())

        async def one_in_flight() -> None:
            while m.running(clock()):
                key = next(keys)
                m.on_sent(key, clock())
                rep = await c.request(random_order(rng, instruments))
                m.on_reply(key, clock(), rep.status == STATUS_OK)

        await asyncio.gather(*(one_in_flight() for _ in range(window)))
    finally:
        await c.close()
    return {**m.result(), "failovers": len(c.failovers)}


def drive_until(cfg_path: str, window: int, stop: Any, out: Any) -> None:
    """Closed-loop load until `stop` is set; reports every change of server as
    (last reply from the old server, first reply from the new one)."""
    cfg = config.load(cfg_path)
    rng = random.Random(2)
    switches: list[tuple[float, float, str, str]] = []
    last_t, last_server, n, errors = 0.0, "", 0, 0
    with Client(cfg, timeout=30.0, window=window, lost_after=60.0) as c:
        c.connect()
        while not stop.is_set():
            while len(c.session.outstanding) < window:
                c.submit(random_order(rng, config.DEFAULT_INSTRUMENTS))
            for rep in c.poll(0.5):
                t = time.monotonic()
                n += 1
                if rep.status != STATUS_OK:
                    errors += 1
                if last_server and rep.server != last_server:
                    switches.append((last_t, t, last_server, rep.server))
                last_t, last_server = t, rep.server
        while c.session.outstanding:
            c.poll(5.0)
    out.put({"switches": switches, "replies": n, "errors": errors, "resends": c.session.resends})


@contextlib.contextmanager
def load_until_stopped(
    reaper: Reaper, cfg_path: Path, window: int, name: str
) -> Iterator[Callable[[], dict[str, Any]]]:
    """`drive_until` in a process of its own for the block; the block calls
    what it is given to stop the load and get its report. The process is
    ended on the way out whatever happened."""
    stop = mp.Event()
    q: mp.Queue[dict[str, Any]] = mp.Queue()
    driver = reaper.process(drive_until, str(cfg_path), window, stop, q, name=name)

    def finish() -> dict[str, Any]:
        stop.set()
        try:
            return q.get(timeout=60)
        except queue.Empty:
            raise BenchError(f"{name} did not report within 60 s") from None

    try:
        yield finish
    finally:
        stop.set()
        driver.join(timeout=30)  # it ends once its replies are in
        reaper.stop(driver)


class Cluster:
    """A throw-away cluster directory with some of its nodes running (through
    the library's cluster helper, the reaper holding every process). The
    directory is removed by close() unless a step failed (it names it then)."""

    def __init__(
        self,
        reaper: Reaper,
        nodes: int,
        start: list[str],
        tune: Callable[[str], str] | None = None,
        prepare: Callable[[Path], None] | None = None,
    ) -> None:
        """`tune` rewrites the generated config's text before any node starts
        (a scenario that compares settings); `prepare` is given the cluster's
        directory then (to write the keys a secured config names)."""
        self.reaper = reaper
        self.dir = Path(tempfile.mkdtemp(prefix="zmqfail-bench-"))
        self.nodes = NodeCluster.in_dir(self.dir, nodes, spawn=self._spawn)
        if prepare is not None:
            prepare(self.dir)
        if tune is not None:
            path = self.nodes.path
            path.write_text(tune(path.read_text()))
            self.nodes = NodeCluster(config.load(path), self._spawn, logs=self.dir)
        self.cfg = self.nodes.cfg
        self.path = self.nodes.path
        self.failed = False
        try:
            self.nodes.start(*start)
            for n in start:
                self.wait_for(n, lambda st: st.state in READY_STATES, "ready", 20)
        except BaseException:
            self.failed = True
            self.close()  # a run goes on after a failed flow: no node left behind
            raise

    def _spawn(self, name: str) -> subprocess.Popen[bytes]:
        p = spawn_node(self.path, name, self.dir / f"{name}.log")
        self.reaper.adopt(p)
        return p

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        return self.nodes.procs

    def start(self, name: str) -> None:
        self.nodes.start(name)

    def kill(self, name: str) -> None:
        self.reaper.stop(self.nodes.procs.pop(name))

    def primary(self) -> str:
        st = self.nodes.primary(timeout=0.5)
        if st is None:
            self.failed = True
            raise BenchError(f"no node serves; see {self.dir}")
        return st.name

    def wait_for(
        self, name: str, cond: Callable[[NodeStatus], bool], what: str, timeout: float
    ) -> None:
        def checked(st: NodeStatus) -> bool:
            check_interrupted()  # a dropped Ctrl-C still ends the wait
            return cond(st)

        try:
            self.nodes.wait_until(name, checked, what, timeout)
        except ZmqfailError as exc:
            self.failed = True
            raise BenchError(f"{exc}; see {self.dir}") from None

    def wait_state(self, name: str, state: State, timeout: float = 30) -> None:
        self.wait_for(name, lambda st: st.state is state, state.value, timeout)

    def wait_role(self, name: str, role: Role, timeout: float, state: State | None = None) -> None:
        def ok(st: NodeStatus) -> bool:
            return st.role is role and (state is None or st.state is state)

        self.wait_for(name, ok, f"{role.value}/{state.value if state else 'any'}", timeout)

    def close(self) -> None:
        for name in list(self.nodes.procs):
            self.kill(name)
        if not self.failed:
            shutil.rmtree(self.dir, ignore_errors=True)
