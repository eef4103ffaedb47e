"""Sessions on real nodes: eviction is the same on primary and backup (the
backup that takes over after a kill -9 refuses the evicted session and serves
the live ones without a new registration), an evicted client's resend is
refused and never executed again, and the client library registers again by
itself after its session expired."""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
from conftest import BUY, MakeCluster, StartNode, wait_for

from zmqfail import config
from zmqfail.audit import requests_in_log
from zmqfail.client.sync import Client
from zmqfail.failover.state import Role, State
from zmqfail.protocol import Register, Reply, Request, SessionGrant, decode

pytestmark = pytest.mark.timeout(90)


class Raw:
    """A client by hand: a DEALER per server, sessions and msg_ids chosen by the test."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], cfg: config.ClusterConfig, cid: str):
        self.cid = cid
        self.socks: dict[str, zmq.Socket[bytes]] = {}
        for n in cfg.nodes:
            s: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.ROUTING_ID, cid.encode())
            s.connect(n.client)
            self.socks[n.name] = s

    def _recv(self, server: str) -> Any:
        s = self.socks[server]
        assert s.poll(10_000), f"no answer from {server}"
        return decode(s.recv())

    def register(self, server: str, nonce: int = 1) -> int:
        self.socks[server].send(Register(self.cid, nonce).encode())
        grant = self._recv(server)
        assert isinstance(grant, SessionGrant), grant
        return grant.session

    def send(self, server: str, msg_id: int, body: dict[str, Any], session: int) -> Reply:
        self.socks[server].send(Request(self.cid, msg_id, body, session).encode())
        rep = self._recv(server)
        assert isinstance(rep, Reply), rep
        return rep


@pytest.mark.process
def test_eviction_is_the_same_on_the_backup_that_takes_over(
    cluster: MakeCluster,
    cluster_dir: Callable[..., Path],
    zctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    cl = cluster(cluster_dir(sessions__max_sessions=3))
    cfg = cl.cfg
    cl.start("a", "b")
    cl.wait("a", State.NORMAL, role=Role.PRIMARY)
    cl.wait("b", State.NORMAL, role=Role.BACKUP)

    r = Raw(zctx, cfg, "r")
    sid_r = r.register("a")
    first = r.send("a", 1, BUY, sid_r)
    assert first.status == "ok"
    with Client(cfg, client_id="x", timeout=10) as x:  # x writes: active after r
        assert x.request(BUY).status == "ok"
        others = [Raw(zctx, cfg, c) for c in ("y", "z")]
        for o in others:
            o.register("a")  # z's registration fills the table: r, least recently active, goes

        def same_digests() -> bool:
            a, b = cl.status("a", digest=True, timeout=2.0), cl.status("b", True, 2.0)
            return a.digest is not None and a.digest == b.digest

        wait_for(same_digests, 20, "a and b to hold the same state, sessions included")
        for n in ("a", "b"):
            assert cl.status(n).sessions["evictions"] == 1
            assert cl.status(n).sessions["sessions"] == 3

        again = r.send("a", 1, BUY, sid_r)  # the evicted client's resend
        assert again.status == "expired" and again.result["code"] == "session_expired"

        cl.kill("a")
        # x's next request fails over to b (its hello is the client vote) and
        # is served in x's original session: b has it, as a had.
        rep = x.request({**BUY, "qty": 3}, timeout=30)
        assert (rep.status, rep.server) == ("ok", "b")
        assert x.session.registrations == 1
        # b refuses the evicted session exactly as a did.
        assert r.send("b", 1, BUY, sid_r).status == "expired"
    cl.stop("b")
    seen = collections.Counter(requests_in_log(cfg.node("b").data_dir))
    assert seen[("r", 1)] == 1, "the evicted client's request ran once, never again"
    assert seen[("x", 1)] == seen[("x", 2)] == 1


def test_an_expired_client_registers_again_by_itself(
    cluster_dir: Callable[..., Path], node_threads: StartNode
) -> None:
    cfg = config.load(cluster_dir(sessions__max_sessions=2))
    a = node_threads(cfg, "a")
    a.wait_active()
    with Client(cfg, client_id="w", timeout=10) as w:
        assert w.request(BUY).status == "ok"
        for cid in ("p", "q"):  # two newer clients: w's session is evicted
            with Client(cfg, client_id=cid, timeout=10) as other:
                assert other.request({"op": "book", "instrument": "ABC"}).status == "ok"
        assert "w" not in a.node.core.nlog.proc.sessions.live
        lost = w.request({**BUY, "qty": 7})
        assert lost.status == "expired" and "outcome is unknown" in lost.result["message"]
        assert w.session.expired == 1 and w.session.must_register is False  # registering
        assert w.request({**BUY, "qty": 8}).status == "ok"  # in a new session
        assert w.session.registrations == 2
    a.stop()
    log = requests_in_log(cfg.node("a").data_dir)
    assert [m for c, m in log if c == "w"] == [1, 3], "the refused request (msg 2) never ran"
    assert a.node.core.nlog.proc.app.describe().tables["orders"] == 2
