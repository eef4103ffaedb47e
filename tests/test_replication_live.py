"""Primary and backup on loopback with real sockets: mirroring, link failover,
catch-up, restart and malformed frames (issue: normal state)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
import zmq
from conftest import BUY, Load, MakeCluster, StartNode, wait_for

from zmqfail import config
from zmqfail.client.control import call
from zmqfail.client.sync import Client
from zmqfail.cluster import Cluster
from zmqfail.failover.state import State
from zmqfail.protocol import AckStatus, CommitAck, CommitRequest, ReplRecords, decode_as
from zmqfail.txlog.recovery import iter_records

pytestmark = pytest.mark.timeout(90)


def in_step(cl: Cluster) -> bool:
    """Both normal, holding the same records and tables."""
    a, b = (cl.status(n, digest=True, timeout=2.0) for n in ("a", "b"))
    return (
        a.state is State.NORMAL
        and b.state is State.NORMAL
        and a.last_lsn == b.last_lsn
        and a.digest is not None
        and a.digest == b.digest
    )


def carried_by(cl: Cluster, name: str, link: str) -> None:
    cl.wait_until(name, lambda s: s.replication_link == link, f"on the {link} link", 10)


def disk_records(cfg: config.ClusterConfig, name: str) -> list[tuple[int, bytes]]:
    return list(iter_records(cfg.node(name).data_dir))


def test_mirrored_state_and_logs_are_equal(
    cluster_dir: Callable[..., Path], node_threads: StartNode
) -> None:
    cfg = config.load(cluster_dir())
    cl = Cluster(cfg)  # the nodes are threads here: the helper only reads them
    a, b = node_threads(cfg, "a"), node_threads(cfg, "b")
    cl.wait("a", State.NORMAL, timeout=10)
    load = Load(cfg)
    wait_for(lambda: load.count() >= 1500, 60, "1500 acknowledged orders")
    load.stop()
    wait_for(lambda: in_step(cl), 10, "backup to apply everything")
    # Both threads share one GIL on a busy machine: a late ack may make a drop b
    # for a moment (then take it back), so wait for the steady state.
    carried_by(cl, "a", "main")
    sa = cl.status("a")
    assert sa.lag == 0
    carried_by(cl, "b", "main")
    a.stop()
    b.stop()
    ra, rb = disk_records(cfg, "a"), disk_records(cfg, "b")
    assert sa.last_lsn is not None and len(ra) == sa.last_lsn >= 1500
    assert ra == rb, "the two transaction logs must be identical"


def test_no_acknowledgement_while_backup_is_frozen(
    cluster_dir: Callable[..., Path], cluster: MakeCluster
) -> None:
    cl = cluster(cluster_dir())
    cfg = cl.cfg
    cl.start("a", "b")
    cl.wait("a", State.NORMAL)
    dead = cfg.failover.heartbeat_interval_ms * cfg.failover.heartbeat_misses / 1000
    with Client(cfg, timeout=5) as c:
        assert c.request(BUY).status == "ok"
        cl.signal("b", signal.SIGSTOP)
        try:
            msg_id = c.submit(BUY)
            # The backup cannot confirm; the primary may not acknowledge until it
            # has proven the backup gone, which takes at least the dead time.
            assert c.poll(dead * 0.75) == []
            sa = cl.status("a")
            assert sa.committed_lsn is not None and sa.last_lsn is not None
            assert sa.committed_lsn < sa.last_lsn or sa.state is State.PRIMARY_ONLY
            got = c.poll(10.0)
            assert [r.msg_id for r in got] == [msg_id]
            sa = cl.status("a")
            assert sa.state is State.PRIMARY_ONLY, "acknowledged alone, so it must run alone"
            assert sa.flushed_lsn is not None and sa.last_lsn is not None
            assert sa.flushed_lsn >= sa.last_lsn, "alone, the ack comes after the flush"
        finally:
            cl.signal("b", signal.SIGCONT)
    cl.wait("a", State.NORMAL)  # b back in sync


def test_main_link_cut_mid_stream_failsafe_carries_on(
    cluster_dir: Callable[..., Path], node_threads: StartNode
) -> None:
    cfg = config.load(cluster_dir())
    cl = Cluster(cfg)
    a, b = node_threads(cfg, "a"), node_threads(cfg, "b")
    cl.wait("a", State.NORMAL, timeout=10)
    load = Load(cfg)
    wait_for(lambda: load.count() >= 300, 30, "load to flow")
    call(cfg.node("b").control, "cut", {"link": "main"})
    carried_by(cl, "a", "failsafe")
    n = load.count()
    wait_for(lambda: load.count() >= n + 500, 30, "orders acknowledged over failsafe")
    assert cl.status("a").state is State.NORMAL, "losing one link is not a state change"
    call(cfg.node("b").control, "heal", {"link": "main"})
    carried_by(cl, "a", "main")
    n = load.count()
    wait_for(lambda: load.count() >= n + 300, 30, "orders acknowledged over main again")
    load.stop()
    wait_for(lambda: in_step(cl), 10, "backup in step")
    a.stop()
    b.stop()
    ra, rb = disk_records(cfg, "a"), disk_records(cfg, "b")
    assert [lsn for lsn, _ in rb] == list(range(1, len(ra) + 1)), "lost or repeated records"
    assert ra == rb


@pytest.mark.parametrize("via_snapshot", [False, True], ids=["records", "snapshot"])
def test_late_backup_catches_up(
    cluster_dir: Callable[..., Path], node_threads: StartNode, via_snapshot: bool
) -> None:
    extra = {"flush__max_memory_bytes": 200_000} if via_snapshot else {}
    cfg = config.load(cluster_dir(**extra))
    cl = Cluster(cfg)
    node_threads(cfg, "a")
    cl.wait("a", State.PRIMARY_ONLY, timeout=10)
    with Client(cfg, timeout=10, window=64) as c:
        for i in range(10_000):
            c.submit({**BUY, "qty": 1 + i % 50, "price": f"{9 + (i % 100) / 100:.2f}"})
            c.poll(0)
        while c.session.outstanding:
            c.poll(5)
    assert cl.status("a").last_lsn == 10_001  # the client's registration too
    node_threads(cfg, "b")
    cl.wait("b", State.SYNCING, State.NORMAL, timeout=10)
    wait_for(lambda: in_step(cl), 60, "b to catch up")
    installed = cl.status("b").counters["snapshots_installed"]
    # A snapshot may go twice when a commit answer races ahead of it; never zero.
    detail = {"b": cl.status("b").counters, "a_backups": cl.status("a").backups}
    assert (installed >= 1) if via_snapshot else (installed == 0), detail


def test_backup_killed_and_restarted_mid_load(
    cluster_dir: Callable[..., Path], cluster: MakeCluster
) -> None:
    cl = cluster(cluster_dir())
    cfg = cl.cfg
    cl.start("a", "b")
    cl.wait("a", State.NORMAL)
    load = Load(cfg)
    wait_for(lambda: load.count() >= 500, 30, "load to flow")
    cl.kill("b")
    n = load.count()
    wait_for(lambda: load.count() >= n + 200, 30, "the primary to carry on while b is down")
    cl.start("b")
    cl.wait("b", State.NORMAL, timeout=30)  # rejoined
    n = load.count()
    wait_for(lambda: load.count() >= n + 300, 30, "load to continue with b back")
    load.stop()
    wait_for(lambda: in_step(cl), 20, "equal digests")
    with Client(cfg, timeout=10) as c:
        orders = [r["order_id"] for r in load.acked.values()]
        for oid in orders[:: max(1, len(orders) // 200)]:
            assert c.request({"op": "status", "order_id": oid}).status == "ok"


def test_malformed_replication_frames_are_refused(
    cluster_dir: Callable[..., Path], node_threads: StartNode, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    cfg = config.load(cluster_dir())
    cl = Cluster(cfg)
    node_threads(cfg, "a")
    node_threads(cfg, "b")
    cl.wait("a", State.NORMAL, timeout=10)
    ends = cfg.node("b").main
    push: zmq.Socket[bytes] = zctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(ends.records)
    good_epoch = cl.status("b").epoch
    assert good_epoch is not None
    for frame in (
        b"garbage",
        msgpack.packb([1, "records", "a", good_epoch, 1, ["not bytes"]]),
        ReplRecords("a", good_epoch, 1, [b"\x93not a record"]).encode(),
        msgpack.packb([1, "hello", "x"]),
    ):
        push.send(frame)
    req: zmq.Socket[bytes] = zctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(ends.ack)
    req.send(b"\x00junk")
    assert req.poll(5000)
    ack = decode_as(req.recv(), CommitAck)
    assert ack.status is AckStatus.GAP
    req.send(CommitRequest("a", 0, 1).encode())  # a stale epoch is fenced
    assert req.poll(5000)
    assert decode_as(req.recv(), CommitAck).status is AckStatus.FENCED
    cl.wait_until("b", lambda s: s.counters["repl_bad_frames"] >= 4, "4 bad frames counted", 10)
    with Client(cfg, timeout=10) as c:
        for i in range(50):
            assert c.request({**BUY, "qty": 1 + i}).status == "ok"
    wait_for(lambda: in_step(cl), 10, "the link keeps working")
