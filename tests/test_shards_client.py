"""The blocking routing client with one shard stuck: a shard whose servers
take requests and never answer fills its window, and the other shards go on
meanwhile. Before, `ShardedClient.submit` and `request` waited inside the
stuck shard's own client, so another shard's submitted requests did not
even leave (they go at a poll) and its failover timers stood still, for as
long as the stuck shard took: up to `lost_after`, 30 s by default. Fake
servers (tests/fakeserver.py), no node process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from fakeserver import ORDER, FakeServer

from zmqfail.client.shards import ShardedClient
from zmqfail.config import ClusterConfig, loads, render_shards
from zmqfail.errors import RequestTimeout, Unavailable
from zmqfail.netutil import free_base_port

pytestmark = pytest.mark.timeout(60)


def order(instrument: str) -> dict[str, Any]:
    return {**ORDER, "instrument": instrument}


@pytest.fixture
def stuck_s1(
    tmp_path: Path, zctx: zmq.Context[zmq.Socket[bytes]]
) -> Iterator[tuple[ClusterConfig, list[FakeServer]]]:
    """Two shards of two servers each (keys ABC, DEF on s1; XYZ, QQQ on
    s2): s1's servers never answer a request, s2's answer at once. Yields
    the config and s2's servers."""
    cfg = loads(render_shards(2, 2, free_base_port(40)), tmp_path)
    servers = {
        sh.name: [
            FakeServer(zctx, answer=sh.name == "s2", endpoint=n.client)
            for n in cfg.shard(sh.name).nodes
        ]
        for sh in cfg.shards
    }
    try:
        yield cfg, servers["s2"]
    finally:
        for srv in servers["s1"] + servers["s2"]:
            srv.close()


def taken(servers: list[FakeServer]) -> list[int]:
    return sorted(i for srv in servers for i in srv.requests())


def test_submit_to_a_full_shard_lets_the_other_shards_go_on(
    stuck_s1: tuple[ClusterConfig, list[FakeServer]],
) -> None:
    cfg, s2 = stuck_s1
    with ShardedClient(cfg, timeout=1.0, window=2) as sc:
        sc.connect(5)
        assert sc.submit(order("XYZ")) == ("s2", 1)  # queued: it leaves at a poll
        assert [sc.submit(order("ABC")) for _ in range(2)] == [("s1", 1), ("s1", 2)]
        assert taken(s2) == []
        t0 = time.monotonic()
        with pytest.raises(RequestTimeout, match="shard s1: its window of 2"):
            sc.submit(order("DEF"))  # s1's window is full and stays full
        assert time.monotonic() - t0 >= 1.0  # it waited its timeout for room
        # Meanwhile s2's request left, was answered, and its reply waits for
        # the next poll, which hands it over at once.
        assert taken(s2) == [1]
        got = sc.poll(0)
        assert [(shard, r.msg_id, r.status) for shard, r in got] == [("s2", 1, "ok")]
        assert sc.outstanding() == 2  # s1's two, still without a reply


def test_request_waits_for_its_own_reply_and_keeps_the_others(
    stuck_s1: tuple[ClusterConfig, list[FakeServer]],
) -> None:
    cfg, s2 = stuck_s1
    with ShardedClient(cfg, timeout=1.0, window=4) as sc:
        sc.connect(5)
        assert sc.submit(order("QQQ")) == ("s2", 1)
        with pytest.raises(RequestTimeout, match=r"shard s1: no reply to msg_id 1 within 0\.5s"):
            sc.request(order("ABC"), timeout=0.5)
        assert taken(s2) == [1]  # s2's request left while s1's was awaited
        # A request to s2 returns its own reply; the one taken before it
        # (msg_id 1) is kept for the next poll, not lost.
        mine = sc.request(order("XYZ"))
        assert (mine.msg_id, mine.status) == (2, "ok")
        got = sc.poll(0)
        assert [(shard, r.msg_id) for shard, r in got] == [("s2", 1)]


def answered_and_waiting(sc: ShardedClient, shard: str) -> None:
    """Until `shard`'s client has a reply readable, not yet read."""
    client = sc.client(shard)
    client.flush()
    assert client.poller.poll(10_000), f"{shard} did not answer"


def test_a_lost_shard_costs_the_other_shards_no_reply(
    stuck_s1: tuple[ClusterConfig, list[FakeServer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard's client raises Unavailable once it is lost. The round of
    polls that meets it has already taken the replies of the shards polled
    before it, completing them in their own clients: found by review, they
    were dropped with the exception, in `request` (its own shard lost) and in
    `poll` (any shard lost), and no later call could return them."""
    cfg, _ = stuck_s1
    with ShardedClient(cfg, timeout=5.0, window=4) as sc:
        sc.connect(5)
        assert sc.submit(order("XYZ")) == ("s2", 1)  # s2 is polled first in a round
        answered_and_waiting(sc, "s2")

        def lost(timeout: float, raise_on_timeout: bool = False) -> list[Any]:
            raise Unavailable("no server answered for 30s (s1 is lost)")

        monkeypatch.setattr(sc.client("s1"), "poll", lost)
        with pytest.raises(Unavailable, match="s1 is lost"):
            sc.request(order("ABC"))
        assert sc.outstanding() == 2  # s1's request, and s2's reply not yet handed over
        assert [(shard, r.msg_id) for shard, r in sc.poll(0)] == [("s2", 1)]
        # poll itself: the lost shard raises, what s2 answered comes next.
        assert sc.submit(order("QQQ")) == ("s2", 2)
        answered_and_waiting(sc, "s2")
        with pytest.raises(Unavailable, match="s1 is lost"):
            sc.poll(0)
        assert [(shard, r.msg_id) for shard, r in sc.poll(0)] == [("s2", 2)]
