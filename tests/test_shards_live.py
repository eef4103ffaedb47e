"""Two shards crossed over two machines (the reference's double failover,
paragraph 71), with real processes: machine 1 runs shard s1's primary and
shard s2's backup, machine 2 the other way round; the "machines" are the
loopback addresses 127.0.0.1 and 127.0.0.2. Orders for the instruments of
both shards go through the routing client; kill -9 of machine 1's servers
fails over s1 while s2 loses only its backup; both serve again, every
acknowledged order is in its own shard's log exactly once and in no other,
and the restarted machine rejoins as the backup of both."""

from __future__ import annotations

import asyncio
import collections
import random
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import MakeCluster, wait_for

from zmqfail import config
from zmqfail.audit import records
from zmqfail.cli.demo import random_order
from zmqfail.client.shards import AsyncShardedClient, ShardedClient
from zmqfail.cluster import Cluster
from zmqfail.errors import RoutingError
from zmqfail.failover.state import Role
from zmqfail.netutil import free_base_port
from zmqfail.protocol import Reply

pytestmark = [pytest.mark.timeout(150), pytest.mark.process]

WINDOW = 16


class ShardLoad:
    """Orders for every instrument through one routing client, on a thread;
    the acknowledged msg_ids per shard. A shard whose window is full is
    skipped, not waited on, so a shard failing over never holds up the other."""

    def __init__(self, cfg: config.ClusterConfig) -> None:
        self.client = ShardedClient(cfg, timeout=10.0, window=WINDOW)
        self.instruments = tuple(sorted(k for sh in cfg.shards for k in sh.keys or ()))
        self.acked: dict[str, set[int]] = {sh.name: set() for sh in cfg.shards}
        self.errors: list[str] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sc = self.client
        rng = random.Random(14)
        try:
            while not self.stop_event.is_set():
                body = random_order(rng, self.instruments)
                shard = sc.router.route(body)
                if len(sc.client(shard).session.outstanding) < WINDOW:
                    sc.submit(body)
                self._take(sc.poll(0.0 if sc.outstanding() < 2 * WINDOW else 0.05))
            while sc.outstanding():
                self._take(sc.poll(10.0))
        except Exception as exc:  # reported by stop()
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _take(self, got: list[tuple[str, Any]]) -> None:
        for shard, rep in got:
            if rep.status != "ok":
                self.errors.append(f"{shard} msg {rep.msg_id}: {rep.status} {rep.result}")
            self.acked[shard].add(rep.msg_id)

    def count(self, shard: str) -> int:
        return len(self.acked[shard])

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=60)
        self.client.close()
        assert not self.thread.is_alive(), "load thread did not finish"
        assert not self.errors, self.errors[:5]


def wait_more(load: ShardLoad, n: int, what: str) -> None:
    """Until every shard acknowledged `n` more orders than now."""
    want = {s: load.count(s) + n for s in load.acked}
    wait_for(lambda: all(load.count(s) >= want[s] for s in want), 40, what)


def check_shard_log(cfg: config.ClusterConfig, shard: str, node: str, load: ShardLoad) -> None:
    """Every order `shard` acknowledged is in `node`'s log exactly once, and
    every order there is for an instrument the shard owns."""
    owned = next(sh.keys for sh in cfg.shards if sh.name == shard)
    assert owned is not None
    writes = [r for r in records(cfg.node(node).data_dir) if r.client_id and r.msg_id > 0]
    strays = [r.body.get("instrument") for r in writes if r.body.get("instrument") not in owned]
    assert not strays, f"{node} of {shard} logged orders for other shards' instruments: {strays}"
    seen = collections.Counter((r.client_id, r.msg_id) for r in writes)
    assert not [k for k, n in seen.items() if n > 1], f"applied twice on {node}"
    cid = load.client.client_id
    lost = sorted(m for m in load.acked[shard] if seen[(cid, m)] != 1)
    assert not lost, f"acknowledged by {shard} but not in {node}'s log: {lost[:10]}"


async def async_orders(cfg: config.ClusterConfig) -> list[Reply]:
    ac = AsyncShardedClient(cfg, timeout=10.0)
    try:
        rng = random.Random(5)
        bodies = [
            random_order(rng, tuple(sorted(sh.keys or ()))) for sh in cfg.shards for _ in range(20)
        ]
        with pytest.raises(RoutingError, match="no shard owns key 'NOPE'"):
            await ac.request({**bodies[0], "instrument": "NOPE"})
        return list(await asyncio.gather(*(ac.request(b) for b in bodies)))
    finally:
        await ac.close()


def same_tables(cl: Cluster, x: str, y: str) -> bool:
    dx, dy = (cl.status(n, digest=True, timeout=2.0).digest for n in (x, y))
    return dx is not None and dx == dy


def test_two_shards_crossed_survive_the_loss_of_a_machine(
    cluster: MakeCluster, tmp_path: Path
) -> None:
    path = tmp_path / "zmqfail.toml"
    path.write_text(config.render_shards(2, 2, free_base_port(45)))
    whole = cluster(path)
    cfg = whole.cfg
    s1, s2 = whole.shard("s1"), whole.shard("s2")
    # Paragraph 71: machine 1 leads s1 and backs up s2; machine 2 the reverse.
    led = whole.start_shards()
    assert {k: v.name for k, v in led.items()} == {"s1": "s1-m1", "s2": "s2-m2"}

    load = ShardLoad(cfg)
    try:
        wait_more(load, 100, "orders acknowledged by both shards")
        # Machine 1 dies: s1's primary and s2's backup, kill -9 together.
        s1.kill("s1-m1")
        s2.kill("s2-m1")
        # s1 fails over to machine 2; s2's primary runs alone there.
        s1.wait_until("s1-m2", lambda st: st.serving, "serving s1", timeout=20)
        s2.wait_until("s2-m2", lambda st: st.serving, "serving s2", timeout=20)
        wait_more(load, 100, "orders acknowledged by both shards after machine 1 died")
        # Machine 1 comes back: the backup of both shards.
        s1.start("s1-m1")
        s2.start("s2-m1")
        assert s1.wait_whole(timeout=40).name == "s1-m2"
        assert s2.wait_whole(timeout=40).name == "s2-m2"
        assert s1.status("s1-m1").role is Role.BACKUP
        wait_more(load, 50, "orders acknowledged with machine 1 back")
    finally:
        load.stop()
    for cl, backup, primary in ((s1, "s1-m1", "s1-m2"), (s2, "s2-m1", "s2-m2")):
        wait_for(
            lambda c=cl, b=backup, p=primary: same_tables(c, b, p),  # type: ignore[misc]
            20,
            f"{backup} equal to {primary}",
        )
    # The asyncio routing client reaches each shard's primary too, and a key
    # no shard owns is refused before anything is sent.
    replies = asyncio.run(async_orders(cfg))
    assert {(r.server, r.status) for r in replies} == {("s1-m2", "ok"), ("s2-m2", "ok")}
    # Clean stops, so every record each server holds is on its disk.
    for cl, names in ((s1, ("s1-m1", "s1-m2")), (s2, ("s2-m1", "s2-m2"))):
        for name in names:
            cl.stop(name)
    # The servers that served throughout hold every acknowledged order.
    check_shard_log(cfg, "s1", "s1-m2", load)
    check_shard_log(cfg, "s2", "s2-m2", load)
    assert all(load.count(s) >= 250 for s in ("s1", "s2"))
