"""zmqfail itself under the bench: nodes started through the CLI (as an
operator would), loaded through the public ``Client``. Neither depends on how
the node works inside, so the bench keeps working while the node changes."""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from zmqfail import config
from zmqfail.cli.common import spawn_node
from zmqfail.cli.demo import random_order
from zmqfail.client.control import node_status
from zmqfail.client.sync import Client
from zmqfail.netutil import free_base_port
from zmqfail.protocol import STATUS_OK

from .meter import Meter, Timing
from .procs import BenchError, Reaper, check_interrupted

READY_STATES = ("primary_only", "normal", "standby", "syncing")


def drive_client(endpoints: list[str], window: int, timing: Timing, seed: int) -> dict[str, Any]:
    """One closed-loop client process: keep ``window`` requests in flight
    through the library's Client (one frame per request)."""
    rng = random.Random(seed)
    instruments = config.DEFAULT_INSTRUMENTS
    clock = time.perf_counter
    with Client(endpoints, timeout=10.0, window=window) as c:
        c.connect()
        m = Meter(timing, clock())
        while m.running(clock()):
            while len(c.session.outstanding) < window:
                mid = c.submit(random_order(rng, instruments))
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


class Cluster:
    """A throw-away cluster directory with some of its nodes running. The
    directory is removed by close() unless a step failed (it names it then)."""

    def __init__(self, reaper: Reaper, nodes: int, start: list[str]) -> None:
        self.reaper = reaper
        self.dir = Path(tempfile.mkdtemp(prefix="zmqfail-bench-"))
        self.path = self.dir / "zmqfail.toml"
        self.path.write_text(config.render(nodes=nodes, base_port=free_base_port(40)))
        self.cfg = config.load(self.path)
        self.failed = False
        self.procs: dict[str, Any] = {}
        try:
            for n in start:
                self.start(n)
            for n in start:
                self.wait_for(n, lambda st: st["state"] in READY_STATES, "ready", 20)
        except BaseException:
            self.failed = True
            self.close()  # a run goes on after a failed flow: no node left behind
            raise

    def start(self, name: str) -> Any:
        p = spawn_node(self.path, name, self.dir / f"{name}.log")
        self.procs[name] = self.reaper.adopt(p)
        return p

    def kill(self, name: str) -> None:
        self.reaper.stop(self.procs.pop(name))

    def wait_for(self, name: str, cond: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            check_interrupted()
            if cond(node_status(self.cfg.node(name), digest=False, timeout=0.3)):
                return
            time.sleep(0.02)
        self.failed = True
        raise BenchError(f"node {name} did not become {what}; see {self.dir}")

    def wait_state(self, name: str, state: str, timeout: float = 30) -> None:
        self.wait_for(name, lambda st: st["state"] == state, state, timeout)

    def wait_role(self, name: str, role: str, timeout: float, state: str | None = None) -> None:
        def ok(st: dict[str, Any]) -> bool:
            return bool(st.get("role") == role and (state is None or st["state"] == state))

        self.wait_for(name, ok, f"{role}/{state}", timeout)

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name)
        if not self.failed:
            shutil.rmtree(self.dir, ignore_errors=True)
