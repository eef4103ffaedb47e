"""`zmqfail demo`: the product in one command, checked rather than assumed.

It builds a two-node cluster in a temporary directory (running the order
engine, or the ledger with --app ledger), drives the application's request
mix from a client, kills the primary with SIGKILL mid-run, lets the backup take over,
restarts the old primary (it rejoins as the backup), and ends with a report
whose numbers come from the nodes' own logs: every acknowledged request is
found exactly once, none is applied twice, both servers' tables are equal,
and the application's own invariants (for the ledger: the total of all
balances conserved) hold on a replay of each log.
"""

from __future__ import annotations

import collections
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click

from zmqfail import config
from zmqfail.app import SHIPPED
from zmqfail.audit import replay, requests_in_log
from zmqfail.cli.common import one_line_errors
from zmqfail.cli.params import Number, WholeNumber
from zmqfail.client.sync import Client
from zmqfail.cluster import Cluster
from zmqfail.errors import ZmqfailError
from zmqfail.failover.state import Role, State
from zmqfail.protocol import STATUS_OK, STATUS_REJECTED


def random_order(rng: random.Random, instruments: tuple[str, ...]) -> dict[str, Any]:
    """A limit order around a mid of 10.00; about a third of them cross."""
    side = rng.choice(("buy", "sell"))
    ticks = rng.randint(990, 1010) if side == "buy" else rng.randint(995, 1015)
    return {
        "op": "new",
        "instrument": rng.choice(instruments),
        "side": side,
        "type": "limit",
        "qty": rng.randint(1, 20) * 10,
        "price": f"{ticks / 100:.2f}",
    }


class DemoLoad:
    """One client on a thread: keeps `window` requests of the application's mix
    in flight, records the acknowledged writes."""

    def __init__(self, cfg: config.ClusterConfig, window: int) -> None:
        self.client = Client(cfg, timeout=30.0, window=window, lost_after=30.0)
        self.mix = cfg.app.workload(7)
        self.acked: set[int] = set()  # msg_ids of acknowledged writes
        self.replies = 0
        self.errors: list[str] = []
        self.switches: list[float] = []  # outage ms: last old reply -> first new reply
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="demo-load", daemon=True)

    def _run(self) -> None:
        c = self.client
        bodies: dict[int, dict[str, Any]] = {}
        last_t, last_server = 0.0, ""
        try:
            while not self.stop.is_set() or c.session.outstanding:
                if not self.stop.is_set():
                    body = self.mix.next_body()
                    bodies[c.submit(body)] = body
                for rep in c.poll(0 if not self.stop.is_set() else 1.0):
                    t = time.monotonic()
                    body = bodies.pop(rep.msg_id)
                    if rep.status not in (STATUS_OK, STATUS_REJECTED):
                        self.errors.append(f"{rep.msg_id}: {rep.status} {rep.result}")
                        continue
                    if rep.status == STATUS_OK:
                        self.mix.on_ok(body, rep.result)
                    self.replies += 1  # rejected is an answer too, logged like ok
                    if self.mix.is_write(body):
                        self.acked.add(rep.msg_id)
                    if last_server and rep.server != last_server:
                        self.switches.append((t - last_t) * 1000)
                    last_t, last_server = t, rep.server
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")


def start_viewer(cfg_path: Path) -> subprocess.Popen[bytes]:
    """The live view, as its own process on this terminal until the end."""
    return subprocess.Popen(
        [sys.executable, "-m", "zmqfail", "watch", "--config", str(cfg_path)],
        start_new_session=True,
    )


def stop_viewer(viewer: subprocess.Popen[bytes] | None) -> None:
    if viewer is not None:
        viewer.send_signal(signal.SIGINT)
        viewer.wait(timeout=10)


def kill_viewer(viewer: subprocess.Popen[bytes] | None) -> None:
    """At the end whatever happened: the view does not outlive the demo."""
    if viewer is not None and viewer.poll() is None:
        viewer.kill()
        viewer.wait()


def wind_up(
    viewer: subprocess.Popen[bytes] | None,
    loads: list[DemoLoad],
    cluster: Cluster,
    tmp: Path,
    keep: bool,
) -> None:
    """End what a demo started, whatever happened. A failed demo keeps its
    cluster (configs, data dirs, node logs) to look at (`keep`)."""
    kill_viewer(viewer)
    for load in loads:
        load.stop.set()
        load.client.close()
    cluster.close()
    if keep:
        click.echo(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def audit(cfg: config.ClusterConfig, load: DemoLoad, survivor: str) -> tuple[int, int, str]:
    """What the logs say of a run, the servers stopped: writes `load` saw
    acknowledged but missing from `survivor`'s log, requests found there more
    than once, and the application's broken invariants on a replay of every
    server's log ("" when they hold)."""
    cid = load.client.client_id
    seen = collections.Counter(
        m for c, m in requests_in_log(cfg.node(survivor).data_dir) if c == cid
    )
    lost = sum(1 for m in load.acked if seen[m] == 0)
    broken = {n.name: replay(n.data_dir, cfg)[0].app.check() for n in cfg.nodes}
    twice = sum(1 for n in seen.values() if n > 1)
    return lost, twice, "; ".join(f"{n}: {v[0]}" for n, v in broken.items() if v)


@click.command("demo")
@click.option(
    "--seconds",
    default=8.0,
    show_default=True,
    type=Number(1.0, 3600),
    help="How long to drive load.",
)
@click.option("--base-port", default=5700, show_default=True, type=WholeNumber(1024, 65535))
@click.option(
    "--window",
    default=16,
    show_default=True,
    type=WholeNumber(1, 100_000),
    help="Requests in flight.",
)
@click.option("--keep", is_flag=True, help="Keep the temporary cluster directory.")
@click.option("--watch", "watch", is_flag=True, help="Show the live cluster view meanwhile.")
@click.option(
    "--app",
    default="orders",
    show_default=True,
    help=f"The application the cluster runs: {', '.join(sorted(SHIPPED))}.",
)
@click.option(
    "--shards",
    default=None,
    type=WholeNumber(1, 26),
    help="N shards crossed over two loopback machines; machine 1 is killed instead "
    "(every primary on it fails over at once) and the report is per shard.",
)
@one_line_errors
def demo_cmd(
    seconds: float,
    base_port: int,
    window: int,
    keep: bool,
    watch: bool,
    app: str,
    shards: int | None,
) -> None:
    """A cluster, load, SIGKILL of the primary, rejoin, and a checked report."""
    if shards is not None:
        from zmqfail.cli.demoshards import demo_shards

        demo_shards(shards, seconds, base_port, window, keep, watch, app, click.echo)
        return
    config.render(nodes=2, base_port=base_port, name="demo", app=app)  # checks --app first
    tmp = Path(tempfile.mkdtemp(prefix="zmqfail-demo-"))
    cluster = Cluster.in_dir(tmp, base_port=base_port, app=app, name="demo")
    cfg, cfg_path = cluster.cfg, cluster.path
    say = click.echo
    load: DemoLoad | None = None
    viewer: subprocess.Popen[bytes] | None = None
    passed = False
    try:
        cluster.start("a", "b")
        cluster.wait("a", State.NORMAL, role=Role.PRIMARY)
        cluster.wait("b", State.NORMAL, role=Role.BACKUP)
        say(f"cluster in {tmp}: a primary, b backup, both in the normal state")
        if watch:
            # The live view runs as its own process on this terminal until the end.
            viewer = start_viewer(cfg_path)
        load = DemoLoad(cfg, window)
        t0 = time.monotonic()
        load.thread.start()
        time.sleep(seconds * 0.4)
        before = len(load.acked)
        say(f"{before} {app} writes acknowledged; SIGKILL the primary a under load")
        cluster.kill("a")
        cluster.wait("b", State.BACKUP_ONLY, role=Role.PRIMARY)
        say("b took over (backup-only, epoch 2); restarting a")
        cluster.start("a")
        cluster.wait("a", State.NORMAL, role=Role.BACKUP, timeout=30)
        cluster.wait("b", State.NORMAL, role=Role.PRIMARY, timeout=10)
        say("a rejoined as the backup and caught up: normal state, roles reversed")
        time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
        load.stop.set()
        load.thread.join(60)
        elapsed = time.monotonic() - t0
        if load.errors:
            raise ZmqfailError(f"client errors: {load.errors[:3]}")
        digests = {n: cluster.status(n, digest=True, timeout=10).digest for n in ("a", "b")}
        for n in ("b", "a"):
            cluster.stop(n)
        lost, twice, broken = audit(cfg, load, "b")
        outage = max(load.switches) if load.switches else float("nan")
        stop_viewer(viewer)
        say("")
        say(
            f"throughput      {load.replies / elapsed:,.0f} acknowledged requests/s "
            f"({load.replies} in {elapsed:.1f}s, {window} in flight, {app})"
        )
        say(f"failover outage {outage:.0f} ms (last reply from a to first reply from b)")
        say(f"resent          {load.client.session.resends} requests after the failover")
        say(f"lost            {lost}  (acknowledged but not in b's log)")
        say(f"applied twice   {twice}  (requests found more than once in b's log)")
        same = digests["a"] == digests["b"] and digests["a"] is not None
        say(
            f"tables          {'equal' if same else 'DIFFERENT'} on a and b "
            f"(digest {(digests['b'] or 'none')[:16]})"
        )
        say(f"invariants      {'hold' if not broken else 'BROKEN: ' + broken} (replay of each log)")
        if lost or twice or not same or not load.switches or broken:
            raise ZmqfailError("the demo found a problem (see above)")
        say("demo passed")
        passed = True
    finally:
        wind_up(viewer, [load] if load is not None else [], cluster, tmp, keep or not passed)
