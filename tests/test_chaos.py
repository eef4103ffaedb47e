"""Chaos: a fault plan (kill -9, restart, pause, link cut) run by `zmqfail kill
--plan` while `zmqfail client bench` records a history, then a checker that
trusts only the history and the nodes' durable logs:

- every request in the history was completed exactly once (ok, fail or info);
- every acknowledged write is in the final primary's log exactly once, and no
  request is there twice;
- each client's requests appear in its log in msg_id order;
- every node's tables equal a replay of its own log, and both nodes agree;
- no epoch was served by two servers.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Procs, wait_for

from zmqfail import config
from zmqfail.audit import replay_digest, requests_in_log
from zmqfail.client.control import call, node_status

pytestmark = [pytest.mark.timeout(180), pytest.mark.process]

PLAN = """
[[step]]
at = 2.0
node = "primary"
signal = "KILL"

[[step]]
at = 3.0
node = "a"
restart = true
wait = true    # the STOP below needs a back as a backup to take over from b

# a needs time to start and catch up: a backup still syncing may not take over
# (it may lack acknowledged records), so the next takeover waits for it.
[[step]]
at = 9.0
node = "primary"
signal = "STOP"

[[step]]
at = 10.5
node = "b"
signal = "CONT"

[[step]]
at = 12.0
node = "primary"
link = "main"
for = 1.0
"""


def st(cfg: config.ClusterConfig, name: str, digest: bool = False) -> dict[str, Any]:
    return node_status(cfg.node(name), digest=digest, timeout=1.0)


def test_faults_under_load_lose_and_repeat_nothing(
    procs: Procs, cluster_dir: Callable[..., Path], tmp_path: Path
) -> None:
    cfg_path = cluster_dir()
    cfg = config.load(cfg_path)
    procs.node(cfg_path, "a")
    procs.node(cfg_path, "b")
    wait_for(lambda: st(cfg, "a")["state"] == "normal", 20, "a normal")
    wait_for(lambda: st(cfg, "b")["state"] == "normal", 20, "b normal")
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    history, report = tmp_path / "history.jsonl", tmp_path / "report.json"
    bench = procs.start(
        "client",
        "bench",
        "--config",
        str(cfg_path),
        "--clients",
        "2",
        "--window",
        "8",
        "--duration",
        "15",
        "--history",
        str(history),
        "--json-out",
        str(report),
        "--quiet",
        log="bench",
    )
    # The plan's clock starts once the load flows (starting the bench's client
    # processes takes seconds on a busy machine).
    wait_for(lambda: (st(cfg, "a")["committed_lsn"] or 0) > 300, 30, "load flowing")
    nemesis = subprocess.run(
        [sys.executable, "-m", "zmqfail", "kill", "--config", str(cfg_path), "--plan", str(plan)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nemesis.returncode == 0, nemesis.stdout + nemesis.stderr
    assert len(nemesis.stdout.strip().splitlines()) == 5
    assert bench.wait(timeout=90) == 0, procs.log_text("bench")

    # Heal: whoever is primary now, the pair must be whole again.
    def whole() -> bool:
        rows = [st(cfg, n) for n in ("a", "b")]
        return sorted((r["role"] or "", r["state"]) for r in rows) == [
            ("backup", "normal"),
            ("primary", "normal"),
        ]

    wait_for(whole, 40, "the pair whole again")
    primary = next(n for n in ("a", "b") if st(cfg, n)["role"] == "primary")
    digests = {n: st(cfg, n, True)["digest"] for n in ("a", "b")}
    for n in ("a", "b"):
        call(cfg.node(n).control, "stop")

    def stopped() -> bool:
        return all(st(cfg, n)["state"] == "unreachable" for n in ("a", "b"))

    wait_for(stopped, 20, "both stopped")

    # 1. The history: one completion per invoke.
    events = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
    invokes = {(e["client_id"], e["msg_id"]): e for e in events if e["type"] == "invoke"}
    done = collections.Counter(
        (e["client_id"], e["msg_id"]) for e in events if e["type"] != "invoke"
    )
    assert invokes and set(done) == set(invokes), "every invoke completes"
    assert max(done.values()) == 1, "no request completes twice"
    acked = {(e["client_id"], e["msg_id"]) for e in events if e["type"] == "ok"}
    assert len(acked) > 1000
    # 2. No two servers at one epoch.
    servers_by_epoch: dict[int, set[str]] = collections.defaultdict(set)
    for e in events:
        if e["type"] == "ok":
            servers_by_epoch[e["epoch"]].add(e["server"])
    assert all(len(s) == 1 for s in servers_by_epoch.values()), servers_by_epoch
    assert len(servers_by_epoch) >= 3, "the plan forced at least two takeovers"

    # 3. The final primary's log: acknowledged writes once, nothing twice, in order.
    in_log = requests_in_log(cfg.node(primary).data_dir)
    seen = collections.Counter(in_log)
    last_msg: dict[str, int] = {}
    for client_id, msg_id in in_log:
        assert msg_id > last_msg.get(client_id, 0), f"out of order: {(client_id, msg_id)}"
        last_msg[client_id] = msg_id
    assert not [k for k, n in seen.items() if n > 1], "applied twice"
    writes = {k for k in acked if invokes[k]["body"].get("op") in ("new", "cancel")}
    lost = [k for k in writes if seen[k] != 1]
    assert not lost, f"acknowledged but lost: {lost[:10]}"

    # 4. Tables equal a replay of each node's log, and each other.
    for n in ("a", "b"):
        assert replay_digest(cfg.node(n).data_dir, cfg.engine) == digests[n], n
    assert digests["a"] == digests["b"]
