"""The operator tools over two shards crossed over two machines, with real
processes (the machines are the loopback addresses 127.0.0.1 and 127.0.0.2):
`status` and `watch` show one block per shard, `switchover --shard` moves one
shard's primary, `client bench --shard` loads one shard (without it, every
shard at once), `kill --machine` kills every server on one machine at once,
failing over each shard whose primary ran there and reporting each one's
outage, and `kill --machine --restart` brings the machine back as the backup
of both. One test, so the suite starts the four servers once."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import MakeCluster, run_zmqfail

from zmqfail import config
from zmqfail.failover.state import Role, State
from zmqfail.netutil import free_base_port

pytestmark = [pytest.mark.timeout(150), pytest.mark.process]


def test_operator_tools_over_two_crossed_shards(cluster: MakeCluster, tmp_path: Path) -> None:
    path = tmp_path / "zmqfail.toml"
    path.write_text(config.render_shards(2, 2, free_base_port(45)))
    whole = cluster(path, sole_owner=False)  # `kill --restart` starts servers too
    s1, s2 = whole.shard("s1"), whole.shard("s2")
    # Paragraph 71: machine 1 leads s1 and backs up s2; machine 2 the reverse.
    led = whole.start_shards()
    assert {k: v.name for k, v in led.items()} == {"s1": "s1-m1", "s2": "s2-m2"}
    cfg = str(path)

    # status: one block per shard, each with its own verdict; exit 0 when all are.
    shown = run_zmqfail("status", "--config", cfg)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    blocks = shown.stdout.split("zmqfail cluster ")[1:]
    assert [b.splitlines()[0] for b in blocks] == ["local/s1", "local/s2"]
    assert "protected: primary s1-m1" in blocks[0] and "s2-m1" not in blocks[0]
    assert "protected: primary s2-m2" in blocks[1] and "s1-m1" not in blocks[1]
    rows = json.loads(run_zmqfail("status", "--json", "--config", cfg).stdout)
    assert {(r["name"], r["shard"]) for r in rows} == {
        ("s1-m1", "s1"),
        ("s1-m2", "s1"),
        ("s2-m2", "s2"),
        ("s2-m1", "s2"),
    }

    # health: a line per shard and the worst status; --shard one shard's.
    healthy = run_zmqfail("health", "--config", cfg)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    lines = healthy.stdout.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["shard s1", "shard s2"], lines
    assert "primary s1-m1" in lines[0] and "primary s2-m2" in lines[1], lines
    one = run_zmqfail("health", "--shard", "s2", "--config", cfg)
    assert one.returncode == 0 and one.stdout.startswith("shard s2: ok"), one.stdout
    # pause / resume reach one shard's servers only; history reads one shard's.
    paused = run_zmqfail("pause", "--shard", "s1", "--config", cfg)
    assert paused.returncode == 0, paused.stderr
    assert sorted(ln.split(":")[0] for ln in paused.stdout.splitlines()) == ["s1-m1", "s1-m2"]
    assert all(st.failover_paused for st in s1.statuses())
    assert not any(st.failover_paused for st in s2.statuses())
    resumed = run_zmqfail("resume", "--shard", "s1", "--config", cfg)
    assert resumed.returncode == 0 and not any(st.failover_paused for st in s1.statuses())
    told = json.loads(run_zmqfail("history", "--shard", "s2", "--json", "--config", cfg).stdout)
    assert told and {e["node"] for e in told} <= {"s2-m1", "s2-m2"}, told[:3]

    # A bench of one shard reaches that shard's primary alone.
    before = {st.name: st.counters.get("requests", 0) for st in whole.statuses()}
    bench = run_zmqfail(
        "client", "bench", "--shard", "s1", "--requests", "300", "--quiet", "--config", cfg
    )
    assert bench.returncode == 0, bench.stdout + bench.stderr
    assert "acknowledged 300 of 300 requests" in bench.stdout
    grew = {st.name: st.counters.get("requests", 0) - before[st.name] for st in whole.statuses()}
    assert grew["s1-m1"] >= 300 and grew["s2-m2"] == 0, grew
    # Without --shard: every shard at once, each reported, then the sum.
    every = run_zmqfail("client", "bench", "--requests", "400", "--quiet", "--config", cfg)
    assert every.returncode == 0, every.stdout + every.stderr
    out = every.stdout
    assert out.index("shard s1:") < out.index("shard s2:"), out
    assert out.count("acknowledged 200 of 200 requests") == 2, out
    assert "all 2 shards: acknowledged 400 of 400 requests" in out, out
    counted = {st.name: st.counters.get("requests", 0) for st in whole.statuses()}
    assert counted["s1-m1"] - before["s1-m1"] >= 500
    assert counted["s2-m2"] - before["s2-m2"] >= 200

    # Both primaries onto machine 1: switch shard s2 over to s2-m1.
    moved = run_zmqfail("switchover", "--shard", "s2", "--config", cfg)
    assert moved.returncode == 0, moved.stderr
    assert "s2-m1 is primary" in moved.stdout
    s2.wait_whole()

    # watch: one block per shard too, s2's last change a switchover.
    once = run_zmqfail("watch", "--once", "--interval", "0.1", "--config", cfg)
    assert once.returncode == 0, once.stderr
    s1_view, s2_view = once.stdout.split("zmqfail cluster ")[1:]
    assert s1_view.startswith("local/s1") and "no failover seen" in s1_view
    assert s2_view.startswith("local/s2") and "last switchover" in s2_view

    # Machine 1 dies: both primaries at once. Each shard fails over to machine
    # 2 on its own, and the report says so per shard, with its outage.
    killed = run_zmqfail("kill", "--machine", "127.0.0.1", "--config", cfg, timeout=90)
    assert killed.returncode == 0, killed.stdout + killed.stderr
    out = killed.stdout
    assert re.search(
        r"SIGKILL sent to every server on 127\.0\.0\.1: s1-m1 \(pid \d+\), "
        r"s2-m1 \(pid \d+\)",
        out,
    ), out
    for shard, old, new in (("s1", "s1-m1", "s1-m2"), ("s2", "s2-m1", "s2-m2")):
        line = next(x for x in out.splitlines() if x.startswith(f"{shard}: "))
        assert f"lost primary {old}" in line, out
        assert re.search(rf"failover .*: {new} took over at epoch \d+, \d+ ms without", line), out
    for cl, new in ((s1, "s1-m2"), (s2, "s2-m2")):
        assert cl.status(new).is_(Role.PRIMARY, State.BACKUP_ONLY)
    # Degraded (each shard runs alone) is status's exit 3.
    after = run_zmqfail("status", "--config", cfg)
    assert after.returncode == 3, after.stdout
    # Machine 1 back: its servers rejoin, each the backup of its shard, and
    # both shards are protected again (led from machine 2).
    back = run_zmqfail("kill", "--machine", "127.0.0.1", "--restart", "--config", cfg, timeout=90)
    assert back.returncode == 0, back.stdout + back.stderr
    for name in ("s1-m1", "s2-m1"):
        assert re.search(rf"^{name} restarted \(pid \d+\): backup \(in sync\)$", back.stdout, re.M)
    assert s1.wait_whole().name == "s1-m2" and s2.wait_whole().name == "s2-m2"
    whole_again = run_zmqfail("status", "--config", cfg)
    assert whole_again.returncode == 0, whole_again.stdout
    assert whole_again.stdout.count("OK  protected") == 2
