"""Fuzz every port of a live two-node cluster under a little client load
(run as `tools/fuzz`; issue 12.3).

For N seconds it sends random, truncated, mutated, oversized and
well-formed-but-wrong frames (every message type to every port, wrong epochs,
unknown senders, broken control commands, bad request bodies, wrong framing
such as [b"", b"x", b"y"] or [b"x"] to a REP socket or a DEALER with no
delimiter, raw TCP garbage) to the client, control, records, ack and heartbeat
ports of both nodes, and random bytes and broken HTTP requests to their
Prometheus ports, while one client places orders. Afterwards every node
must be up and in the state it was in, at the same epoch, the backup caught
up with digests equal, and every order of the load answered. It prints what
it sent and the bad-frame counters of `zmqfail status --json`; exit status 1
on any failure (the cluster directory is kept then).

Left out on purpose: what a legitimate peer or client may send to change the
cluster's state (a client vote naming a lost server, valid control commands,
records, acks or heartbeats from a configured peer at a newer epoch). Without
authentication (CurveZMQ, issue 12.1) they cannot be told from the real thing.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
from fuzzkit.frames import BAD_HTTP, FAMILIES, KINDS, Known, Target, make_frames

from zmqfail import config
from zmqfail.cli.demo import random_order
from zmqfail.client.sync import Client
from zmqfail.cluster import Cluster, where
from zmqfail.core.status import NodeStatus
from zmqfail.failover.state import Role, State
from zmqfail.netutil import free_base_port
from zmqfail.protocol import (
    Reply,
)


class Sender:
    """One socket per target, of a type that can talk to it; replies are drained."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], targets: list[Target]) -> None:
        self.socks: dict[Target, zmq.Socket[bytes]] = {}
        kinds = {
            "client": zmq.DEALER,
            "control": zmq.DEALER,
            "records": zmq.PUSH,
            "ack": zmq.DEALER,
            "heartbeat": zmq.XSUB,
        }
        for t in targets:
            if t.kind == "metrics":
                continue  # HTTP: plain TCP connections, one per frame
            s: zmq.Socket[bytes] = ctx.socket(kinds[t.kind])
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 1000)
            if t.kind != "records":
                s.setsockopt(zmq.RCVHWM, 1000)
            s.connect(t.endpoint)
            self.socks[t] = s

    def send(self, t: Target, family: str, parts: list[bytes]) -> bool:
        if family == "tcp-garbage":
            return tcp_garbage(t.endpoint, random.randbytes(random.randrange(1, 2000)))
        if family == "bad-http":
            return tcp_garbage(t.endpoint, random.choice(BAD_HTTP))
        s = self.socks[t]
        if t.kind == "ack" and family != "rep-framing":
            parts = [b"", *parts]  # the envelope a REQ socket would add
        try:
            s.send_multipart(parts, zmq.NOBLOCK)
        except zmq.Again:
            return False
        self.drain()
        return True

    def drain(self) -> None:
        for t, s in self.socks.items():
            if t.kind in ("records", "heartbeat"):
                continue
            while True:
                try:
                    s.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break

    def close(self) -> None:
        for s in self.socks.values():
            s.close(linger=0)


def tcp_garbage(endpoint: str, data: bytes) -> bool:
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1.0) as s:
            s.sendall(data)
    except OSError:
        return False
    return True


class Load:
    """A little client load: orders with a few in flight; every reply recorded."""

    def __init__(self, cfg: config.ClusterConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.acked = 0
        self.errors: list[str] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        rng = random.Random(self.seed)
        try:
            with Client(self.cfg, timeout=10.0, window=4) as c:
                while not self.stop_event.is_set():
                    if len(c.session.outstanding) < 4:
                        c.submit(random_order(rng, config.DEFAULT_INSTRUMENTS))
                    for rep in c.poll(0.01):
                        self._take(rep)
                while c.session.outstanding:
                    for rep in c.poll(10.0, raise_on_timeout=True):
                        self._take(rep)
        except Exception as exc:  # reported as a failure
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _take(self, rep: Reply) -> None:
        if rep.status in ("ok", "rejected"):
            self.acked += 1
        else:
            self.errors.append(f"msg {rep.msg_id}: {rep.status} {rep.result}")

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=60)
        if self.thread.is_alive():
            self.errors.append("the load did not finish within 60 s")


def targets_of(cfg: config.ClusterConfig) -> list[Target]:
    out: list[Target] = []
    for n in cfg.nodes:
        out += [Target(n.name, "client", n.client), Target(n.name, "control", n.control)]
        for link in ("main", "failsafe"):
            ends = n.link(link)
            out += [
                Target(n.name, "records", ends.records),
                Target(n.name, "ack", ends.ack),
                Target(n.name, "heartbeat", ends.heartbeat),
            ]
        if n.metrics:
            out.append(Target(n.name, "metrics", f"tcp://{n.metrics}"))
    return out


def metrics_answer(hostport: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{hostport}/metrics", timeout=5.0) as r:
            return bool(r.status == 200 and b"zmqfail_" in r.read())
    except OSError:
        return False


def wait_until(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def status_json(path: Path) -> list[dict[str, Any]]:
    """What `zmqfail status --json` says, the way an operator would see it."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "zmqfail",
            "status",
            "--json",
            "--config",
            str(path),
            "--timeout",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    rows: list[dict[str, Any]] = json.loads(out.stdout) if out.returncode == 0 else []
    return rows


def bad_frame_counters(row: dict[str, Any]) -> dict[str, int]:
    counters: dict[str, int] = row.get("counters") or {}
    return {k: v for k, v in sorted(counters.items()) if "bad" in k or "stale" in k}


def start_cluster(d: Path, heartbeat_misses: int) -> Cluster:
    """Both nodes of a fresh two-node config in `d`, logging there."""
    path = d / "zmqfail.toml"
    text = config.render(nodes=2, base_port=free_base_port(25))
    path.write_text(
        text.replace("heartbeat_misses = 5 ", f"heartbeat_misses = {heartbeat_misses} ", 1)
    )
    cl = Cluster(config.load(path), logs=d)
    cl.start()
    return cl


def statuses(cl: Cluster, digest: bool = False) -> dict[str, NodeStatus]:
    return {s.name: s for s in cl.statuses(digest=digest, timeout=3.0)}


def settled(cl: Cluster) -> bool:
    """Both nodes in the normal state, one primary, one backup."""
    st = list(statuses(cl).values())
    roles = sorted(r.role_name or "" for r in st)
    return roles == ["backup", "primary"] and all(r.state is State.NORMAL for r in st)


MIN_FRAME_WAIT = 90.0  # seconds past --seconds that --min-frames may take


def fuzz(cl: Cluster, args: argparse.Namespace, families: list[str]) -> tuple[Counter[str], int]:
    rng = random.Random(args.seed)
    random.seed(args.seed)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    targets = [t for t in targets_of(cl.cfg) if not args.port or t.kind in args.port]
    sender = Sender(ctx, targets)
    sent: Counter[str] = Counter()
    dropped = 0
    known = Known("a", "b", 1, 0)
    refreshed = 0.0
    gap = 1.0 / args.rate
    try:
        t_end = time.monotonic() + args.seconds
        hard_end = t_end + MIN_FRAME_WAIT

        def more(now: float) -> bool:
            short = sum(sent.values()) + dropped < int(args.min_frames)
            return now < t_end or (short and now < hard_end)

        while more(now := time.monotonic()):
            if now >= refreshed:
                refreshed = now + 1.0
                st = statuses(cl)
                prim = [r for r in st.values() if r.role is Role.PRIMARY]
                if prim:
                    known.primary = prim[0].name
                    known.backup = next(n for n in st if n != prim[0].name)
                    known.epoch = prim[0].epoch or 1
                    known.lsn = prim[0].last_lsn or 0
            family = rng.choice(families)
            if family == "oversized" and rng.random() > 0.05:
                continue  # a few, not a flood of megabytes
            fit = [t for t in targets if t.kind in FAMILIES[family]]
            if not fit:
                continue
            t = rng.choice(fit)
            raw = family in ("tcp-garbage", "bad-http")
            parts = [] if raw else make_frames(family, t.kind, rng, known)
            if sender.send(t, family, parts):
                sent[f"{family} -> {t.kind}"] += 1
            else:
                dropped += 1
            time.sleep(gap)
    finally:
        sender.close()
        ctx.term()
    return sent, dropped


def check(cl: Cluster, before: dict[str, NodeStatus], load: Load) -> list[str]:
    failures: list[str] = []
    for name, p in cl.procs.items():
        if p.poll() is not None:
            failures.append(f"node {name} exited with code {p.returncode} (log: {cl.log_of(name)})")
    for n in cl.cfg.nodes:
        if n.metrics and not metrics_answer(n.metrics):
            failures.append(f"node {n.name}: GET http://{n.metrics}/metrics does not answer")
    if failures:
        return failures

    def same(name: str, row: NodeStatus) -> bool:
        was = before[name]
        return (row.role, row.state, row.epoch) == (was.role, was.state, was.epoch)

    # A backup that fell behind may be syncing for a moment; a changed role or
    # epoch (a failover, a step-down) is never right.
    wait_until(lambda: all(same(n, r) for n, r in statuses(cl).items()), 10.0)
    for name, row in statuses(cl).items():
        if not same(name, row):
            was = before[name]
            failures.append(
                f"node {name} was {where(was)} at epoch {was.epoch}, "
                f"is {where(row)} at epoch {row.epoch}"
            )
    load.stop()
    if load.errors:
        failures.append(f"client load: {len(load.errors)} error(s), first: {load.errors[0]}")
    if load.acked == 0:
        failures.append("client load: no order was answered")

    def equal() -> bool:
        rows = list(statuses(cl, digest=True).values())
        return len({(r.last_lsn, r.digest) for r in rows}) == 1 and rows[0].digest is not None

    if not failures and not wait_until(equal, 30.0):
        st = statuses(cl, digest=True)
        failures.append(
            "tables differ after 30 s: "
            + ", ".join(f"{n} lsn {r.last_lsn} digest {str(r.digest)[:12]}" for n, r in st.items())
        )
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=400.0, help="frames per second at most")
    ap.add_argument(
        "--min-frames",
        type=int,
        default=0,
        help="go on past --seconds until this many frames went out (a loaded machine "
        "sends fewer per second), for at most MIN_FRAME_WAIT more seconds",
    )
    ap.add_argument("--skip", action="append", default=[], choices=sorted(FAMILIES))
    ap.add_argument("--only", action="append", default=[], choices=sorted(FAMILIES))
    ap.add_argument("--port", action="append", default=[], choices=KINDS, help="only these")
    ap.add_argument(
        "--heartbeat-misses",
        type=int,
        default=5,
        help="the cluster's dead time in heartbeats (30 ms each); raise it on a loaded machine "
        "so that only what the bad frames do counts, not a slow scheduler",
    )
    ap.add_argument(
        "--dir", type=Path, default=None, help="cluster directory (default: a temp dir)"
    )
    ap.add_argument("--json", type=Path, default=None, help="write the summary here too")
    args = ap.parse_args()
    families = [f for f in (args.only or FAMILIES) if f not in args.skip]
    d = args.dir or Path(tempfile.mkdtemp(prefix="zmqfail-fuzz-"))
    d.mkdir(parents=True, exist_ok=True)
    cl = start_cluster(d, args.heartbeat_misses)
    failures: list[str] = []
    sent: Counter[str] = Counter()
    dropped = 0
    load: Load | None = None
    rows: list[dict[str, Any]] = []
    try:
        if not wait_until(lambda: settled(cl), 30.0):
            failures.append(f"the cluster did not reach the normal state; see {d}")
        else:
            before = statuses(cl)
            load = Load(cl.cfg, args.seed)
            sent, dropped = fuzz(cl, args, families)
            failures = check(cl, before, load)
            rows = status_json(cl.path)
    finally:
        if load is not None and load.thread.is_alive():
            load.stop()
        cl.close()
    ports = sum(1 for t in targets_of(cl.cfg) if not args.port or t.kind in args.port)
    summary = {
        "seconds": args.seconds,
        "ports": ports,
        "families": families,
        "sent": dict(sorted(sent.items())),
        "sent_total": sum(sent.values()),
        "not_sent_queue_full": dropped,
        "orders_answered": load.acked if load else 0,
        "counters": {r["name"]: bad_frame_counters(r) for r in rows},
        "failures": failures,
        "dir": str(d),
    }
    print(
        f"tools/fuzz: {summary['sent_total']} frames in {args.seconds:g} s to "
        f"{ports} ports; {summary['orders_answered']} orders answered meanwhile"
    )
    for key, n in summary["sent"].items():
        print(f"  {n:>7}  {key}")
    for name, counters in summary["counters"].items():
        print(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in counters.items()))
    for f in failures:
        print(f"FAILED: {f}")
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=1, sort_keys=True))
    if failures:
        print(f"cluster directory kept: {d}")
        return 1
    if args.dir is None:
        import shutil

        shutil.rmtree(d, ignore_errors=True)
    print("OK: both nodes up, in their states, tables equal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
