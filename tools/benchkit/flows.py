"""The flows the bench can measure, each a set-up that yields a way to run
one closed-loop client process at a given window against it."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from zmqfail import security
from zmqfail.config import Durability
from zmqfail.failover.state import State
from zmqfail.netutil import free_base_port

from . import bare, peers
from .cluster import Cluster, drive_aio, drive_client, drive_per_message
from .meter import Timing
from .procs import BenchError, Reaper

# flow name -> what it is, as the table and the docs say it
FLOWS: dict[str, str] = {
    "bare": "bare ZeroMQ flow, one frame per request (no engine, no log)",
    "batched": "bare ZeroMQ flow, one frame per batch on every hop",
    "single": "zmqfail single node, fsync before ack",
    "normal": "zmqfail normal state: primary + backup",
    "aio": "zmqfail normal state, the asyncio client (a coroutine per request in flight)",
    "disk": 'zmqfail normal state, [flush] durability = "disk" (fsync on both before ack)',
    "curve": "zmqfail normal state, CurveZMQ on clients, replication and control",
    "pysyncobj": "PySyncObj, 2 nodes, ack after commit",
    "redis": "Redis primary + replica, SET + WAIT 1 0",
}
Run = Callable[[int, Timing], dict[str, Any]]


def on_disk(text: str) -> str:
    """The generated config with `[flush] durability = "disk"`."""
    memory, disk = (f'durability = "{d.value}"' for d in (Durability.MEMORY, Durability.DISK))
    if memory not in text:
        raise BenchError(f"the generated config has no '{memory}' line to change")
    return text.replace(memory, disk, 1)


def secured(text: str) -> str:
    """The generated config with the `[security]` table `config init
    --secure` writes (CURVE on every channel of a pair)."""
    if "[security]" in text:
        raise BenchError("the generated config has a [security] table already")
    return text + "\n".join(security.render(witness=False)) + "\n"


def _keys(directory: Path) -> None:
    security.generate_cluster(directory / "keys", ["a", "b"])


def _client_run(
    reaper: Reaper, target: Callable[..., dict[str, Any]], where: Any, name: str
) -> Run:
    def run(window: int, timing: Timing) -> dict[str, Any]:
        limit = timing.warmup + timing.seconds + timing.drain + 60
        return reaper.call(target, where, window, timing, 1, timeout=limit, name=f"{name} client")

    return run


@contextlib.contextmanager
def _bare(reaper: Reaper, primary: Callable[[int, Any], None]) -> Iterator[str]:
    port = free_base_port(3)
    evs = [mp.Event(), mp.Event()]
    ps = [
        reaper.process(bare.backup, port, evs[0], name="bare-backup"),
        reaper.process(primary, port, evs[1], name="bare-primary"),
    ]
    try:
        for e in evs:
            if not e.wait(20):
                raise BenchError("a bare-flow process did not start")
        yield f"tcp://127.0.0.1:{port}"
    finally:
        for p in ps:
            reaper.stop(p)


@contextlib.contextmanager
def _cluster(
    reaper: Reaper,
    start: list[str],
    tune: Callable[[str], str] | None = None,
    prepare: Callable[[Path], None] | None = None,
) -> Iterator[Cluster]:
    cl = Cluster(reaper, 2, start, tune, prepare)
    try:
        if len(start) == 2:
            cl.wait_state(start[0], State.NORMAL)
        yield cl
    finally:
        cl.close()


def _ends(cl: Cluster, start: list[str]) -> list[str]:
    return [cl.cfg.node(n).client for n in start]


@contextlib.contextmanager
def open_flow(name: str, reaper: Reaper, workdir: Path) -> Iterator[Run]:
    """Set up flow ``name``; raises peers.Skip when it cannot run here."""
    if name == "bare":
        with _bare(reaper, bare.per_message_primary) as ep:
            yield _client_run(reaper, drive_per_message, [ep], name)
    elif name == "batched":
        with _bare(reaper, bare.batched_primary) as ep:
            yield _client_run(reaper, bare.drive_batched, ep, name)
    elif name == "single":
        with _cluster(reaper, ["a"]) as cl:
            yield _client_run(reaper, drive_client, _ends(cl, ["a"]), name)
    elif name == "normal":
        with _cluster(reaper, ["a", "b"]) as cl:
            yield _client_run(reaper, drive_client, _ends(cl, ["a", "b"]), name)
    elif name == "aio":
        with _cluster(reaper, ["a", "b"]) as cl:
            yield _client_run(reaper, drive_aio, _ends(cl, ["a", "b"]), name)
    elif name == "disk":
        with _cluster(reaper, ["a", "b"], on_disk) as cl:
            yield _client_run(reaper, drive_client, _ends(cl, ["a", "b"]), name)
    elif name == "curve":
        # The client reads its keys and the servers' from the config.
        with _cluster(reaper, ["a", "b"], secured, _keys) as cl:
            yield _client_run(reaper, drive_client, cl.cfg, name)
    elif name == "pysyncobj":
        with peers.pysyncobj_pair(reaper) as eps:
            yield _client_run(reaper, drive_per_message, eps, name)
    elif name == "redis":
        with peers.redis_pair(reaper, workdir) as port:
            yield _client_run(reaper, peers.drive_redis, port, name)
    else:
        raise ValueError(f"unknown flow {name!r}")
