"""`zmqfail demo --shards N`: the reference's double failover, checked.

N shards crossed over two machines (the loopback addresses 127.0.0.1 and
127.0.0.2, as ``config init --shards N --machines 2`` lays them out): machine
1 leads some shards and backs up the others, machine 2 the reverse. A client
per shard drives its share of the application's mix; machine 1 is killed
(every server on it at once, SIGKILL), each shard that led there fails over
to machine 2 on its own while the others lose only their backup; machine 1
comes back as the backup of every shard. The report is per shard: its
outage, and from the logs of its server on machine 2 (which served
throughout) that every acknowledged request is there exactly once, both
servers' tables are equal and the application's invariants hold.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from zmqfail import config
from zmqfail.cli.demo import DemoLoad, audit, start_viewer, stop_viewer, wind_up
from zmqfail.cli.machine import host_of, kill_machine, on_machine
from zmqfail.cli.shardmix import for_clients
from zmqfail.cluster import Cluster
from zmqfail.errors import ZmqfailError

MACHINE_1 = "127.0.0.1"


def demo_shards(
    shards: int,
    seconds: float,
    base_port: int,
    window: int,
    keep: bool,
    watch: bool,
    app: str,
    say: Callable[[str], None],
) -> None:
    text = config.render_shards(shards, 2, base_port, name="demo", app=app)  # checks first
    tmp = Path(tempfile.mkdtemp(prefix="zmqfail-demo-"))
    (tmp / "zmqfail.toml").write_text(text)
    cluster = Cluster(config.load(tmp / "zmqfail.toml"), logs=tmp)
    cfg = cluster.cfg
    loads: dict[str, DemoLoad] = {}
    viewer: subprocess.Popen[bytes] | None = None
    passed = False
    try:
        led = cluster.start_shards()
        where = ", ".join(f"{s} led by {st.name}" for s, st in led.items())
        say(f"{shards} shards in {tmp}, crossed over machines 1 and 2: {where}")
        if watch:
            viewer = start_viewer(cluster.path)  # one block per shard
        loads = {sh.name: DemoLoad(for_clients(cfg, sh.name), window) for sh in cfg.shards}
        t0 = time.monotonic()
        for load in loads.values():
            load.thread.start()
        time.sleep(seconds * 0.4)
        acked = sum(len(x.acked) for x in loads.values())
        say(f"{acked} {app} writes acknowledged; SIGKILL every server of machine 1 under load")
        lines, down = kill_machine(cfg, MACHINE_1, "KILL", 30.0)
        for line in lines:
            say(f"  {line}")
        if down:
            raise ZmqfailError(f"no primary after 30 s in {', '.join(down)}")
        gone = on_machine(cfg, MACHINE_1)
        cluster.start(*gone)
        for sh in cfg.shards:
            cluster.shard(sh.name).wait_whole(timeout=40)
        say(f"machine 1 back: {', '.join(gone)} rejoined, each the backup of its shard")
        time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
        for load in loads.values():
            load.stop.set()
        for load in loads.values():
            load.thread.join(60)
        elapsed = time.monotonic() - t0
        errors = [e for x in loads.values() for e in x.errors]
        if errors:
            raise ZmqfailError(f"client errors: {errors[:3]}")
        digests = {
            n.name: cluster.status(n.name, digest=True, timeout=10).digest for n in cfg.nodes
        }
        for n in cfg.nodes:
            cluster.stop(n.name)
        stop_viewer(viewer)
        say("")
        problems = 0
        for sh in cfg.shards:
            load = loads[sh.name]
            group = cfg.shard(sh.name)
            survivor = next(n.name for n in group.nodes if host_of(n) != MACHINE_1)
            lost, twice, broken = audit(group, load, survivor)
            seen = {digests[n] for n in sh.nodes}
            same = len(seen) == 1 and None not in seen
            outage = max(load.switches) if load.switches else None
            switched = f"{outage:.0f} ms to the client" if outage is not None else "none"
            say(
                f"{sh.name}: {load.replies / elapsed:,.0f} req/s, failover {switched}, "
                f"lost {lost}, applied twice {twice}, tables "
                f"{'equal' if same else 'DIFFERENT'}, invariants "
                f"{'hold' if not broken else 'BROKEN: ' + broken}"
            )
            led_there = led[sh.name].name in gone
            problems += bool(lost or twice or not same or broken or (led_there and not outage))
        if problems:
            raise ZmqfailError(f"the demo found a problem in {problems} shard(s) (see above)")
        say("demo passed")
        passed = True
    finally:
        wind_up(viewer, list(loads.values()), cluster, tmp, keep or not passed)
