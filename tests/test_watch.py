"""`zmqfail watch` and the `status` table: the view's data model without
sockets, then the commands against real node processes."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import MakeCluster, run_zmqfail, wait_for
from rich.console import Console

from zmqfail.cli.layout import render, table
from zmqfail.cli.view import (
    SPARK,
    Sample,
    Transition,
    WatchModel,
    link_health,
    merge_transitions,
    node_row,
    rate,
    sparkline,
)
from zmqfail.client.sync import Client
from zmqfail.core.status import NodeStatus
from zmqfail.failover.state import State

pytestmark = pytest.mark.timeout(60)

HB = 30  # heartbeat interval (ms) of the default config
UNREACHABLE_ROW = NodeStatus.unreachable("b", "no answer")


def status(name: str, **kw: Any) -> NodeStatus:
    """A status as a node sends it (a primary in the normal state unless
    told otherwise), decoded as every reader decodes it."""
    base: dict[str, Any] = {"name": name, "role": "primary", "state": "normal", "epoch": 1}
    base.update(kw)
    return NodeStatus.from_wire(base)


# ------------------------------------------------------------------ pure


def test_sparkline_scales_from_zero_and_keeps_the_last_samples() -> None:
    assert sparkline([]) == ""
    assert sparkline([0.0, 0.0]) == "▁▁"
    assert sparkline([0.0, 7.0, 14.0]) == "▁▅█"  # equal-width bins
    assert sparkline([5.0, None, 5.0]) == "█ █"
    assert sparkline([None, None]) == "  "
    assert sparkline([-1.0, 2.0]) == "▁█"
    assert sparkline([float(i) for i in range(100)], width=30) == sparkline(
        [float(i) for i in range(70, 100)]
    )
    assert len(sparkline([1.0] * 100)) == 30
    assert set(sparkline([float(i) for i in range(8)])) <= set(SPARK)


def test_rate_uses_node_uptime_and_never_goes_negative() -> None:
    a = Sample(count=100, pid=7, uptime=10.0, seen_at=500.0)
    b = Sample(count=150, pid=7, uptime=10.5, seen_at=500.9)  # watch clock jittered
    assert rate(a, b) == pytest.approx(100.0)
    assert rate(None, b) is None
    assert rate(a, None) is None
    assert rate(a, a) is None  # no time passed
    # Without uptime the watcher's clock is used.
    assert rate(Sample(0, 7, None, 1.0), Sample(30, 7, None, 3.0)) == pytest.approx(15.0)
    # Restarted (new pid): the counter began at zero, so the average since the restart.
    restarted = Sample(count=20, pid=8, uptime=2.0, seen_at=501.0)
    assert rate(b, restarted) == pytest.approx(10.0)
    # Same pid number reused, counter or uptime going back: a restart too.
    assert rate(b, Sample(count=5, pid=7, uptime=11.0, seen_at=502.0)) == pytest.approx(5 / 11)
    assert rate(b, Sample(count=400, pid=7, uptime=0.5, seen_at=502.0)) == pytest.approx(800.0)
    assert rate(b, Sample(count=0, pid=9, uptime=0.0, seen_at=502.0)) is None
    for cur in (restarted, Sample(0, 7, 12.0, 503.0), Sample(0, 7, None, 503.0)):
        r = rate(b, cur)
        assert r is None or r >= 0


def test_link_health_of_a_primary_from_its_replication_tracker() -> None:
    fresh = {
        "b": {"heartbeat_age_ms": 10.0, "role": "backup", "links": {"main": 10.0, "failsafe": 12.0}}
    }
    up = {"b": {"links_up": {"main": True, "failsafe": True}}}
    assert link_health(status("a", backups=up, peers=fresh), HB) == {"main": "up", "failsafe": "up"}
    main_down = {"b": {"links_up": {"main": False, "failsafe": True}}}
    st = status("a", backups=main_down, peers=fresh)
    assert link_health(st, HB) == {"main": "down", "failsafe": "up"}
    # The tracker says up, but the backup has been silent: a dead backup is not an up link.
    stale = {"b": {"heartbeat_age_ms": 900.0, "links": {"main": 900.0, "failsafe": 10.0}}}
    assert link_health(status("a", backups=up, peers=stale), HB) == {
        "main": "down",
        "failsafe": "up",
    }
    two = dict(up, c={"links_up": {"main": False, "failsafe": True}})
    assert link_health(status("a", backups=two), HB) == {"main": "1/2 up", "failsafe": "up"}
    st = status("a", backups=up, peers=fresh, cut_links=["failsafe", "clients"])
    assert link_health(st, HB) == {"main": "up", "failsafe": "cut"}
    assert link_health(status("a"), HB) == {"main": "-", "failsafe": "-"}  # no backup known


def test_link_health_of_a_backup_from_its_primarys_heartbeats() -> None:
    def backup(links: dict[str, float | None]) -> NodeStatus:
        peers = {"a": {"role": "primary", "links": links}, "c": {"role": "backup", "links": {}}}
        return status("b", role="backup", peers=peers)

    assert link_health(backup({"main": 5.0, "failsafe": 89.9}), HB) == {
        "main": "up",
        "failsafe": "up",
    }
    # 3 x the heartbeat interval or more, or never heard: down.
    assert link_health(backup({"main": 90.0, "failsafe": None}), HB) == {
        "main": "down",
        "failsafe": "down",
    }
    no_primary = status("b", role="backup", peers={"c": {"role": "backup", "links": {}}})
    assert link_health(no_primary, HB) == {"main": "-", "failsafe": "-"}
    assert link_health(UNREACHABLE_ROW, HB) == {"main": "-", "failsafe": "-"}


def test_transitions_merge_in_time_order_once_each() -> None:
    t1 = Transition(1.0, "a", "starting", "primary_only", "StartupDone", 1)
    t2 = Transition(2.0, "b", "starting", "standby", "StartupDone", 1)
    t3 = Transition(3.0, "a", "primary_only", "normal", "BackupsInSync", 1)
    merged = merge_transitions([t1, t3], [t3, t2, t1])
    assert merged == [t1, t2, t3]
    # A node that died keeps the changes it reported before.
    assert merge_transitions(merged, []) == merged
    assert merge_transitions(merged, [], keep=2) == [t2, t3]


def counters(requests: int) -> dict[str, int]:
    return {"requests": requests, "replies": requests}


def test_watch_model_rates_history_and_nodes_that_die_and_come_back() -> None:
    m = WatchModel(heartbeat_interval_ms=HB)
    tr = [
        {"time": 9.0, "from": "starting", "to": "starting", "why": "started", "epoch": 1},
        {"time": 10.0, "from": "starting", "to": "primary_only", "why": "StartupDone", "epoch": 1},
    ]
    a0 = status("a", pid=1, uptime=5.0, counters=counters(0), transitions=tr)
    b0 = status("b", role="backup", pid=2, uptime=5.0, counters=counters(0))
    f = m.update([a0, b0], now=100.0, wall=20.0)
    assert [r.rate for r in f.rows] == ["-", "-"]  # one poll: no rate yet
    assert [t.dst for t in f.transitions] == ["primary_only"]  # the note is history's

    a1 = replace(a0, uptime=6.0, counters=counters(250))
    f = m.update([a1, UNREACHABLE_ROW], now=101.0, wall=21.0)
    assert f.rows[0].rate == "250"
    assert f.rows[0].spark == "█"
    assert not f.rows[1].reachable and f.rows[1].state == "unreachable"
    assert f.rows[1].rate == "-" and f.rows[1].epoch == "-"
    gone = f.transitions[-1]
    assert (gone.node, gone.src, gone.dst) == ("b", "normal", "unreachable")

    # b restarted: a new pid with a small counter gives a positive rate, not a negative one.
    b2 = status("b", role="backup", pid=3, uptime=2.0, counters=counters(4))
    f = m.update([replace(a1, uptime=7.0, counters=counters(250)), b2], now=102.0, wall=22.0)
    assert f.rows[0].rate == "0.0"
    assert f.rows[1].reachable and f.rows[1].rate == "2.0"
    assert f.rows[1].spark == " █"  # the poll it missed is a gap
    back = f.transitions[-1]
    assert (back.node, back.src, back.dst) == ("b", "unreachable", "normal")
    assert [t.time for t in f.transitions] == sorted(t.time for t in f.transitions)


def render_text(renderable: Any) -> str:
    buf = io.StringIO()
    Console(file=buf, width=160, color_system=None).print(renderable)
    return buf.getvalue()


def test_the_table_shows_every_column_and_greys_nothing_into_a_crash() -> None:
    st = status(
        "a",
        last_lsn=12,
        committed_lsn=11,
        flushed_lsn=10,
        lag=1,
        replication_link="main",
        clients=2,
        digest="0123456789abcdef",
        peers={"b": {"heartbeat_age_ms": 1500.0, "links": {"main": 12.0, "failsafe": None}}},
        backups={"b": {"links_up": {"main": True, "failsafe": True}}},
    )
    rows = [node_row(st, HB), node_row(UNREACHABLE_ROW, HB)]
    text = render_text(table(rows, 160, rates=False))
    assert "req/s" not in text and "history" not in text
    a_line = next(line for line in text.splitlines() if line.startswith("a "))
    assert a_line.split() == [
        *("a", "primary", "1", "12", "1", "up", "down", "2", "b", "1.5s", "main"),
        *("11", "10", "normal", "0123456789ab"),
    ]
    assert re.search(r"^b +unreachable +- ", text, re.M)
    m = WatchModel(HB)
    frame = m.update([st, UNREACHABLE_ROW], 1.0, 1.0)
    shown = render_text(render(frame, "t", 160, max_transitions=5))
    assert "req/s" in shown and "history" in shown
    assert "DEGRADED  primary a (epoch 1); b unreachable" in shown


# ------------------------------------------------------------------ live


def zmqfail(*args: str) -> subprocess.CompletedProcess[str]:
    return run_zmqfail(*args, timeout=30)


def row_line(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"{name} "))


def test_watch_once_and_status_against_real_nodes(
    cluster_dir: Callable[..., Path], cluster: MakeCluster
) -> None:
    cfg_path = cluster_dir()
    cl = cluster(cfg_path)
    cfg = cl.cfg
    cl.start("a", "b")
    cl.wait("a", State.NORMAL, timeout=30)
    with Client(cfg, timeout=10) as c:
        for price in ("10.50", "10.60", "10.70"):
            body = {"op": "new", "instrument": "ABC", "side": "buy", "type": "limit"}
            assert c.request({**body, "qty": 10, "price": price}).status == "ok"

    def settled(rows: list[NodeStatus]) -> bool:
        return all(
            # 3 orders and the client's registration
            (s.last_lsn, s.committed_lsn, s.flushed_lsn, s.lag) == (4, 4, 4, 0)
            for s in rows
        )

    cl.wait_all(settled, "holding, committing and flushing the 4 records", 20)

    heads = ["node", "role", "epoch", "lsn", "lag", "main", "failsafe", "req/s", "clients"]
    heads += ["peer hb", "link", "committed", "flushed", "state", "history"]
    # req/s comes from two polls. A heartbeat delayed past 3 intervals on the
    # loaded machine shows a link down for a moment: look again.
    a = r"^a +primary +1 +4 +0 +up +up +\d+(\.\d)? +\d+ +b \S+ +main +4 +4 +normal "
    b = r"^b +backup \(in sync\) +1 +4 +0 +up +up +\d+(\.\d)? +\d+ +a \S+ +main +4 +4 +normal "

    def watched() -> str | None:
        out = zmqfail("watch", "--config", str(cfg_path), "--once")  # 160 columns: a pipe
        assert out.returncode == 0, out.stderr
        rows_ok = re.search(a, row_line(out.stdout, "a")) and re.search(
            b, row_line(out.stdout, "b")
        )
        return out.stdout if rows_ok else None

    shown = wait_for(watched, 30, "both rows in the view")
    assert isinstance(shown, str)
    assert "\x1b[" not in shown
    assert "OK  protected: primary a (epoch 1), backup b in sync, lag 0" in shown
    assert re.search(r"^" + r"\s+".join(map(re.escape, heads)) + r"\s*$", shown, re.M)
    assert "starting -> primary_only" in shown and "syncing -> normal" in shown
    assert zmqfail("status", "--config", str(cfg_path)).returncode == 0
    health = zmqfail("health", "--config", str(cfg_path))
    assert (health.returncode, health.stdout.split(":")[0]) == (0, "ok"), health.stdout
    served = [zmqfail("health", "--config", str(cfg_path), "--node", n) for n in "ab"]
    assert [r.returncode for r in served] == [0, 4], [r.stdout for r in served]

    cl.kill("b")
    out = zmqfail("watch", "--config", str(cfg_path), "--once")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^b +unreachable +- +- +- ", row_line(out.stdout, "b"))
    assert re.search(r"^a +primary", row_line(out.stdout, "a"))
    assert "DEGRADED  primary a (epoch 1)" in out.stdout

    table_out = zmqfail("status", "--config", str(cfg_path))
    assert table_out.returncode == 3, table_out.stderr  # degraded
    assert re.search(r"^b +unreachable +- +- +- ", row_line(table_out.stdout, "b"))
    assert re.search(r"^a +primary( \(alone\))? +1 +4 +(0|-) ", row_line(table_out.stdout, "a"))
    assert "peer hb" in table_out.stdout and "req/s" not in table_out.stdout
    assert "history" not in table_out.stdout

    js = zmqfail("status", "--config", str(cfg_path), "--json", "--digest")
    assert js.returncode == 3, js.stderr
    by_name = {r["name"]: r for r in json.loads(js.stdout)}
    keys = {"name", "role", "state", "epoch", "last_lsn", "committed_lsn", "flushed_lsn"}
    keys |= {"digest", "pid", "lag", "replication_link"}
    assert keys <= set(by_name["a"]) and keys <= set(by_name["b"])
    assert {"counters", "transitions", "peers", "backups"} <= set(by_name["a"])
    assert by_name["b"]["state"] == "unreachable" and by_name["b"]["lag"] is None
    assert by_name["a"]["last_lsn"] == 4 and len(by_name["a"]["digest"]) == 64  # 1 registration
    plain = json.loads(zmqfail("status", "--config", str(cfg_path), "--json").stdout)
    assert plain[0]["name"] == "a" and plain[0]["digest"] is None  # asked for no digest

    cl.kill("a")
    down = zmqfail("status", "--config", str(cfg_path), "--timeout", "0.2")
    assert down.returncode == 4 and "DOWN  no node serves" in down.stdout, down.stdout
    health = zmqfail("health", "--config", str(cfg_path), "--timeout", "0.2")
    assert health.returncode == 4 and health.stdout.startswith("down: no node serves")


def test_watch_with_a_missing_config_is_one_line_and_status_1(tmp_path: Path) -> None:
    out = zmqfail("watch", "--config", str(tmp_path / "missing.toml"), "--once")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "does not exist" in out.stderr


@pytest.mark.parametrize("terminal", [True, False], ids=["pty", "redirected"])
def test_watch_refreshes_until_sigint_then_exits_0(
    cluster_dir: Callable[..., Path], tmp_path: Path, terminal: bool
) -> None:
    """No node runs: every refresh shows both unreachable, which must not stop it."""
    cfg_path = cluster_dir()
    args = [sys.executable, "-m", "zmqfail", "watch", "--config", str(cfg_path)]
    args += ["--interval", "0.05", "--timeout", "0.1"]
    env = dict(os.environ, COLUMNS="180", LINES="40", TERM="xterm", PYTHONFAULTHANDLER="1")
    env.pop("FORCE_COLOR", None)
    chunks: list[bytes] = []
    log = tmp_path / "watch.out"
    if terminal:
        master, slave = pty.openpty()
        out_target: Any = slave
    else:
        out_target = open(log, "wb")  # noqa: SIM115 - closed below
    p = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=out_target,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    reader: threading.Thread | None = None
    try:
        if terminal:
            os.close(slave)

            def drain() -> None:  # a full pty would block the child's writes
                while True:
                    try:
                        data = os.read(master, 65536)
                    except OSError:
                        return
                    if not data:
                        return
                    chunks.append(data)

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
        else:
            out_target.close()

        def printed() -> str:
            return (b"".join(chunks) if terminal else log.read_bytes()).decode(errors="replace")

        wait_for(lambda: printed().count("zmqfail cluster") >= 2, 30, "two refreshes")
        assert "unreachable" in printed()
        os.kill(p.pid, signal.SIGINT)
        assert p.stderr is not None
        try:
            rc = p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGABRT)  # faulthandler prints every thread's stack
            p.wait(10)
            stacks = p.stderr.read().decode(errors="replace")
            pytest.fail(f"watch did not exit on SIGINT:\n{stacks}")
        err = p.stderr.read().decode(errors="replace")
        assert rc == 0, err
        assert "Traceback" not in err and "Aborted" not in err
        if not terminal:
            assert "\x1b[" not in printed()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
        if p.stderr is not None:
            p.stderr.close()
        if terminal:
            os.close(master)
            if reader is not None:
                reader.join(5)
