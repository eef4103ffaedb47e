"""Operator control of failover with real processes through the CLI (issue 9
item 5): `pause` holds a takeover after kill -9 of the primary and `resume`
takes over at once; `promote` is refused while the primary is heard and
takes over once it was killed, losing nothing under load, and the old
primary rejoins; `switchover --to` picks the backup; `history` reads what
happened after the nodes restarted."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BUY, Load, MakeCluster, run_zmqfail, wait_for
from test_failover_live import (
    check_exactly_once,
    start_pair,
    start_three,
    stop_all,
    wait_equal_digests,
    wait_more,
)

from zmqfail.client.sync import Client
from zmqfail.cluster import Cluster
from zmqfail.failover.state import Role, State

pytestmark = [pytest.mark.timeout(120), pytest.mark.process]


def zf(cfg_path: Path, *args: str) -> Any:
    return run_zmqfail(*args, "--config", str(cfg_path))


def one_error_line(r: Any) -> str:
    assert r.returncode == 1, (r.stdout, r.stderr)
    (line,) = r.stderr.splitlines()
    assert line.startswith("zmqfail: error: ")
    return str(line)


PRIMARY, BACKUP = Role.PRIMARY, Role.BACKUP
NORMAL, BACKUP_ONLY = State.NORMAL, State.BACKUP_ONLY


def no_longer_heard(cl: Cluster, by: str, peer: str) -> bool:
    dead_ms = cl.cfg.failover.heartbeat_interval_ms * cl.cfg.failover.heartbeat_misses
    age = cl.status(by).peers[peer].heartbeat_age_ms
    return age is None or age > dead_ms


def test_paused_pair_holds_a_takeover_and_resume_takes_over_history_after_restart(
    cluster: MakeCluster, cluster_dir: Callable[..., Path]
) -> None:
    cfg_path, cl = start_pair(cluster, cluster_dir)
    r = zf(cfg_path, "pause")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "a: automatic failover paused (primary/normal)",
        "b: automatic failover paused (backup/normal)",
    ]
    assert cl.status("a").failover_paused and cl.status("b").failover_paused
    killed_at = time.time()
    cl.kill("a")

    def held() -> bool:
        notes = [t.why for t in cl.status("b").transitions]
        return "PrimaryGone: not acted on, failover paused" in notes

    wait_for(held, 10, "b judges a gone and holds")
    b = cl.status("b")
    assert b.is_(BACKUP, NORMAL) and b.epoch == 1
    resumed_at = time.time()
    r = zf(cfg_path, "resume")
    assert "b: automatic failover resumed (primary/backup_only)" in r.stdout.splitlines()
    assert "not resumed on a (" in one_error_line(r)  # a is dead: told, not hidden
    b = cl.status("b")
    assert b.is_(PRIMARY, BACKUP_ONLY) and b.epoch == 2
    with Client(cl.cfg, timeout=10) as c:
        rep = c.request(BUY)
    assert (rep.server, rep.epoch, rep.status) == ("b", 2, "ok")
    # a comes back still paused (its meta says so) and follows b.
    cl.start("a")
    assert cl.wait("a", NORMAL, role=BACKUP, timeout=30).failover_paused is True
    r = zf(cfg_path, "resume")
    assert r.returncode == 0, r.stderr
    assert cl.status("a").failover_paused is False
    # The history, from the data dirs, also of what came before a's restart.
    r = zf(cfg_path, "history", "--json", "--last", "0")
    assert r.returncode == 0, r.stderr
    entries = json.loads(r.stdout)
    a_whys = [e["why"] for e in entries if e["node"] == "a"]
    assert a_whys.count("started") == 2 and "stopped cleanly" not in a_whys  # killed
    assert a_whys.index("Pause") < a_whys.index("started", 1) < a_whys.index("Resume")
    (took,) = [e for e in entries if e["node"] == "b" and e["to"] == "backup_only"]
    assert (took["why"], took["took_over_from"], took["epoch"]) == ("Resume", "a", 2)
    assert took["outage_ms"] >= (resumed_at - killed_at) * 1000 - 50


def test_promote_refused_while_the_primary_is_heard_then_after_kill9_loses_nothing(
    cluster: MakeCluster, cluster_dir: Callable[..., Path]
) -> None:
    cfg_path, cl = start_pair(cluster, cluster_dir)
    cfg = cl.cfg
    load = Load(cfg, window=16)
    wait_more(load, 300, "load on a")
    err = one_error_line(zf(cfg_path, "promote", "b"))
    assert "cannot promote b: b hears a (heartbeats alive)" in err and "--force" in err
    b = cl.status("b")
    assert b.is_(BACKUP, NORMAL) and b.epoch == 1
    assert zf(cfg_path, "pause").returncode == 0  # the operator, not the detector, acts
    cl.kill("a")
    wait_for(lambda: no_longer_heard(cl, "b", "a"), 10, "b no longer hears a")
    r = zf(cfg_path, "promote", "b")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["b is primary at epoch 2 (backup_only)"]
    wait_more(load, 300, "load on b")
    cl.start("a")
    cl.wait("a", NORMAL, role=BACKUP, timeout=30)
    wait_more(load, 200, "load with the pair whole")
    load.stop()
    wait_equal_digests(cl, "a", "b")
    changes = cl.status("b").transitions
    assert [t.why for t in changes if t.dst is BACKUP_ONLY is not t.src] == ["Promote"]
    stop_all(cl)
    check_exactly_once(cfg, "b", load)


def test_switchover_to_the_named_backup_of_three(
    cluster: MakeCluster, cluster_dir: Callable[..., Path]
) -> None:
    cfg_path, cl = start_three(cluster, cluster_dir)
    assert "no node named 'zz'" in one_error_line(zf(cfg_path, "switchover", "--to", "zz"))
    assert "a is the primary already" in one_error_line(zf(cfg_path, "switchover", "--to", "a"))
    r = zf(cfg_path, "switchover", "--to", "c")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "a hands over to c..."
    c = cl.status("c")
    assert c.role is PRIMARY and c.epoch == 2
    for n in ("a", "b"):
        cl.wait(n, NORMAL, role=BACKUP)  # it follows c
