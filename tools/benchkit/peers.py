"""The peers zmqfail is compared with, each replicating to one other process
and acknowledging a write only once the other holds it.

- PySyncObj (Raft in pure Python), 2 nodes: a replicated dict; the leader
  answers a request once the command is committed (both nodes have it, the
  majority of two) and applied. Clients reach it through the same ZeroMQ
  front and the same ``Client`` as zmqfail and the bare flow, so the client
  side costs the same; the front runs in the node process.
- Redis primary + replica: SET followed by WAIT 1 0 on the same connection,
  one connection per request in flight (WAIT blocks its connection), from
  one asyncio client process with redis-py.

Both come from the ``bench`` extra; redis-server from the system packages.
What is missing turns into a Skip with the command that installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import itertools
import os
import random
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq

from zmqfail import config
from zmqfail.cli.demo import random_order
from zmqfail.errors import ProtocolError
from zmqfail.netutil import free_base_port
from zmqfail.protocol import (
    STATUS_ERROR,
    STATUS_OK,
    Hello,
    Request,
    Welcome,
    decode_as,
    decode_request,
    encode_reply,
)

from .bare import answer_client, poller, ready_frames
from .meter import Meter, Timing
from .procs import BenchError, Reaper

INSTALL_EXTRA = ".venv/bin/pip install -e '.[bench]'"
# PySyncObj's own low-latency mode: each command is sent to the follower at
# once (and wakes the ticking thread) instead of waiting for the next periodic
# batch. Its default batches every 100 ms, i.e. 100 ms a request at any load.
PYSYNCOBJ_CONF: dict[str, Any] = {"appendEntriesUseBatch": False}


class Skip(Exception):
    """A flow that cannot run here; the message says why and how to fix it."""


def need_module(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        raise Skip(f"{name} is not installed: {INSTALL_EXTRA}")


# --- PySyncObj -----------------------------------------------------------------


def syncobj_node(name: str, raft_port: int, partner_port: int, front_port: int) -> None:
    """One Raft node with a ZeroMQ front for zmqfail clients.

    PySyncObj ticks on its own thread and calls back from it; ZeroMQ sockets
    stay with the thread that made them, so the callback hands each reply to
    the front thread over an inproc PUSH of its own."""
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

    class Orders(SyncObj):  # type: ignore[misc]
        def __init__(self) -> None:
            conf = SyncObjConf(dynamicMembershipChange=False, **PYSYNCOBJ_CONF)
            super().__init__(f"127.0.0.1:{raft_port}", [f"127.0.0.1:{partner_port}"], conf)
            self.orders: dict[str, Any] = {}

        @replicated  # type: ignore[untyped-decorator]
        def put(self, key: str, order: dict[str, Any]) -> int:
            self.orders[key] = order
            return len(self.orders)

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    fe = ctx.socket(zmq.ROUTER)
    fe.bind(f"tcp://127.0.0.1:{front_port}")
    replies = ctx.socket(zmq.PULL)
    replies.bind("inproc://replies")
    local = threading.local()

    def committed(ident: bytes, msg_id: int, result: Any, err: Any) -> None:
        push = getattr(local, "push", None)
        if push is None:
            push = local.push = ctx.socket(zmq.PUSH)
            push.connect("inproc://replies")
        status = STATUS_OK if err == FAIL_REASON.SUCCESS else STATUS_ERROR
        push.send_multipart((ident, encode_reply(msg_id, status, {}, 1, name)))

    obj = Orders()
    sockets = poller(fe, replies)
    while True:
        ev = dict(sockets.poll())
        if fe in ev:
            for ident, data in ready_frames(fe):
                msg = decode_request(data)
                if isinstance(msg, Request):
                    cb = functools.partial(committed, ident, msg.msg_id)
                    obj.put(f"{msg.client_id}:{msg.msg_id}", msg.body, callback=cb)
                else:  # only the ready leader takes requests
                    active = bool(obj._isLeader() and obj.isReady())
                    fe.send_multipart((ident, answer_client(msg, name, active)))
        if replies in ev:
            for frames in ready_frames(replies):
                fe.send_multipart(frames)


def _wait_leader(endpoints: list[str], timeout: float) -> None:
    """Until one node says it leads and is ready."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for ep in endpoints:
                s = ctx.socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 0)
                s.connect(ep)
                s.send(Hello("bench-probe", "").encode())
                ok = s.poll(300)
                frame = s.recv() if ok else b""
                s.close()
                with contextlib.suppress(ProtocolError):
                    if frame and decode_as(frame, Welcome).active:
                        return
            time.sleep(0.1)
    finally:
        ctx.destroy(linger=0)
    raise BenchError(f"no PySyncObj node became a ready leader within {timeout:.0f}s")


@contextlib.contextmanager
def pysyncobj_pair(reaper: Reaper) -> Iterator[list[str]]:
    """Two Raft nodes; yields both fronts once one leads. The client finds the
    leader as it finds zmqfail's primary (only the leader's front says it is
    active), and follows a new leader elected under load: a node stalled on a
    busy machine for longer than Raft's election timeout loses its lead."""
    need_module("pysyncobj")
    base = free_base_port(10)
    raft, front = (base, base + 1), (base + 2, base + 3)
    nodes = [
        reaper.process(syncobj_node, n, raft[i], raft[1 - i], front[i], name=f"pysyncobj-{n}")
        for i, n in enumerate(("a", "b"))
    ]
    endpoints = [f"tcp://127.0.0.1:{p}" for p in front]
    try:
        _wait_leader(endpoints, 30)
        yield endpoints
    finally:
        for p in nodes:
            reaper.stop(p)


# --- Redis -----------------------------------------------------------------------


def _redis_up(port: int, replica: bool) -> bool:
    import redis

    with contextlib.suppress(redis.RedisError):
        info = redis.Redis(port=port, socket_timeout=1).info("replication")
        if replica:
            return bool(info.get("master_link_status") == "up")
        return int(info.get("connected_slaves", 0)) >= 1
    return False


@contextlib.contextmanager
def redis_pair(reaper: Reaper, workdir: Path) -> Iterator[int]:
    """A primary and its replica, append-only file fsynced every second on
    both (as zmqfail's normal state logs without waiting for the disk);
    yields the primary's port."""
    need_module("redis")
    exe = shutil.which("redis-server")
    if exe is None:
        raise Skip("redis-server is not installed: apt-get install redis-server")
    base = free_base_port(4)
    ports = (base, base + 1)
    procs = []
    try:
        for i, role in enumerate(("primary", "replica")):
            d = workdir / f"redis-{role}"
            d.mkdir(parents=True, exist_ok=True)
            argv = [exe, "--port", str(ports[i]), "--bind", "127.0.0.1", "--dir", str(d)]
            argv += ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]
            if role == "replica":
                argv += ["--replicaof", "127.0.0.1", str(ports[0])]
            procs.append(reaper.popen(argv, d / "redis.log"))
        deadline = time.monotonic() + 20
        while not (_redis_up(ports[1], True) and _redis_up(ports[0], False)):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise BenchError(f"redis primary + replica did not come up; see {workdir}")
            time.sleep(0.1)
        yield ports[0]
    finally:
        for p in procs:
            reaper.stop(p)


def drive_redis(port: int, window: int, timing: Timing, seed: int) -> dict[str, Any]:
    """``window`` connections, each: SET then WAIT 1 0, pipelined in one round trip."""
    return asyncio.run(_drive_redis(port, window, timing, seed))


async def _drive_redis(port: int, window: int, timing: Timing, seed: int) -> dict[str, Any]:
    import redis.asyncio as aredis

    rng = random.Random(seed)
    instruments = config.DEFAULT_INSTRUMENTS
    client_id = f"redis-{os.getpid()}"
    ids = itertools.count(1)
    clock = time.perf_counter
    conns = [aredis.Redis(port=port, single_connection_client=True) for _ in range(window)]
    m = Meter(timing, clock())

    async def slot(r: Any) -> None:
        while m.running(clock()):
            mid = next(ids)
            value = Request(client_id, mid, random_order(rng, instruments)).encode()
            pipe = r.pipeline(transaction=False)
            pipe.set(f"{client_id}:{mid}", value)
            pipe.wait(1, 0)
            m.on_sent(mid, clock())
            stored, replicas = await pipe.execute()
            m.on_reply(mid, clock(), bool(stored) and int(replicas) >= 1)

    try:
        await asyncio.gather(*(slot(r) for r in conns))
    finally:
        for r in conns:
            await r.aclose()
    return m.result()
