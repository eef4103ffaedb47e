"""CurveZMQ on a real pair: who is served, who is refused, and that the
refusal is logged while the cluster goes on as before."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from conftest import BUY, Load, MakeCluster, Procs, moves, run_zmqfail, wait_for

from zmqfail import config
from zmqfail.client.aio import AsyncClient
from zmqfail.client.control import call
from zmqfail.client.sync import Client
from zmqfail.cluster import Cluster
from zmqfail.config import ClusterConfig
from zmqfail.core.status import NodeStatus
from zmqfail.errors import RequestTimeout, Unavailable, ZmqfailError
from zmqfail.failover.state import Role, State
from zmqfail.netutil import free_base_port
from zmqfail.protocol import ControlRequest
from zmqfail.security import Dial, KeyPair, generate, generate_cluster, load_pair

pytestmark = pytest.mark.timeout(120)

Ctx = zmq.Context[zmq.Socket[bytes]]


@pytest.fixture
def secured(tmp_path: Path) -> Path:
    path = tmp_path / "zmqfail.toml"
    path.write_text(config.render(base_port=free_base_port(25), secure=True))
    generate_cluster(tmp_path / "keys", ["a", "b"])
    return path


@pytest.fixture
def whole_pair(secured: Path, cluster: MakeCluster) -> Cluster:
    """A secured pair, started and whole."""
    cl = cluster(secured)
    cl.start()
    cl.wait_whole(timeout=40)
    return cl


@pytest.fixture
def ctx() -> Iterator[Ctx]:
    c: Ctx = zmq.Context()
    c.setsockopt(zmq.LINGER, 0)
    yield c
    c.destroy(linger=0)


def _mallory(tmp_path: Path) -> KeyPair:
    """A key pair no allow-list holds."""
    _, secret = generate(tmp_path / "rogue", "mallory")
    return load_pair(secret, "mallory")


def _with_client_key(cfg: ClusterConfig, key: Path) -> ClusterConfig:
    assert cfg.security is not None
    return dataclasses.replace(cfg, security=dataclasses.replace(cfg.security, client_key=key))


def _refusals(procs: Procs, node: str, channel: str, key: bytes) -> bool:
    line = f"refused a {channel} connection from 127.0.0.1: key {key.decode()}"
    return line in procs.log_text(f"node-{node}")


def _keyless(procs: Procs, node: str, channel: str) -> bool:
    # The words depend on which side saw the mismatch first (ours: "offered
    # no CURVE key"; the peer's, which hangs up: "Broken pipe" and the like).
    return f"refused a {channel} connection on tcp://" in procs.log_text(f"node-{node}")


def test_a_client_with_an_unknown_key_is_refused_and_logged_while_others_are_served(
    whole_pair: Cluster, procs: Procs, tmp_path: Path, ctx: Ctx
) -> None:
    cl = whole_pair
    cfg = cl.cfg
    with Client(cfg, timeout=10.0) as good:
        assert good.request(BUY).status == "ok"
        mallory = _mallory(tmp_path)
        rogue = _with_client_key(cfg, tmp_path / "rogue" / "mallory.key_secret")
        with (
            Client(rogue, timeout=1.5, lost_after=1.5) as bad,
            pytest.raises((Unavailable, RequestTimeout)),
        ):
            bad.request(BUY)
        # Both servers refused the handshake, and said so with the key.
        for node in ("a", "b"):
            wait_for(
                lambda n=node: _refusals(procs, n, "clients", mallory.public),  # type: ignore[misc]
                10,
                f"{node} to log the refusal",
            )
        # A client without keys gets nowhere either (the handshake fails).
        plain = [n.client for n in cfg.nodes]
        with (
            Client(plain, timeout=1.5, lost_after=1.5) as c,
            pytest.raises((Unavailable, RequestTimeout)),
        ):
            c.request(BUY)
        # ... and is logged, though ZAP never hears of it (the handshake
        # fails on the mechanism, before libzmq asks the handler). A bare
        # DEALER keeps trying both servers while we wait.
        keyless = ctx.socket(zmq.DEALER)
        try:
            for end in plain:
                keyless.connect(end)
            for node in ("a", "b"):
                wait_for(
                    lambda n=node: _keyless(procs, n, "clients"),  # type: ignore[misc]
                    30,
                    f"{node} to log the client without keys",
                )
        finally:
            keyless.close(linger=0)
        # The authorised client is still served, on the same session.
        assert good.request(BUY).status == "ok"
        assert cl.status("a").counters["curve_refused"] >= 1  # counted in status too
    # Operators with the wrong key get no status either; with the right one, they do.
    assert cfg.security is not None
    rogue_ops = dataclasses.replace(
        cfg.security, operator_key=tmp_path / "rogue" / "mallory.key_secret"
    )
    ops = dataclasses.replace(cfg.nodes[0], security=rogue_ops)
    with pytest.raises(ZmqfailError, match="no answer"):
        call(ops, "status", timeout=1.0)
    wait_for(lambda: _refusals(procs, "a", "control", mallory.public), 10, "control refusal")
    # An operator tool without keys: refused, and logged.
    keyless_ops = dataclasses.replace(cfg.nodes[0], security=None)
    with pytest.raises(ZmqfailError, match="no answer"):
        call(keyless_ops, "status", timeout=1.0)
    wait_for(lambda: _keyless(procs, "a", "control"), 30, "the keyless operator's refusal")
    assert cl.status("a").role is Role.PRIMARY


def _repl_status(st: NodeStatus) -> int:
    return int(st.counters["repl_bad_frames"])


def test_a_replication_peer_with_a_foreign_key_is_refused(
    whole_pair: Cluster, procs: Procs, tmp_path: Path, ctx: Ctx
) -> None:
    cl = whole_pair
    cfg = cl.cfg
    sec = cfg.security
    assert sec is not None
    mallory = _mallory(tmp_path)
    b_pub = sec.server_public("b")
    with Client(cfg, timeout=10.0) as good:
        for _ in range(5):
            assert good.request(BUY).status == "ok"
        assert _repl_status(cl.status("b")) == 0

        def dialled(kind: int, endpoint: str, pair: KeyPair, server: bytes) -> zmq.Socket[bytes]:
            s: zmq.Socket[bytes] = ctx.socket(kind)
            s.setsockopt(zmq.LINGER, 0)
            Dial(pair, server).apply(s)
            s.connect(endpoint)
            return s

        # The backup's records, commit and (the primary's) heartbeat endpoints
        # of both links, dialled with a key that is not a server's.
        junk = b"\x01not a record"
        pushes, reqs, subs = [], [], []
        for link in ("main", "failsafe"):
            ends_b, ends_a = cfg.node("b").link(link), cfg.node("a").link(link)
            push = dialled(zmq.PUSH, ends_b.records, mallory, b_pub)
            req = dialled(zmq.REQ, ends_b.ack, mallory, b_pub)
            sub = dialled(zmq.SUB, ends_a.heartbeat, mallory, sec.server_public("a"))
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            push.send(junk)  # queued until a handshake that never succeeds
            req.send(junk)
            pushes.append(push)
            reqs.append(req)
            subs.append(sub)
        wait_for(lambda: _refusals(procs, "b", "replication", mallory.public), 10, "b refuses")
        wait_for(lambda: _refusals(procs, "a", "replication", mallory.public), 10, "a refuses")
        for req in reqs:
            assert not req.poll(300), "a foreign key's commit request was answered"
        for sub in subs:
            assert not sub.poll(300), "a foreign key got heartbeats"
        for _ in range(5):
            assert good.request(BUY).status == "ok"
        rows = cl.wait_whole(timeout=20)
        assert rows.name == "a"

        def same() -> bool:
            a, b = cl.status("a", digest=True), cl.status("b", digest=True)
            return a.digest is not None and a.digest == b.digest and a.last_lsn == b.last_lsn

        wait_for(same, 10, "equal digests")
        assert _repl_status(cl.status("b")) == 0, "a refused peer's frame reached the backup"

        # The check can fail: the same junk, dialled with server a's own key
        # (a process holding a server key), does reach the backup and is counted.
        a_key = sec.server_pair("a")
        push = dialled(zmq.PUSH, cfg.node("b").main.records, a_key, b_pub)
        push.send(junk)
        wait_for(lambda: _repl_status(cl.status("b")) >= 1, 10, "the server key's frame to arrive")
        b_key, a_pub = sec.server_pair("b"), sec.server_public("a")
        hb = dialled(zmq.SUB, cfg.node("a").main.heartbeat, b_key, a_pub)
        hb.setsockopt(zmq.SUBSCRIBE, b"")
        assert hb.poll(5000), "a server key gets the heartbeats"


def test_the_asyncio_client_reads_its_keys_from_the_config(whole_pair: Cluster) -> None:
    cl = whole_pair

    async def order() -> str:
        c = AsyncClient(cl.cfg, timeout=10.0)
        try:
            return (await c.request(BUY)).status
        finally:
            await c.close()

    assert asyncio.run(order()) == "ok"


def test_a_secured_witness_elects_for_the_servers_and_refuses_other_keys(
    tmp_path: Path, cluster: MakeCluster, procs: Procs, ctx: Ctx
) -> None:
    path = tmp_path / "zmqfail.toml"
    path.write_text(config.render(base_port=free_base_port(25), witness=True, secure=True))
    generate_cluster(tmp_path / "keys", ["a", "b", "witness"])
    procs.start("witness", "--config", str(path), log="witness")
    cl = cluster(path)
    cl.start()
    cl.wait_whole(timeout=40)  # every epoch is the witness's grant: the servers reached it
    r = run_zmqfail("witness", "--config", str(path), "--status", "--json", "--timeout", "5")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["leader"] == "a"
    cfg = cl.cfg
    assert cfg.witness is not None and cfg.security is not None
    mallory = _mallory(tmp_path)
    s: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    Dial(mallory, cfg.security.server_public("witness")).apply(s)
    s.connect(cfg.witness.endpoint)
    s.send(ControlRequest("status", {}).encode())
    wait_for(
        lambda: (
            f"refused a witness connection from 127.0.0.1: key {mallory.public.decode()}"
            in procs.log_text("witness")
        ),
        10,
        "the witness to log the refusal",
    )
    assert not s.poll(300), "a foreign key got the witness's status"


def test_a_secured_pair_fails_over_and_its_probes_get_through(whole_pair: Cluster) -> None:
    """Step 420 on CURVE: the backup's probes reach the primary's frontend with
    a server key (a refused probe would read as a dead primary: a false
    takeover); then a real takeover, the client following with its keys."""
    cl = whole_pair
    cfg = cl.cfg
    load = Load(cfg, window=8)
    wait_for(lambda: load.count() >= 100, 30, "load on a")
    for link in ("main", "failsafe"):
        call(cfg.node("a"), "cut", {"link": link})
    cl.wait("a", State.PRIMARY_ONLY, timeout=10)
    sb = cl.wait("b", State.STANDBY, timeout=10)
    assert sb.role is Role.BACKUP and sb.transitions[-1].why == "PrimaryReachable"
    for link in ("main", "failsafe"):
        call(cfg.node("a"), "heal", {"link": link})
    assert cl.wait_whole(timeout=30).name == "a"  # b back in sync: it may take over again
    cl.kill("a")
    cl.wait("b", State.BACKUP_ONLY, role=Role.PRIMARY, timeout=20)
    base = load.count()
    wait_for(lambda: load.count() >= base + 100, 30, "load continuing on b")
    load.stop()
    assert moves(load.client.failovers) == ["b"]
