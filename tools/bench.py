"""zmqfail benchmarks (run as `tools/bench`; figures go to docs/benchmarks.md).

Scenarios, each measured in the same invocation so ratios are comparable on a
noisy 2-core machine:
  single  one node alone: fsync before every acknowledgement, group commit
  bare    the bare ZeroMQ flow of the normal state, no engine, no log (ceiling)
  normal  primary + backup in the normal state, real engine
Every scenario runs at 1 and at 64 requests in flight from one client process.
  processor  in process, no sockets: the per-request path of the active server
          (dedup, application, record, reply) and the backup's (decode, apply)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

from zmqfail import config
from zmqfail.cli.common import spawn_node
from zmqfail.cli.demo import random_order
from zmqfail.client.control import node_status
from zmqfail.client.sync import Client
from zmqfail.netutil import free_base_port
from zmqfail.protocol import STATUS_OK, Reply, Request, Welcome, decode


def percentile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, int(q * len(sorted_vals)))
    return sorted_vals[i]


def drive(endpoints: list[str], window: int, seconds: float, seed: int, out: Any) -> None:
    """One closed-loop client process: keep `window` requests in flight."""
    rng = random.Random(seed)
    instruments = config.DEFAULT_INSTRUMENTS
    lat: list[float] = []
    errors = 0
    with Client(endpoints, timeout=10.0, window=window) as c:
        c.connect()
        sent_at: dict[int, float] = {}
        t_end = time.perf_counter() + seconds
        warm_end = time.perf_counter() + min(1.0, seconds / 5)
        while True:
            now = time.perf_counter()
            if now >= t_end:
                break
            while len(c.session.outstanding) < window:
                mid = c.submit(random_order(rng, instruments))
                sent_at[mid] = time.perf_counter()
            for rep in c.poll(1.0):
                t = time.perf_counter()
                t0 = sent_at.pop(rep.msg_id)
                if rep.status != STATUS_OK:
                    errors += 1
                if t0 >= warm_end:
                    lat.append(t - t0)
        measured = time.perf_counter() - warm_end
    out.put({"lat": lat, "errors": errors, "seconds": measured})


def run_clients(endpoints: list[str], window: int, seconds: float) -> dict[str, Any]:
    q: mp.Queue[dict[str, Any]] = mp.Queue()
    p = mp.Process(target=drive, args=(endpoints, window, seconds, 1, q))
    p.start()
    res = q.get(timeout=seconds + 60)
    p.join(timeout=10)
    lat = sorted(res["lat"])
    return {
        "window": window,
        "throughput": round(len(lat) / res["seconds"]),
        "p50_us": round(percentile(lat, 0.5) * 1e6),
        "p99_us": round(percentile(lat, 0.99) * 1e6),
        "errors": res["errors"],
    }


class Cluster:
    def __init__(self, nodes: int, start: list[str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="zmqfail-bench-"))
        self.path = self.dir / "zmqfail.toml"
        self.path.write_text(config.render(nodes=nodes, base_port=free_port_base()))
        self.cfg = config.load(self.path)
        self.procs = [self._start(n) for n in start]
        for n in start:
            self._wait(n)

    def _start(self, name: str) -> subprocess.Popen[bytes]:
        return spawn_node(self.path, name, self.dir / f"{name}.log")

    def _wait(self, name: str) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            st = node_status(self.cfg.node(name), digest=False, timeout=0.3)
            if st["state"] in ("primary_only", "normal", "standby", "syncing"):
                return
            time.sleep(0.05)
        raise SystemExit(f"node {name} did not become ready; see {self.dir}")

    def wait_state(self, name: str, state: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node_status(self.cfg.node(name), digest=False, timeout=0.3)["state"] == state:
                return
            time.sleep(0.05)
        raise SystemExit(f"node {name} did not reach {state}; see {self.dir}")

    def wait_role(self, name: str, role: str, timeout: float, state: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = node_status(self.cfg.node(name), digest=False, timeout=0.3)
            if st.get("role") == role and (state is None or st["state"] == state):
                return
            time.sleep(0.02)
        raise SystemExit(f"node {name} did not become {role}/{state}; see {self.dir}")

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def free_port_base() -> int:
    return free_base_port(40)


def bench_single(seconds: float) -> list[dict[str, Any]]:
    cl = Cluster(2, ["a"])
    try:
        eps = [cl.cfg.node("a").client]
        return [dict(run_clients(eps, w, seconds), scenario="single") for w in (1, 64)]
    finally:
        cl.close()


def bare_server(port: int, ready: Any) -> None:
    """The normal-state socket flow with nothing else: ROUTER in, PUSH + REQ/REP, reply."""
    ctx = zmq.Context()
    fe = ctx.socket(zmq.ROUTER)
    fe.bind(f"tcp://127.0.0.1:{port}")
    push = ctx.socket(zmq.PUSH)
    req = ctx.socket(zmq.REQ)
    push.connect(f"tcp://127.0.0.1:{port + 1}")
    req.connect(f"tcp://127.0.0.1:{port + 2}")
    ready.set()
    held: list[tuple[bytes, bytes]] = []
    waiting = False
    poller = zmq.Poller()
    poller.register(fe, zmq.POLLIN)
    poller.register(req, zmq.POLLIN)
    batch: list[tuple[bytes, bytes]] = []
    while True:
        ev = dict(poller.poll())
        if fe in ev:
            for _ in range(512):
                try:
                    ident, data = fe.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                r = decode(data)
                if not isinstance(r, Request):
                    fe.send_multipart((ident, Welcome("bare", 1, True).encode()))
                    continue
                push.send(data)
                batch.append((ident, Reply(r.msg_id, "ok", {}, 1, "bare").encode()))
        if req in ev:
            req.recv()
            waiting = False
            for ident, rep in held:
                fe.send_multipart((ident, rep))
            held = []
        if not waiting and batch:
            held, batch = batch, []
            req.send(b"commit")
            waiting = True


def bare_backup(port: int, ready: Any) -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    rep = ctx.socket(zmq.REP)
    pull.bind(f"tcp://127.0.0.1:{port + 1}")
    rep.bind(f"tcp://127.0.0.1:{port + 2}")
    ready.set()
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    poller.register(rep, zmq.POLLIN)
    while True:
        ev = dict(poller.poll())
        if pull in ev:
            while True:
                try:
                    pull.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
        if rep in ev:
            rep.recv()
            rep.send(b"ack")


def bench_bare(seconds: float) -> list[dict[str, Any]]:
    port = free_port_base()
    evs = [mp.Event(), mp.Event()]
    procs = [
        mp.Process(target=bare_backup, args=(port, evs[0]), daemon=True),
        mp.Process(target=bare_server, args=(port, evs[1]), daemon=True),
    ]
    for p in procs:
        p.start()
    for e in evs:
        e.wait(10)
    try:
        eps = [f"tcp://127.0.0.1:{port}"]
        return [dict(run_clients(eps, w, seconds), scenario="bare") for w in (1, 64)]
    finally:
        for p in procs:
            p.kill()
            p.join()


def bench_normal(seconds: float) -> list[dict[str, Any]]:
    cl = Cluster(2, ["a", "b"])
    try:
        cl.wait_state("a", "normal")
        eps = [n.client for n in cl.cfg.nodes]
        return [dict(run_clients(eps, w, seconds), scenario="normal") for w in (1, 64)]
    finally:
        cl.close()


def drive_until(cfg_path: str, window: int, stop: Any, out: Any) -> None:
    """Closed-loop load until `stop` is set; reports every change of server as
    (last reply from the old server, first reply from the new one)."""
    cfg = config.load(cfg_path)
    rng = random.Random(2)
    switches: list[tuple[float, float, str, str]] = []
    last_t, last_server, n, errors = 0.0, "", 0, 0
    with Client(cfg, timeout=30.0, window=window, lost_after=60.0) as c:
        c.connect()
        while not stop.is_set():
            while len(c.session.outstanding) < window:
                c.submit(random_order(rng, config.DEFAULT_INSTRUMENTS))
            for rep in c.poll(0.5):
                t = time.monotonic()
                n += 1
                if rep.status != STATUS_OK:
                    errors += 1
                if last_server and rep.server != last_server:
                    switches.append((last_t, t, last_server, rep.server))
                last_t, last_server = t, rep.server
        while c.session.outstanding:
            c.poll(5.0)
    out.put({"switches": switches, "replies": n, "errors": errors, "resends": c.session.resends})


def bench_failover(seconds: float, kills: int = 20) -> list[dict[str, Any]]:
    """kill -9 the primary `kills` times under steady load; outage as the client sees it."""
    cl = Cluster(2, ["a", "b"])
    stop = mp.Event()
    q: mp.Queue[dict[str, Any]] = mp.Queue()
    driver = None
    try:
        cl.wait_state("a", "normal")
        driver = mp.Process(target=drive_until, args=(str(cl.path), 16, stop, q))
        driver.start()
        time.sleep(1.0)
        for i in range(kills):
            rows = {n.name: node_status(n, False, 0.5) for n in cl.cfg.nodes}
            primary = next(k for k, v in rows.items() if v.get("role") == "primary")
            backup = next(k for k in rows if k != primary)
            idx = [n.name for n in cl.cfg.nodes].index(primary)
            os.killpg(cl.procs[idx].pid, signal.SIGKILL)
            cl.procs[idx].wait()
            cl.wait_role(backup, "primary", 30)
            cl.procs[idx] = cl._start(primary)
            cl.wait_role(primary, "backup", 60, state="normal")
            cl.wait_role(backup, "primary", 30, state="normal")
            time.sleep(0.5)
            print(f"  kill {i + 1}/{kills}: {primary} -> {backup}", flush=True)
        stop.set()
        res = q.get(timeout=60)
    finally:
        stop.set()
        if driver is not None:
            driver.join(timeout=30)
        cl.close()
    outages = sorted((b - a) * 1000 for a, b, _, _ in res["switches"])
    return [
        {
            "scenario": "failover",
            "kills": kills,
            "switches": len(outages),
            "outage_p50_ms": round(percentile(outages, 0.5), 1),
            "outage_p99_ms": round(percentile(outages, 0.99), 1),
            "outage_max_ms": round(max(outages), 1) if outages else None,
            "replies": res["replies"],
            "errors": res["errors"],
            "resends": res["resends"],
        }
    ]


def bench_processor(
    seconds: float, requests: int = 50_000, rounds: int = 5
) -> list[dict[str, Any]]:
    """The request path without I/O, over the same pre-built requests each round
    (fresh state each time; best round kept, the machine being noisy): what issue
    10's batching has to keep cheap. 64 clients take turns, as behind a busy
    frontend. `seconds` is not used: a fixed amount of work keeps runs comparable.
    Timed in CPU time of this process: the path is pure CPU work, and the
    shared machine's load would swamp wall-clock figures."""
    from zmqfail.processor import Processor
    from zmqfail.txlog.record import TxRecord

    cfg = config.load_default()
    rng = random.Random(3)
    reqs = [
        (f"c-{i % 64}", i // 64 + 1, random_order(rng, config.DEFAULT_INSTRUMENTS))
        for i in range(requests)
    ]
    best_submit = best_apply = float("inf")
    records: list[bytes] = []
    for _ in range(rounds):
        primary, backup = Processor.create(cfg, "a", 1), Processor.create(cfg, "b", 1)
        records = []
        sessions: dict[str, int] = {}
        for n in range(64):  # every client registers once, before the timed part
            out = primary.register(f"c-{n}", n + 1)
            assert out.record is not None
            records.append(out.record)
            sessions[f"c-{n}"] = out.gate_lsn
        t0 = time.process_time()
        for client_id, msg_id, body in reqs:
            out = primary.submit(client_id, msg_id, body, sessions[client_id])
            if out.record is not None:
                records.append(out.record)
        best_submit = min(best_submit, time.process_time() - t0)
        t0 = time.process_time()
        for data in records:
            backup.apply_record(TxRecord.decode(data))
        best_apply = min(best_apply, time.process_time() - t0)
    return [
        {
            "scenario": "processor",
            "requests": requests,
            "submit_per_s": round(requests / best_submit),
            "apply_per_s": round(len(records) / best_apply),
            "record_bytes": round(sum(map(len, records)) / max(1, len(records)), 1),
        }
    ]


SCENARIOS = {
    "processor": bench_processor,
    "single": bench_single,
    "bare": bench_bare,
    "normal": bench_normal,
    "failover": bench_failover,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("scenarios", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--json", dest="json_out", default=None, help="Also write results here.")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    for name in args.scenarios:
        new = SCENARIOS[name](args.seconds)
        rows += new
        for r in new:
            if r["scenario"] == "processor":
                print(
                    f"processor: {r['requests']:,} requests, best of 5: "
                    f"submit {r['submit_per_s']:,}/s, "
                    f"backup decode+apply {r['apply_per_s']:,}/s, "
                    f"{r['record_bytes']} bytes a record",
                    flush=True,
                )
                continue
            if r["scenario"] == "failover":
                print(
                    f"failover: {r['kills']} kill -9, outage p50 {r['outage_p50_ms']} ms "
                    f"p99 {r['outage_p99_ms']} ms max {r['outage_max_ms']} ms, "
                    f"errors {r['errors']}, resends {r['resends']}",
                    flush=True,
                )
                continue
            print(
                f"{r['scenario']:>7} window {r['window']:>3}: {r['throughput']:>7,} req/s  "
                f"p50 {r['p50_us']:>6,} us  p99 {r['p99_us']:>7,} us  errors {r['errors']}",
                flush=True,
            )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
