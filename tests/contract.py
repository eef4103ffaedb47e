"""The application contract, checked the same way for every application: the
shipped ones (test_app_contract.py) and the guide's example (test_app_guide.py).

Requests go through the Processor exactly as on a primary: sessions, stored
replies, records. Then:

* replaying the records from empty gives the live digest, and check() holds;
* a snapshot through msgpack, restored, gives the live digest and answers
  further requests exactly as the original does;
* execute changes nothing, and a request that logs nothing (a query, a
  refused malformed body) changes nothing either.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from zmqfail import config
from zmqfail.app import AppSpec, Workload
from zmqfail.processor import Processor
from zmqfail.protocol import STATUS_OK, Reply, decode_as
from zmqfail.txlog.record import TxRecord

QueryFn = Callable[[random.Random], dict[str, Any]]
JUNK: list[dict[str, Any]] = [{}, {"op": "no-such-op"}, {"op": 1}, {"op": None, "x": [1]}]
CLIENTS = ("c1", "c2", "c3", "c4")


def cluster_config(ref: str, settings: dict[str, Any]) -> config.ClusterConfig:
    cfg = config.loads(config.render(2, 5700), Path("/tmp"))
    return dataclasses.replace(cfg, app=AppSpec(ref, settings))


def roundtrip(obj: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False, strict_map_key=False)


class Driver:
    """Clients with sessions sending the app's workload, queries and junk."""

    def __init__(self, cfg: config.ClusterConfig, queries: QueryFn, seed: int) -> None:
        self.cfg = cfg
        self.queries = queries
        self.rng = random.Random(seed)
        self.proc = Processor.create(cfg, "a", 1)
        self.records: list[bytes] = []
        self.sessions: dict[str, int] = {}
        self.msg_ids = dict.fromkeys(CLIENTS, 0)
        self.mixes: dict[str, Workload] = {
            c: cfg.app.workload(seed * 100 + i) for i, c in enumerate(CLIENTS)
        }
        self.logged = self.unlogged = 0
        self.sent: list[tuple[str, dict[str, Any]]] = []
        for c in CLIENTS:
            out = self.proc.register(c, 1)
            assert out.record is not None
            self.records.append(out.record)
            self.sessions[c] = out.gate_lsn

    def body(self) -> tuple[str, dict[str, Any]]:
        client = self.rng.choice(CLIENTS)
        r = self.rng.random()
        if r < 0.1:
            return client, self.queries(self.rng)
        if r < 0.13:
            return client, dict(self.rng.choice(JUNK))
        return client, self.mixes[client].next_body()

    def send(self, proc: Processor, client: str, body: dict[str, Any], check: bool) -> Reply:
        if proc is self.proc:
            self.sent.append((client, body))
        self.msg_ids[client] += 1
        msg_id = self.msg_ids[client]
        if check:
            before = proc.digest()
            proc.app.execute(client, body)
            assert proc.digest() == before, f"execute changed the state: {body}"
        out = proc.submit(client, msg_id, body, self.sessions[client])
        rep = decode_as(out.reply, Reply)
        if out.record is None:
            self.unlogged += 1
            if check:
                assert proc.digest() == before, f"a request not logged changed the state: {body}"
        else:
            self.logged += 1
            if proc is self.proc:
                self.records.append(out.record)
        if rep.status == STATUS_OK and proc is self.proc:
            self.mixes[client].on_ok(body, rep.result)
        return rep


def check_contract(ref: str, settings: dict[str, Any], queries: QueryFn, seed: int = 1) -> None:
    cfg = cluster_config(ref, settings)
    d = Driver(cfg, queries, seed)
    for i in range(1200):
        d.send(d.proc, *d.body(), check=i < 300)  # digests are costly: check the first 300
    assert d.logged > 500 and d.unlogged > 50, (d.logged, d.unlogged)
    live = d.proc.digest()
    assert d.proc.app.check() == [], d.proc.app.check()

    # 1. The records alone, replayed from empty, rebuild the same state.
    replica = Processor.create(cfg, "b", 1)
    for data in d.records:
        replica.apply_record(TxRecord.decode(data))
    assert replica.digest() == live, "replaying the records gives another state"
    assert replica.app.check() == [], replica.app.check()
    assert replica.app.describe() == d.proc.app.describe(), "replay: other table sizes"

    # 2. Snapshot (as written to disk and sent to a backup) and restore.
    snap = roundtrip(d.proc.snapshot())
    copy = Processor.create(cfg, "a", 1, d.proc.last_lsn, snap)
    assert copy.digest() == live, "the restored snapshot gives another state"
    assert copy.snapshot() == snap, "the restored snapshot snapshots differently"
    # ... and the copy goes on exactly as the original, also when old requests
    # come again as new ones (state a snapshot forgot would show there).
    for _ in range(300):
        client, body = d.body() if d.rng.random() < 0.6 else d.rng.choice(d.sent[-100:])
        a = d.send(d.proc, client, body, check=False)
        d.msg_ids[client] -= 1  # the copy gets the same msg_id
        b = d.send(copy, client, body, check=False)
        assert (a.status, a.result) == (b.status, b.result), f"the copy answers {body} otherwise"
    assert copy.digest() == d.proc.digest(), "the copy and the original went apart"

    # 3. A different state has a different digest (the digest sees the tables).
    assert live != Processor.create(cfg, "a", 1).digest(), "the digest misses the tables"
