"""`zmqfail demo`: the product in one command, checked rather than assumed.

It builds a cluster in a temporary directory, starts the primary, drives
orders, kills the primary with SIGKILL mid-run, restarts it and then proves
from the node itself that every acknowledged order survived and that the
node's tables equal an offline replay of its log.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from zmqfail import config
from zmqfail.audit import replay_digest
from zmqfail.cli.common import one_line_errors
from zmqfail.client.control import call, node_status
from zmqfail.client.sync import Client
from zmqfail.errors import Unavailable, ZmqfailError
from zmqfail.protocol import STATUS_OK


def _start_node(cfg_path: Path, name: str, logdir: Path) -> subprocess.Popen[bytes]:
    out = open(logdir / f"node-{name}.log", "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        [sys.executable, "-m", "zmqfail", "node", "--config", str(cfg_path), "--name", name],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_ready(cfg: config.ClusterConfig, name: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = node_status(cfg.node(name), digest=False, timeout=0.3)
        if st.get("state") not in (None, "unreachable", "starting"):
            return st
        time.sleep(0.05)
    raise Unavailable(f"node {name} did not come up within {timeout}s")


def random_order(rng: random.Random, instruments: tuple[str, ...]) -> dict[str, Any]:
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


@click.command("demo")
@click.option("--orders", default=4000, show_default=True, help="Orders to send in all.")
@click.option("--base-port", default=5700, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the temporary cluster directory.")
@one_line_errors
def demo_cmd(orders: int, base_port: int, keep: bool) -> None:
    """Run a cluster, SIGKILL its primary under load, restart it, check nothing was lost."""
    tmp = Path(tempfile.mkdtemp(prefix="zmqfail-demo-"))
    cfg_path = tmp / "zmqfail.toml"
    cfg_path.write_text(config.render(nodes=2, base_port=base_port, name="demo"))
    cfg = config.load(cfg_path)
    primary = cfg.primary
    click.echo(f"cluster in {tmp}; primary {primary} on {cfg.node(primary).client}")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(_start_node(cfg_path, primary, tmp))
        _wait_ready(cfg, primary)
        rng = random.Random(7)
        acked: dict[int, int] = {}  # order_id -> msg_id
        sent = 0
        kill_at = orders // 2
        t0 = time.monotonic()
        with Client(cfg, timeout=5.0, window=32) as c:
            # Kill the primary while requests are still in flight: those may or
            # may not be in the log, but none of them was acknowledged.
            for _ in range(kill_at):
                c.submit(random_order(rng, cfg.engine.instruments))
                sent += 1
                for rep in c.poll(0):
                    if rep.status == STATUS_OK:
                        acked[rep.result["order_id"]] = rep.msg_id
            in_flight = len(c.session.outstanding)
        rate = len(acked) / (time.monotonic() - t0)
        click.echo(
            f"{len(acked)} orders acknowledged ({rate:,.0f}/s); SIGKILL {primary} with "
            f"{in_flight} in flight"
        )
        os.killpg(procs[0].pid, signal.SIGKILL)
        procs[0].wait()
        t1 = time.monotonic()
        procs.append(_start_node(cfg_path, primary, tmp))
        _wait_ready(cfg, primary)
        click.echo(f"{primary} restarted and recovered in {time.monotonic() - t1:.2f}s")
        lost = 0
        with Client(cfg, timeout=5.0) as c:
            for order_id in acked:
                rep = c.request({"op": "status", "order_id": order_id})
                if rep.status != STATUS_OK:
                    lost += 1
            for _ in range(orders - kill_at):
                rep = c.request(random_order(rng, cfg.engine.instruments))
                if rep.status == STATUS_OK:
                    acked[rep.result["order_id"]] = rep.msg_id
        live = call(cfg.node(primary).control, "status", {"digest": True})
        call(cfg.node(primary).control, "stop")
        procs[-1].wait(timeout=15)
        offline = replay_digest(cfg.node(primary).data_dir, cfg.engine)
        ok = lost == 0 and live["digest"] == offline
        click.echo(f"acknowledged {len(acked)}, lost {lost}, last lsn {live['last_lsn']}")
        click.echo(
            f"digest live {live['digest'][:16]} replay {offline[:16]}: "
            f"{'equal' if live['digest'] == offline else 'DIFFERENT'}"
        )
        if not ok:
            raise ZmqfailError("demo found lost orders or diverged state")
        click.echo("demo passed: no acknowledged order lost")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if keep:
            click.echo(f"kept {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
