"""Two shards crossed over two machines (the reference's double failover,
paragraph 71), with real processes: machine 1 runs shard s1's primary and
shard s2's backup, machine 2 the other way round; the "machines" are the
loopback addresses 127.0.0.1 and 127.0.0.2. Orders for the instruments of
both shards go through the routing client; kill -9 of machine 1's servers
fails over s1 while s2 loses only its backup; both serve again, every
acknowledged order is in its own shard's log exactly once and in no other,
and the restarted machine rejoins as the backup of both (the scenario
and its checks: shardkit.py)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from conftest import MakeCluster
from shardkit import MACHINE_1, lose_machine_one, stop_and_check_logs

from zmqfail import config
from zmqfail.cli.demo import random_order
from zmqfail.client.shards import AsyncShardedClient
from zmqfail.errors import RoutingError
from zmqfail.netutil import free_base_port
from zmqfail.protocol import Reply

pytestmark = [pytest.mark.timeout(150), pytest.mark.process]


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


def test_two_shards_crossed_survive_the_loss_of_a_machine(
    cluster: MakeCluster, tmp_path: Path
) -> None:
    path = tmp_path / "zmqfail.toml"
    path.write_text(config.render_shards(2, 2, free_base_port(45)))
    whole = cluster(path)

    def kill_machine_1() -> None:
        for name in MACHINE_1:
            whole.kill(name)

    load = lose_machine_one(whole, kill_machine_1)
    # The asyncio routing client reaches each shard's primary too, and a key
    # no shard owns is refused before anything is sent.
    replies = asyncio.run(async_orders(whole.cfg))
    assert {(r.server, r.status) for r in replies} == {("s1-m2", "ok"), ("s2-m2", "ok")}
    stop_and_check_logs(whole, load)
