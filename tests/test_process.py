"""Real processes through the CLI: kill -9 a node under load, restart it,
and check every acknowledged order survived and the tables equal a replay."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import MakeCluster, Procs

from zmqfail import config
from zmqfail.audit import replay_digest
from zmqfail.cli.demo import random_order
from zmqfail.client.control import STATUS_KEYS
from zmqfail.client.sync import Client
from zmqfail.failover.state import State
from zmqfail.netutil import free_base_port

pytestmark = [pytest.mark.timeout(120), pytest.mark.process]


def zmqfail(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zmqfail", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


READY = tuple(s for s in State if s is not State.STARTING)  # answering, past its start


def test_kill9_loses_no_acknowledged_order(tmp_path: Path, cluster: MakeCluster) -> None:
    import random

    base = free_base_port(30)
    out = zmqfail("config", "init", "--dir", str(tmp_path), "--base-port", str(base))
    assert out.returncode == 0, out.stderr
    cfg_path = tmp_path / "zmqfail.toml"
    # Snapshots (written by a forked child) happen during the run, so recovery
    # is snapshot + replay, not a replay from the first record.
    text = cfg_path.read_text().replace(
        "snapshot_every_records = 200000", "snapshot_every_records = 700"
    )
    cfg_path.write_text(text)
    cl = cluster(cfg_path)
    cfg = cl.cfg
    cl.start("a")
    cl.wait("a", *READY)

    rng = random.Random(3)
    acked: dict[int, dict[str, Any]] = {}
    with Client(cfg, timeout=10, window=32) as c:
        for i in range(3000):
            c.submit(random_order(rng, config.DEFAULT_INSTRUMENTS))
            if i == 2500:
                # Sent, and killed before any reply is read: requests are in
                # flight. (Reading with poll(0) first once found none: the
                # client, descheduled on a loaded machine between its send and
                # its read, then read the answers to everything it had sent.)
                c.flush()
                cl.signal("a", signal.SIGKILL)
                in_flight = len(c.session.outstanding)
                break
            for rep in c.poll(0):
                assert rep.status == "ok"
                acked[rep.result["order_id"]] = rep.result
        for rep in c.poll(0):  # answered before the kill: acknowledged too
            assert rep.status == "ok"
            acked[rep.result["order_id"]] = rep.result
    cl.procs["a"].wait(10)
    assert len(acked) > 1000
    assert in_flight > 0, "the kill should land with requests in flight"

    cl.start("a")
    st = cl.wait("a", *READY)
    assert st.last_lsn is not None and st.last_lsn >= len(acked)
    assert st.snapshot_lsn is not None
    assert st.snapshot_lsn >= 700, "recovery should start from a snapshot"
    with Client(cfg, timeout=10) as c:
        for order_id, result in acked.items():
            rep = c.request({"op": "status", "order_id": order_id})
            assert rep.status == "ok", f"acknowledged order {order_id} is gone"
            assert rep.result["filled"] >= result["filled"]
    live = cl.status("a", digest=True)
    assert live.digest == replay_digest(cfg.node("a").data_dir, cfg)

    # The operator views agree with the node.
    js = json.loads(zmqfail("status", "--config", str(cfg_path), "--json", "--digest").stdout)
    by_name = {row["name"]: row for row in js}
    assert by_name["a"]["last_lsn"] == live.last_lsn
    assert by_name["a"]["digest"] == live.digest
    assert by_name["b"]["state"] == "unreachable"
    for key in STATUS_KEYS:
        assert key in by_name["a"]

    verify = zmqfail("log", "verify", "--data-dir", str(cfg.node("a").data_dir))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    dump = zmqfail("log", "dump", "--data-dir", str(cfg.node("a").data_dir), "--json")
    lines = [json.loads(line) for line in dump.stdout.splitlines() if line.strip()]
    lsns = [rec["lsn"] for rec in lines]
    # Segments wholly covered by an older snapshot are pruned; the rest is contiguous.
    assert live.last_lsn is not None
    assert lsns == list(range(lsns[0], live.last_lsn + 1))
    assert {"lsn", "epoch", "client_id", "msg_id", "body"} <= set(lines[0])


def test_cli_orders_and_errors(tmp_path: Path, cluster: MakeCluster) -> None:
    base = free_base_port(30)
    assert (
        zmqfail("config", "init", "--dir", str(tmp_path), "--base-port", str(base)).returncode == 0
    )
    cfg_path = tmp_path / "zmqfail.toml"
    cl = cluster(cfg_path)
    cl.start("a")
    cl.wait("a", *READY)
    c = str(cfg_path)
    buy = zmqfail("client", "order", "--config", c, "buy", "ABC", "100", "10.50", "--json")
    assert buy.returncode == 0, buy.stderr
    assert json.loads(buy.stdout)["result"]["status"] == "new"
    sell = zmqfail("client", "order", "--config", c, "sell", "ABC", "30", "--json")  # market
    assert json.loads(sell.stdout)["result"]["filled"] == 30
    book = json.loads(zmqfail("client", "book", "--config", c, "ABC", "--json").stdout)
    assert book["result"]["bids"] == [["10.50", 70, 1]]
    bad = zmqfail("client", "order", "--config", c, "buy", "NOPE", "1", "1.00")
    assert bad.returncode == 2 and "unknown_instrument" in bad.stderr
    for args in (
        ("status", "--config", str(tmp_path / "missing.toml")),
        ("node", "--config", c, "--name", "zz"),
        ("config", "init", "--dir", str(tmp_path)),  # exists already
        ("log", "verify", "--data-dir", str(tmp_path / "nothing")),
    ):
        res = zmqfail(*args)
        assert res.returncode != 0, args
        assert "Traceback" not in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr


DEMO = (sys.executable, "-m", "zmqfail", "demo", "--seconds", "2")


@pytest.mark.parametrize("app", ["orders", "ledger"])
def test_demo_end_to_end_reports_nothing_lost(procs: Procs, app: str) -> None:
    base = free_base_port(30)
    # The demo's cluster lands in this test's tmp dir: kept for a look if it
    # fails, and its nodes are swept by the procs fixture if the demo is cut short.
    env = dict(os.environ, TMPDIR=str(procs.tmp))
    out = subprocess.run(
        [*DEMO, "--base-port", str(base), "--app", app],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lost            0 " in out.stdout
    assert "applied twice   0 " in out.stdout
    assert "tables          equal" in out.stdout
    assert "invariants      hold" in out.stdout and f", {app})" in out.stdout
    assert "failover outage" in out.stdout and "demo passed" in out.stdout
