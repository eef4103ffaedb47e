"""A backup whose log is damaged refuses to start with one line naming the file
and the command to run; after `zmqfail log reset` it rejoins its peer and
catches up, and the damaged files are still there (real processes)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MakeCluster, Procs, wait_for

from zmqfail import config
from zmqfail.cli.demo import random_order
from zmqfail.client.sync import Client
from zmqfail.failover.state import Role, State
from zmqfail.txlog.frames import list_segments, log_dir

pytestmark = [pytest.mark.timeout(180), pytest.mark.process]


def orders(cfg: config.ClusterConfig, n: int, seed: int) -> None:
    import random

    rng = random.Random(seed)
    with Client(cfg, timeout=10.0, window=8) as c:
        for _ in range(n):
            c.submit(random_order(rng, config.DEFAULT_INSTRUMENTS))
        while c.session.outstanding:
            for rep in c.poll(10.0, raise_on_timeout=True):
                assert rep.status in ("ok", "rejected"), rep


def test_a_damaged_backup_is_reset_and_catches_up(
    cluster_dir: Callable[..., Path], cluster: MakeCluster, procs: Procs
) -> None:
    path = cluster_dir(failover__heartbeat_misses=20)
    cl = cluster(path)
    cfg = cl.cfg
    cl.start("a", "b")
    cl.wait("b", State.NORMAL, timeout=30)  # following a
    orders(cfg, 300, seed=1)
    last = cl.status("a").last_lsn
    cl.wait_until("b", lambda s: s.last_lsn == last, f"caught up to {last}", 20)
    b = cl.procs["b"]
    cl.signal("b", signal.SIGTERM)
    assert b.wait(timeout=20) == 0

    # A flipped byte in the middle of b's log: acknowledged records may be gone.
    b_dir = cfg.node("b").data_dir
    seg = list_segments(log_dir(b_dir))[-1].path
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x10
    seg.write_bytes(bytes(data))

    cl.start("b")
    assert cl.procs["b"].wait(timeout=30) == 1
    lines = [line for line in procs.log_text("node-b").splitlines() if "error" in line]
    assert len(lines) == 1, lines
    assert str(seg) in lines[0] and f"zmqfail log reset --data-dir {b_dir}" in lines[0]

    orders(cfg, 100, seed=2)  # a serves alone meanwhile
    reset = subprocess.run(
        [sys.executable, "-m", "zmqfail", "log", "reset", "--data-dir", str(b_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reset.returncode == 0, reset.stderr
    aside = sorted(b_dir.glob("damaged-*"))
    assert len(aside) == 1 and (aside[0] / "log" / seg.name).read_bytes() == bytes(data)

    cl.start("b")

    def equal() -> bool:
        sa, sb = cl.status("a", True, 2.0), cl.status("b", True, 2.0)
        return (
            sb.is_(Role.BACKUP, State.NORMAL)
            and sa.last_lsn == sb.last_lsn
            and sa.digest == sb.digest is not None
        )

    wait_for(equal, 60, "b to rejoin and catch up with equal tables")
    orders(cfg, 50, seed=3)  # and it keeps following
    wait_for(equal, 30, "b to follow the new orders")
    assert (aside[0] / "log" / seg.name).exists()  # the evidence is still there
    st = json.loads(
        subprocess.run(
            [sys.executable, "-m", "zmqfail", "status", "--json", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    )
    assert [r["state"] for r in st] == ["normal", "normal"]
