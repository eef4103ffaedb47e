"""A pair in the normal state whose two servers run a tracer of the bench's.

The tracer is a `sitecustomize` put on the servers' PYTHONPATH for their
start only (the client and every other process of the run are left alone):
it wraps what it measures inside the server when `TRACING`, and hands
`trace_at_exit` what to write on a clean stop (`PROLOGUE`, put before it,
defines both): `<name>.json` in the directory named by the environment
variable `ZMQFAIL_TRACE_OUT`. Nothing in zmqfail records anything for the bench.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zmqfail.config import ClusterConfig
from zmqfail.failover.state import State

from .cluster import Cluster, drive_client
from .meter import Timing
from .procs import BenchError, Reaper

OUT_VAR = "ZMQFAIL_TRACE_OUT"

# Put before every tracer: what each needs to tell a server from any other
# Python the run starts, and to write its trace on a clean stop.
PROLOGUE = f"""
import atexit, json, os, sys, time
TRACING = "node" in sys.argv and "--name" in sys.argv  # a server's process


def trace_at_exit(collect):
    def dump():
        name = sys.argv[sys.argv.index("--name") + 1]
        with open(os.path.join(os.environ["{OUT_VAR}"], name + ".json"), "w") as f:
            json.dump(collect(), f)
    atexit.register(dump)
"""


class TracedPair:
    def __init__(self, cluster: Cluster, out: Path) -> None:
        self.cluster = cluster
        self.out = out

    def stop_and_read(self) -> dict[str, Any]:
        """Stop both servers cleanly (each writes its trace then) and read them."""
        self.cluster.close()
        traces = {}
        for name in ("a", "b"):
            path = self.out / f"{name}.json"
            if not path.exists():
                raise BenchError(f"server {name} wrote no trace (did it stop cleanly?)")
            traces[name] = json.loads(path.read_text())
        return traces


@contextmanager
def traced_pair(reaper: Reaper, tracer: str, env: dict[str, str]) -> Iterator[TracedPair]:
    """Start a pair with `tracer` and `env` in its servers' environment; the
    pair is stopped on the way out whatever happened."""
    with tempfile.TemporaryDirectory(prefix="zmqfail-traced-") as tmp:
        site, out = Path(tmp) / "site", Path(tmp) / "out"
        site.mkdir()
        out.mkdir()
        (site / "sitecustomize.py").write_text(PROLOGUE + tracer)
        given = {"PYTHONPATH": os.pathsep.join(p for p in (str(site), _env("PYTHONPATH")) if p)}
        given.update(env, **{OUT_VAR: str(out)})
        saved = {k: os.environ.get(k) for k in given}
        os.environ.update(given)
        try:
            cluster = Cluster(reaper, 2, ["a", "b"])
        finally:  # only the servers get the tracer
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        pair = TracedPair(cluster, out)
        try:
            yield pair
        finally:
            cluster.close()


def normal_load(cfg: ClusterConfig, window: int, timing: Timing) -> dict[str, Any]:
    """The `normal` flow's client: `window` requests in flight."""
    return drive_client(cfg, window, timing, 1)


@dataclass
class LoadedRun:
    result: dict[str, Any]  # the client's
    traces: dict[str, Any]  # by server name
    primary: str
    backup: str
    started: float  # perf_counter when the client was started


def run_loaded(
    reaper: Reaper,
    tracer: str,
    env: dict[str, str],
    window: int,
    timing: Timing,
    name: str,
) -> LoadedRun:
    """A traced pair loaded by one client process (the `normal` flow's) for
    `timing`, then stopped, its traces read. The client's result carries the
    CPU its process spent (`cpu_s`, benchkit.procs)."""
    with traced_pair(reaper, tracer, env) as pair:
        cl = pair.cluster
        for node in ("a", "b"):  # the pair in the normal state before the load
            cl.wait_state(node, State.NORMAL)
        primary = cl.primary()
        t0 = time.perf_counter()
        limit = timing.warmup + timing.seconds + timing.drain + 60
        r = reaper.call(normal_load, cl.cfg, window, timing, timeout=limit, name=name)
        traces = pair.stop_and_read()
    return LoadedRun(r, traces, primary, "b" if primary == "a" else "a", t0)


def _env(key: str) -> str:
    return os.environ.get(key, "")
