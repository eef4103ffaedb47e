"""The typed node status (decoded and checked from the wire) and the cluster
helper every tool and process test starts nodes with: its waits fail with
what the node is doing, at the deadline or at once when our process exits,
and it ends what it started."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import msgpack
import pytest

from zmqfail import cluster, config
from zmqfail.client import control
from zmqfail.cluster import Cluster, where, whole
from zmqfail.core.journal import SetAside, StateChange
from zmqfail.core.status import BackupSeen, NodeStatus, PeerSeen
from zmqfail.errors import ConfigError, NodeError, ProtocolError, Unavailable
from zmqfail.failover.state import Role, State

pytestmark = pytest.mark.timeout(60)


def sample() -> NodeStatus:
    return NodeStatus(
        "a",
        Role.PRIMARY,
        State.NORMAL,
        epoch=3,
        last_lsn=12,
        committed_lsn=11,
        flushed_lsn=10,
        snapshot_lsn=4,
        flush_mode="periodic",
        pid=99,
        uptime=1.5,
        lag=1,
        replication_link="main",
        cut_links=["clients"],
        cut_one_way={"clients": "out"},
        delays_ms={"main": 5},
        held_replies=2,
        clients=3,
        transitions=[
            StateChange(
                10.0,
                State.STARTING,
                State.PRIMARY_ONLY,
                "StartupDone",
                1,
                src_role=Role.BACKUP,
                dst_role=Role.PRIMARY,
                lsn=9,
            )
        ],
        counters={"requests": 7},
        app={"name": "orders", "tables": {"orders": 2}},
        sessions={"sessions": 1, "evictions": 0},
        peers={
            "b": PeerSeen(4.5, Role.BACKUP, State.NORMAL, 3, 12, {"main": 4.5, "failsafe": None})
        },
        backups={"b": BackupSeen(12, True, True, "main", {"main": True, "failsafe": False})},
        quarantine=[
            StateChange(
                9.0,
                State.STARTING,
                State.STARTING,
                "set aside 2 records (does not apply)",
                1,
                set_aside=SetAside(2, 3, 4, "/d/a/quarantine/x"),
                quarantined=2,
            )
        ],
        failover_paused=True,
        witness={"asking": 0, "lease_left_ms": 800, "refusals": 1},
        digest="ab" * 32,
    )


def test_a_status_goes_over_the_wire_as_values_and_comes_back_as_enums() -> None:
    st = sample()
    # Every field a node sends is set in the sample, so a field added to
    # NodeStatus that the decoder forgets fails here (`error` is the reader's).
    defaults = NodeStatus("x")
    unset = [f.name for f in fields(NodeStatus) if getattr(st, f.name) == getattr(defaults, f.name)]
    assert unset == ["error"], unset
    wire = msgpack.unpackb(msgpack.packb(st.to_dict()), raw=False)
    assert wire["role"] == "primary" and wire["state"] == "normal"
    assert wire["peers"]["b"]["state"] == "normal"
    assert wire["transitions"][0]["to"] == "primary_only"
    back = NodeStatus.from_wire(wire)
    assert back == st
    assert back.role is Role.PRIMARY and back.peers["b"].role is Role.BACKUP
    assert back.serving and back.is_(Role.PRIMARY, State.NORMAL, State.PRIMARY_ONLY)


def test_an_older_node_missing_keys_gets_defaults_and_unknown_keys_are_ignored() -> None:
    st = NodeStatus.from_wire({"name": "b", "role": "backup", "state": "syncing", "new": [1]})
    assert (st.role, st.state, st.epoch, st.counters, st.backups) == (
        Role.BACKUP,
        State.SYNCING,
        None,
        {},
        None,
    )
    assert not st.serving and st.reachable


BAD: list[tuple[dict[str, Any], str]] = [
    ({"name": "a", "role": "leader", "state": "normal"}, "unknown status role 'leader'"),
    ({"name": "a", "role": "primary", "state": "Normal"}, "unknown status state 'Normal'"),
    ({"name": "a", "role": "primary"}, "unknown status state None"),
    ({"name": "a", "role": "primary", "state": "unreachable"}, "unknown status state"),
    ({"role": "primary", "state": "normal"}, "status lacks 'name'"),
    ({"name": "a", "state": "normal", "epoch": "1"}, "status epoch must be an integer"),
    ({"name": "a", "state": "normal", "epoch": True}, "status epoch must be an integer"),
    ({"name": "a", "state": "normal", "counters": {"x": "1"}}, "counters must hold integers"),
    ({"name": "a", "state": "normal", "peers": {"b": {"role": "boss"}}}, "role 'boss'"),
    ({"name": "a", "state": "normal", "peers": {"b": 3}}, "must be a map"),
    (
        {"name": "a", "state": "normal", "transitions": [{"from": "x", "to": "normal"}]},
        "unknown status transition from 'x'",
    ),
    (
        {"name": "a", "state": "normal", "backups": {"b": {"links_up": {"main": "yes"}}}},
        "links_up main must be true or false",
    ),
    ({"name": "a", "state": "normal", "app": {"x": {1, 2}}}, "which frames do not carry"),
    ({"name": "a", "state": "normal", "failover_paused": "no"}, "failover_paused must be true"),
    (
        {
            "name": "a",
            "state": "normal",
            "quarantine": [{"from": "normal", "to": "normal", "records": 2}],
        },
        "status quarantine sets 2 records aside without",
    ),
]


@pytest.mark.parametrize(("wire", "why"), BAD, ids=[w for _, w in BAD])
def test_a_bad_status_is_a_clear_protocol_error(wire: dict[str, Any], why: str) -> None:
    with pytest.raises(ProtocolError, match=why.replace("(", r"\(").replace(")", r"\)")):
        NodeStatus.from_wire(wire)


def test_a_reply_that_is_no_status_makes_the_node_unreachable_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, cluster_dir: Any
) -> None:
    cfg = config.load(cluster_dir())
    monkeypatch.setattr(control, "call", lambda *a, **k: {"name": "a", "state": "boss"})
    st = control.node_status(cfg.node("a"))
    assert not st.reachable and st.state is None
    assert st.error is not None and "bad status from" in st.error and "'boss'" in st.error
    assert where(st).startswith("unreachable (bad status from")
    row = st.to_json()
    assert row["state"] == "unreachable" and row["role"] is None and "boss" in row["error"]
    assert set(control.STATUS_KEYS) <= set(row)


def test_whole_means_one_primary_and_every_other_node_its_backup() -> None:
    p = NodeStatus("a", Role.PRIMARY, State.NORMAL)
    b = NodeStatus("b", Role.BACKUP, State.NORMAL)
    assert whole([p, b]) and whole([b, p])
    assert not whole([p, NodeStatus("b", Role.BACKUP, State.SYNCING)])
    assert not whole([p, NodeStatus.unreachable("b")])
    assert not whole([p, NodeStatus("b", Role.PRIMARY, State.NORMAL)])


# ------------------------------------------------------------ the helper
def fake(code: str) -> Any:
    """A stand-in node process: Python running `code`, in its own session."""

    def spawn(name: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)

    return spawn


@pytest.fixture
def cfg(cluster_dir: Any) -> config.ClusterConfig:
    return config.load(cluster_dir())


@pytest.fixture
def quick_readings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readings of nodes that cannot answer (none runs) cut short: each would
    take the full ASK (2 s), and a wait ends only after its reading."""
    monkeypatch.setattr(cluster, "ASK", 0.2)


@pytest.mark.usefixtures("quick_readings")
def test_a_wait_fails_at_the_deadline_saying_what_the_node_is(cfg: config.ClusterConfig) -> None:
    cl = Cluster(cfg)  # nothing started: nobody answers
    with pytest.raises(Unavailable, match=r"node a did not become primary/normal within 0.3s"):
        cl.wait("a", State.NORMAL, role=Role.PRIMARY, timeout=0.3)
    with pytest.raises(Unavailable, match=r"it is unreachable \(no answer from"):
        cl.wait_until("b", lambda s: s.reachable, "reachable", 0.3)
    with pytest.raises(Unavailable, match=r"the cluster did not become whole .* a unreachable"):
        cl.wait_whole(timeout=0.3)


@pytest.mark.usefixtures("quick_readings")
def test_a_wait_fails_at_once_when_our_node_process_exits(
    cfg: config.ClusterConfig, tmp_path: Path
) -> None:
    """The deadline is longer than the test's own timeout: only the exit can end it."""
    cl = Cluster(cfg, fake("import sys; sys.exit(3)"), logs=tmp_path)
    with cl:
        cl.start("a")
        with pytest.raises(NodeError, match=r"node a exited with status 3 .*/node-a\.log$"):
            cl.wait("a", State.NORMAL, timeout=600)
    # Another tool may restart the node: then an exit of ours is no verdict.
    other = Cluster(cfg, fake("import sys; sys.exit(3)"), sole_owner=False)
    with other:
        other.start("a")
        other.procs["a"].wait(10)
        with pytest.raises(Unavailable):
            other.wait("a", State.NORMAL, timeout=0.3)


def test_a_node_whose_process_exited_is_unreachable_without_asking(
    cfg: config.ClusterConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked, a dead node cost every reading of the cluster its whole timeout."""
    asked: list[str] = []
    real = control.node_status

    def spy(node: config.NodeConfig, digest: bool = False, timeout: float = 1.0) -> NodeStatus:
        asked.append(node.name)
        return real(node, digest, timeout)

    monkeypatch.setattr(cluster, "node_status", spy)
    exits = fake("import sys; sys.exit(3)")
    with Cluster(cfg, exits) as cl:
        cl.start("a")
        cl.procs["a"].wait(10)
        rows = cl.statuses(timeout=0.2)
        assert [(r.name, r.reachable) for r in rows] == [("a", False), ("b", False)]
        assert rows[0].error == "its process exited with status 3"
        assert asked == ["b"]  # b has no process of ours: asked, silent
        down = cl.wait_until("a", lambda st: not st.reachable, "down", timeout=0.1)
        assert down.error == rows[0].error and asked == ["b"]
    # Another tool may have started the node again: then it is asked.
    with Cluster(cfg, exits, sole_owner=False) as other:
        other.start("a")
        other.procs["a"].wait(10)
        error = other.status("a", timeout=0.2).error
        assert error is not None and error.startswith("no answer from"), error
        assert asked == ["b", "a"]


def test_close_and_kill_end_what_was_started(cfg: config.ClusterConfig) -> None:
    cl = Cluster(cfg, fake("import time; time.sleep(600)"))
    cl.start()  # every node of the config
    assert sorted(cl.procs) == ["a", "b"]
    assert cl.kill("a") == -9
    cl.close()
    assert all(p.poll() is not None for p in cl.procs.values())
    with pytest.raises(ConfigError):
        cl.start("zz")
    with pytest.raises(NodeError, match="not started here"):
        Cluster(cfg).kill("a")


def test_a_cluster_in_a_directory_has_its_config_data_and_logs_there(tmp_path: Path) -> None:
    cl = Cluster.in_dir(tmp_path / "c", nodes=3, app="ledger", name="t")
    assert cl.path == tmp_path / "c" / "zmqfail.toml" and cl.path.exists()
    assert [n.name for n in cl.cfg.nodes] == ["a", "b", "c"]
    assert cl.cfg.app.name == "ledger" and cl.cfg.name == "t"
    assert cl.log_of("b") == tmp_path / "c" / "node-b.log"
    no_file = Cluster(config.loads(config.render(), tmp_path))
    with pytest.raises(ConfigError, match="needs a config file"):
        no_file.start("a")
