"""Failover with real processes through the CLI, under load from the client
library: kill -9 and SIGSTOP of the primary, cut replication links, backup
loss, rejoin of the old primary, switchover (issue: failover)."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from conftest import BUY, Load, Procs, wait_for

from zmqfail import config
from zmqfail.audit import replay, requests_in_log
from zmqfail.client.control import call, node_status
from zmqfail.client.sync import Client

pytestmark = [pytest.mark.timeout(120), pytest.mark.process]


def st(cfg: config.ClusterConfig, name: str, digest: bool = False) -> dict[str, Any]:
    return node_status(cfg.node(name), digest=digest, timeout=2.0)


def role_state(cfg: config.ClusterConfig, name: str) -> tuple[Any, Any]:
    s = st(cfg, name)
    return s.get("role"), s["state"]


def is_role_state(cfg: config.ClusterConfig, name: str, want: tuple[str, str]) -> bool:
    return role_state(cfg, name) == want


def start_pair(
    procs: Procs, cluster_dir: Callable[..., Path], **settings: object
) -> tuple[Path, config.ClusterConfig]:
    cfg_path = cluster_dir(**settings)
    cfg = config.load(cfg_path)
    procs.node(cfg_path, "a")
    procs.node(cfg_path, "b")
    wait_for(lambda: role_state(cfg, "a") == ("primary", "normal"), 20, "a primary, normal")
    wait_for(lambda: role_state(cfg, "b") == ("backup", "normal"), 20, "b backup, normal")
    return cfg_path, cfg


def check_exactly_once(cfg: config.ClusterConfig, name: str, load: Load) -> None:
    """Every acknowledged request is in `name`'s log once; no request twice."""
    seen = collections.Counter(requests_in_log(cfg.node(name).data_dir))
    twice = [k for k, n in seen.items() if n > 1]
    assert not twice, f"applied twice: {twice[:5]}"
    cid = load.client.client_id
    lost = [m for m in load.acked if seen[(cid, m)] != 1]
    assert not lost, f"acknowledged but not in {name}'s log: {lost[:10]}"


def wait_equal_digests(cfg: config.ClusterConfig, x: str, y: str) -> None:
    def same() -> bool:
        return bool(st(cfg, x, True)["digest"] == st(cfg, y, True)["digest"])

    wait_for(same, 20, f"equal digests on {x} and {y}")


def stop_all(cfg: config.ClusterConfig, procs: Procs) -> None:
    """Clean stops, so every record a node holds is on its disk for the checks."""
    for n in cfg.nodes:
        if st(cfg, n.name)["state"] != "unreachable":
            call(n.control, "stop")
    wait_for(lambda: all(p.poll() is not None for p in procs.procs), 20, "clean stops")


def wait_more(load: Load, n: int, what: str, timeout: float = 30) -> None:
    base = load.count()
    wait_for(lambda: load.count() >= base + n, timeout, what)


def test_kill9_primary_backup_takes_over_and_old_primary_rejoins(
    procs: Procs, cluster_dir: Callable[..., Path]
) -> None:
    cfg_path, cfg = start_pair(procs, cluster_dir)
    load = Load(cfg, window=16)
    wait_more(load, 800, "load on a")
    os.killpg(procs.procs[0].pid, signal.SIGKILL)
    wait_for(lambda: role_state(cfg, "b") == ("primary", "backup_only"), 20, "b takes over")
    wait_more(load, 800, "load continuing on b")
    assert st(cfg, "b")["epoch"] == 2
    assert [f.to_server for f in load.client.failovers] == ["b"]
    # The old primary comes back as the backup, catches up, and the pair is whole.
    procs.node(cfg_path, "a")
    wait_for(lambda: role_state(cfg, "a") == ("backup", "normal"), 30, "a rejoins as backup")
    wait_for(lambda: role_state(cfg, "b") == ("primary", "normal"), 10, "b primary, normal")
    wait_more(load, 300, "load with the pair whole again")
    load.stop()
    wait_equal_digests(cfg, "a", "b")
    stop_all(cfg, procs)
    check_exactly_once(cfg, "b", load)
    proc, _ = replay(cfg.node("b").data_dir, cfg)
    assert proc.app.describe().tables["orders"] == len(load.acked)


def test_primary_killed_with_no_client_connected_the_backup_serves_within_2s(
    procs: Procs, cluster_dir: Callable[..., Path]
) -> None:
    """Step 420: silent on the links and on the client network, the primary is
    gone; the backup takes over on its own (no client vote), and a client
    started afterwards is served by it."""
    _, cfg = start_pair(procs, cluster_dir)
    killed_at = time.time()
    os.killpg(procs.procs[0].pid, signal.SIGKILL)
    wait_for(lambda: role_state(cfg, "b") == ("primary", "backup_only"), 10, "b takes over")
    took = [t for t in st(cfg, "b")["transitions"] if t["to"] == "backup_only"]
    assert len(took) == 1 and took[0]["why"] == "PrimaryGone", took
    assert took[0]["time"] - killed_at < 2.0, f"took over {took[0]['time'] - killed_at:.2f} s late"
    assert st(cfg, "b")["counters"]["votes"] == 0
    with Client(cfg, timeout=10) as c:
        rep = c.request(BUY)
    assert (rep.server, rep.epoch, rep.status) == ("b", 2, "ok")


def test_paused_primary_steps_down_and_never_acknowledges_after_takeover(
    procs: Procs, cluster_dir: Callable[..., Path]
) -> None:
    _, cfg = start_pair(procs, cluster_dir)
    load = Load(cfg, window=16)
    wait_more(load, 500, "load on a")
    a = procs.procs[0]
    os.kill(a.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: role_state(cfg, "b") == ("primary", "backup_only"), 20, "takeover")
        wait_more(load, 300, "load on b while a is paused")
    finally:
        os.kill(a.pid, signal.SIGCONT)
    wait_for(lambda: st(cfg, "a")["role"] == "backup", 10, "a steps down")
    wait_for(lambda: role_state(cfg, "a") == ("backup", "normal"), 30, "a rejoins as backup")
    wait_more(load, 300, "load after a rejoined")
    load.stop()
    first_b = min(t for t, server, epoch, _ in load.replies if server == "b")
    late = [(t, e, m) for t, server, e, m in load.replies if server == "a" and t > first_b]
    assert not late, f"a acknowledged after b took over: {late[:5]}"
    assert all(e == 1 for _, server, e, _ in load.replies if server == "a")
    wait_equal_digests(cfg, "a", "b")
    stop_all(cfg, procs)
    check_exactly_once(cfg, "b", load)


def test_both_links_cut_primary_alone_no_takeover(
    procs: Procs, cluster_dir: Callable[..., Path]
) -> None:
    _, cfg = start_pair(procs, cluster_dir)
    load = Load(cfg, window=16)
    wait_more(load, 300, "load on a")
    for link in ("main", "failsafe"):
        call(cfg.node("a").control, "cut", {"link": link})
    wait_for(lambda: st(cfg, "a")["state"] == "primary_only", 10, "a alone")
    wait_more(load, 800, "load on a, alone")
    sb = st(cfg, "b")
    assert sb["role"] == "backup" and sb["epoch"] == 1, f"no takeover expected: {sb}"
    # Step 420: b asked a over the client network, heard it, and waits (it no
    # longer holds everything a acknowledges).
    assert sb["state"] == "standby", sb["transitions"]
    assert sb["transitions"][-1]["why"] == "PrimaryReachable"
    assert not load.client.failovers, "clients kept their primary"
    for link in ("main", "failsafe"):
        call(cfg.node("a").control, "heal", {"link": link})
    wait_for(lambda: role_state(cfg, "a") == ("primary", "normal"), 20, "pair whole again")
    wait_more(load, 200, "load after heal")
    load.stop()
    wait_equal_digests(cfg, "a", "b")


def test_backup_killed_primary_alone_then_backup_returns(
    procs: Procs, cluster_dir: Callable[..., Path]
) -> None:
    cfg_path, cfg = start_pair(procs, cluster_dir)
    load = Load(cfg, window=16)
    wait_more(load, 300, "load")
    os.killpg(procs.procs[1].pid, signal.SIGKILL)
    wait_for(lambda: st(cfg, "a")["state"] == "primary_only", 10, "a primary-only")
    wait_more(load, 300, "load on a alone")
    procs.node(cfg_path, "b")
    wait_for(lambda: role_state(cfg, "a") == ("primary", "normal"), 30, "normal again")
    load.stop()
    wait_equal_digests(cfg, "a", "b")


def test_switchover_loses_and_fails_no_request(
    procs: Procs, cluster_dir: Callable[..., Path]
) -> None:
    cfg_path, cfg = start_pair(procs, cluster_dir)
    load = Load(cfg, window=16)
    wait_more(load, 500, "load on a")
    out = subprocess.run(
        [sys.executable, "-m", "zmqfail", "switchover", "--config", str(cfg_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert role_state(cfg, "b")[0] == "primary"
    wait_for(lambda: role_state(cfg, "a") == ("backup", "normal"), 30, "a backup, normal")
    wait_for(lambda: role_state(cfg, "b") == ("primary", "normal"), 10, "b primary, normal")
    wait_more(load, 500, "load on b")
    load.stop()  # asserts no request failed
    assert st(cfg, "b")["epoch"] == 2
    wait_equal_digests(cfg, "a", "b")
    with Client(cfg, timeout=5) as c:
        assert c.request({"op": "book", "instrument": "ABC"}).server == "b"
    stop_all(cfg, procs)
    check_exactly_once(cfg, "b", load)


def test_several_backups_most_up_to_date_takes_over_others_follow(
    procs: Procs, cluster_dir: Callable[..., Path]
) -> None:
    cfg_path = cluster_dir(nodes=3)
    cfg = config.load(cfg_path)
    for n in ("a", "b", "c"):
        procs.node(cfg_path, n)
    wait_for(lambda: role_state(cfg, "a") == ("primary", "normal"), 20, "a primary")
    for n in ("b", "c"):
        wait_for(partial(is_role_state, cfg, n, ("backup", "normal")), 20, f"{n} in sync")
    load = Load(cfg, window=16)
    wait_more(load, 800, "load on a")
    os.killpg(procs.procs[0].pid, signal.SIGKILL)
    wait_for(lambda: any(role_state(cfg, n)[0] == "primary" for n in ("b", "c")), 20, "a takeover")
    new = next(n for n in ("b", "c") if st(cfg, n)["role"] == "primary")
    other = "c" if new == "b" else "b"
    wait_for(lambda: role_state(cfg, other) == ("backup", "normal"), 20, f"{other} follows")
    wait_for(lambda: role_state(cfg, new) == ("primary", "normal"), 20, f"{new} normal")
    assert st(cfg, new)["epoch"] == 2 and st(cfg, other)["epoch"] == 2
    wait_more(load, 500, f"load on {new}")
    load.stop()
    wait_for(lambda: st(cfg, new, True)["digest"] == st(cfg, other, True)["digest"], 20, "equal")
    stop_all(cfg, procs)
    check_exactly_once(cfg, new, load)
    check_exactly_once(cfg, other, load)


def test_async_client_fails_over_with_its_requests(
    procs: Procs, cluster_dir: Callable[..., Path]
) -> None:
    import asyncio

    from zmqfail.client.aio import AsyncClient

    _, cfg = start_pair(procs, cluster_dir)

    async def main() -> tuple[list[Any], int]:
        c = AsyncClient(cfg, timeout=20)
        try:
            await c.connect()
            first = await asyncio.gather(*(c.request(BUY) for _ in range(100)))
            os.killpg(procs.procs[0].pid, signal.SIGKILL)  # a dies; some requests follow
            rest = await asyncio.gather(*(c.request(BUY) for _ in range(300)))
            return [*first, *rest], len(c.failovers)
        finally:
            await c.close()

    replies, failovers = asyncio.run(main())
    assert all(r.status == "ok" for r in replies)
    assert len({r.result["order_id"] for r in replies}) == 400, "one order per request"
    assert failovers == 1
    assert replies[-1].server == "b" and replies[-1].epoch == 2


def test_a_paused_primary_does_not_blame_its_backup_for_its_own_pause(
    procs: Procs, cluster_dir: Callable[..., Path]
) -> None:
    """Woken from SIGSTOP, a server measures every peer as silent for the whole
    pause. It must not act on that (run alone, acknowledge by flush) before fresh
    input had time to arrive; with no clients, nobody took over meanwhile."""
    _, cfg = start_pair(procs, cluster_dir)
    a = procs.procs[0]
    os.kill(a.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: "silent" in procs.log_text("node-b"), 10, "b notices a is silent")
    finally:
        os.kill(a.pid, signal.SIGCONT)
    wait_for(lambda: role_state(cfg, "a") == ("primary", "normal"), 10, "a serving again")
    assert role_state(cfg, "b") == ("backup", "normal")
    changes = [t["to"] for t in st(cfg, "a")["transitions"]]
    assert "primary_only" not in changes[1:], f"a ran alone after its pause: {changes}"


def test_switchover_to_a_backup_that_freezes_is_called_off(
    procs: Procs, cluster_dir: Callable[..., Path]
) -> None:
    _, cfg = start_pair(procs, cluster_dir)
    b = procs.procs[1]
    os.kill(b.pid, signal.SIGSTOP)
    try:
        res = call(cfg.node("a").control, "switchover", {})  # b still counts as in sync
        assert res["handoff_to"] == "b"
        wait_for(lambda: st(cfg, "a")["state"] == "primary_only", 10, "handoff called off")
        with Client(cfg, timeout=5) as c:
            rep = c.request(BUY)
        assert (rep.status, rep.server, rep.epoch) == ("ok", "a", 1)
    finally:
        os.kill(b.pid, signal.SIGCONT)
    # Woken, b must not act on the offer a called off: a keeps serving, and the
    # order it acknowledged alone survives on both servers.
    wait_for(lambda: role_state(cfg, "b") == ("backup", "normal"), 20, "b back in sync")
    wait_for(lambda: role_state(cfg, "a") == ("primary", "normal"), 10, "a primary, normal")
    assert st(cfg, "a")["epoch"] == 1
    with Client(cfg, timeout=5) as c:
        found = c.request({"op": "status", "order_id": rep.result["order_id"]})
    assert found.status == "ok"
    wait_equal_digests(cfg, "a", "b")
