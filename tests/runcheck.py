"""The checker of a run under faults, from the bench's history and the nodes'
durable logs alone (used by test_chaos.py and test_ledger_live.py):

- every request in the history was completed exactly once (ok, fail or info);
- no epoch was served by two servers;
- every acknowledged write is in the final primary's log exactly once, no
  request is there twice, and each client's requests are in msg_id order;
- every node's tables equal a replay of its own log, both nodes agree, and
  the application's own invariants hold on the replayed state;
- for the ledger: every logged transaction conserves the total, no balance
  goes negative and no transfer id is applied twice (apps/ledger/check.py).
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

from zmqfail import config
from zmqfail.apps.ledger.check import check_log
from zmqfail.audit import replay, requests_in_log
from zmqfail.cluster import Cluster


def bench_args(cfg_path: Path, history: Path, report: Path, seconds: float, app: str) -> list[str]:
    return [
        "client",
        "bench",
        "--config",
        str(cfg_path),
        "--app",
        app,
        "--clients",
        "2",
        "--window",
        "8",
        "--duration",
        str(seconds),
        "--history",
        str(history),
        "--json-out",
        str(report),
        "--quiet",
    ]


def whole_then_stopped(cl: Cluster) -> tuple[str, dict[str, str]]:
    """Wait for the pair to be whole again (whoever is primary now), note the
    primary and both digests, then stop both cleanly so their logs are whole."""
    primary = cl.wait_whole(40).name
    digests = {}
    for n in ("a", "b"):
        digest = cl.status(n, digest=True, timeout=5.0).digest
        assert digest is not None, f"{n} gave no digest"
        digests[n] = digest
    for n in ("a", "b"):
        cl.stop(n)
    return primary, digests


def check_run(
    cfg: config.ClusterConfig, history: Path, primary: str, digests: dict[str, str]
) -> tuple[int, int]:
    """All the checks above on stopped nodes; returns (acknowledged requests,
    epochs that acknowledged something)."""
    # 1. The history: one completion per invoke.
    events = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
    invokes = {(e["client_id"], e["msg_id"]): e for e in events if e["type"] == "invoke"}
    done = collections.Counter(
        (e["client_id"], e["msg_id"]) for e in events if e["type"] != "invoke"
    )
    assert invokes and set(done) == set(invokes), "every invoke completes"
    assert max(done.values()) == 1, "no request completes twice"
    acked = {(e["client_id"], e["msg_id"]) for e in events if e["type"] == "ok"}
    # 2. No two servers at one epoch.
    servers_by_epoch: dict[int, set[str]] = collections.defaultdict(set)
    for e in events:
        if e["type"] == "ok":
            servers_by_epoch[e["epoch"]].add(e["server"])
    assert all(len(s) == 1 for s in servers_by_epoch.values()), servers_by_epoch

    # 3. The final primary's log: acknowledged writes once, nothing twice, in order.
    in_log = requests_in_log(cfg.node(primary).data_dir)
    seen = collections.Counter(in_log)
    last_msg: dict[str, int] = {}
    for client_id, msg_id in in_log:
        assert msg_id > last_msg.get(client_id, 0), f"out of order: {(client_id, msg_id)}"
        last_msg[client_id] = msg_id
    assert not [k for k, n in seen.items() if n > 1], "applied twice"
    mix = cfg.app.workload(0)
    writes = {k for k in acked if mix.is_write(invokes[k]["body"])}
    lost = [k for k in writes if seen[k] != 1]
    assert not lost, f"acknowledged but lost: {lost[:10]}"

    # 4. Tables equal a replay of each node's log, and each other; the
    # application's invariants hold; the ledger's log conserves money.
    for n in digests:
        proc, _ = replay(cfg.node(n).data_dir, cfg)
        assert proc.digest() == digests[n], n
        assert proc.app.check() == [], (n, proc.app.check())
        if cfg.app.name == "ledger":
            assert check_log(cfg.node(n).data_dir, cfg) == [], n
    assert len(set(digests.values())) == 1, digests
    return len(acked), len(servers_by_epoch)
