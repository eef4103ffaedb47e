"""The crossed two-machine scenario of the shards process tests (the
reference's double failover, paragraph 71), shared by the one on loopback
"machines" (test_shards_live) and the one on network namespaces
(test_shards_netns): what the machines are and how one dies is the test's;
the load, the waits and the checks of every acknowledged order are here."""

from __future__ import annotations

import collections
import random
import threading
from collections.abc import Callable
from typing import Any

from conftest import wait_for

from zmqfail import config
from zmqfail.audit import records
from zmqfail.cli.demo import random_order
from zmqfail.client.shards import ShardedClient
from zmqfail.cluster import Cluster
from zmqfail.failover.state import Role

WINDOW = 16
# Machine 1 leads s1 and backs up s2; machine 2 the reverse (config init --shards 2 --machines 2).
MACHINE_1 = ("s1-m1", "s2-m1")


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
    assert not strays, (
        f"{node} of {shard} logged orders for other shards' instruments: "
        f"{dict(collections.Counter(strays))}"
    )
    seen = collections.Counter((r.client_id, r.msg_id) for r in writes)
    assert not [k for k, n in seen.items() if n > 1], f"applied twice on {node}"
    cid = load.client.client_id
    lost = sorted(m for m in load.acked[shard] if seen[(cid, m)] != 1)
    assert not lost, f"acknowledged by {shard} but not in {node}'s log: {lost[:10]}"


def same_tables(cl: Cluster, x: str, y: str) -> bool:
    dx, dy = (cl.status(n, digest=True, timeout=2.0).digest for n in (x, y))
    return dx is not None and dx == dy


def lose_machine_one(whole: Cluster, kill_machine_1: Callable[[], None]) -> ShardLoad:
    """Both shards under load through the routing client; machine 1 dies
    (`kill_machine_1`: kill -9 of its servers, s1's primary and s2's backup,
    together); s1 fails over to machine 2 and s2's primary runs alone there,
    both serving; machine 1 restarts and rejoins as the backup of both, whose
    tables end equal to their primaries'. The load, stopped, for the checks."""
    s1, s2 = whole.shard("s1"), whole.shard("s2")
    led = whole.start_shards()
    assert {k: v.name for k, v in led.items()} == {"s1": "s1-m1", "s2": "s2-m2"}
    load = ShardLoad(whole.cfg)
    try:
        wait_more(load, 100, "orders acknowledged by both shards")
        kill_machine_1()
        s1.wait_until("s1-m2", lambda st: st.serving, "serving s1", timeout=20)
        s2.wait_until("s2-m2", lambda st: st.serving, "serving s2", timeout=20)
        wait_more(load, 100, "orders acknowledged by both shards after machine 1 died")
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
    return load


def stop_and_check_logs(whole: Cluster, load: ShardLoad) -> None:
    """Clean stops, so every record each server holds is on its disk; then
    the servers that served throughout (machine 2's) hold every order their
    shard acknowledged, once, and none of the other shard's."""
    for shard, names in (("s1", ("s1-m1", "s1-m2")), ("s2", ("s2-m1", "s2-m2"))):
        for name in names:
            whole.shard(shard).stop(name)
    check_shard_log(whole.cfg, "s1", "s1-m2", load)
    check_shard_log(whole.cfg, "s2", "s2-m2", load)
    assert all(load.count(s) >= 250 for s in ("s1", "s2"))
