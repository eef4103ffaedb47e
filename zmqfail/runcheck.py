"""The checker of a run under faults, from the bench's history and the nodes'
durable logs alone: one copy for `tools/chaos` and the process tests
(tests/test_chaos.py, tests/test_ledger_live.py, through tests/runcheck.py).

- every request in the history was completed exactly once (ok, fail or info);
- no epoch was served by two servers;
- every acknowledged write is in the final primary's log exactly once, no
  request is there twice, and each client's requests are in msg_id order;
- every node's tables equal a replay of its own log, both nodes agree, and
  the application's own invariants hold on the replayed state;
- for the ledger: every logged transaction conserves the total, no balance
  goes negative and no transfer id is applied twice (apps/ledger/check.py).

It trusts nothing the nodes say about themselves but their digests, which it
compares with its own replay. It reports instead of stopping at the first
fault, so a campaign can print every count; a loss the caller allows (an
acknowledgement lost to a power loss of every server within the periodic
flush window, which docs/reliability.md allows by design) is counted apart.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zmqfail import config
from zmqfail.apps.ledger.check import check_log
from zmqfail.audit import replay, requests_in_log
from zmqfail.cluster import Cluster
from zmqfail.errors import NodeError
from zmqfail.processor import Processor
from zmqfail.txlog.recovery import iter_records
from zmqfail.txlog.snapshot import newest_snapshot

Key = tuple[str, int]  # (client_id, msg_id)


def bench_args(cfg_path: Path, history: Path, report: Path, seconds: float, app: str) -> list[str]:
    """`zmqfail client bench` arguments for a recorded run: two clients, eight
    in flight each, a history for this checker and the summary as JSON."""
    return [
        "client",
        "bench",
        "--config",
        str(cfg_path),
        "--app",
        app,
        "--clients",
        "2",
        "--window",
        "8",
        "--duration",
        str(seconds),
        "--history",
        str(history),
        "--json-out",
        str(report),
        "--quiet",
    ]


def whole_then_stopped(
    cl: Cluster, timeout: float = 40.0, digest_timeout: float = 5.0
) -> tuple[str, dict[str, str]]:
    """Wait for the pair to be whole again (whoever is primary now), note the
    primary and every node's digest (hashing large tables on a loaded machine
    takes a while: `digest_timeout`), then stop them cleanly so their logs are
    whole."""
    primary = cl.wait_whole(timeout).name
    names = [n.name for n in cl.cfg.nodes]
    digests = {}
    for n in names:
        digest = cl.status(n, digest=True, timeout=digest_timeout).digest
        if digest is None:
            raise NodeError(f"node {n} gave no digest")
        digests[n] = digest
    for n in names:
        cl.stop(n)
    return primary, digests


@dataclass(slots=True)
class History:
    """A bench history (zmqfail/loadgen/history.py), indexed."""

    invokes: dict[Key, dict[str, Any]]  # every request -> its body (a long run's history is large)
    completions: collections.Counter[Key]
    acked: dict[Key, float]  # acknowledged (type ok) -> when the client got the reply
    oks: list[tuple[float, str, int]]  # (time, server, epoch) of every ok, in time order

    @classmethod
    def load(cls, path: Path) -> History:
        invokes: dict[Key, dict[str, Any]] = {}
        done: collections.Counter[Key] = collections.Counter()
        acked: dict[Key, float] = {}
        oks: list[tuple[float, str, int]] = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                e = json.loads(line)
                key = (e["client_id"], e["msg_id"])
                if e["type"] == "invoke":
                    invokes[key] = e["body"]
                    continue
                done[key] += 1
                if e["type"] == "ok":
                    acked[key] = e["time"]
                    oks.append((e["time"], e["server"], e["epoch"]))
        oks.sort()
        return cls(invokes, done, acked, oks)


@dataclass(slots=True)
class RunCheck:
    acked: int = 0
    epochs: int = 0  # epochs that acknowledged something
    lost: dict[Key, float] = field(default_factory=dict)  # not allowed: key -> ack time
    allowed_lost: dict[Key, float] = field(default_factory=dict)  # the caller allowed these
    twice: list[Key] = field(default_factory=list)
    # Acknowledged writes older than the final log (a server that caught up
    # from its peer's snapshot keeps no records before it) and older than the
    # replies the snapshot's sessions keep: no record left to judge them by.
    unverified: int = 0
    violations: list[str] = field(default_factory=list)  # one line each, lost included

    @property
    def ok(self) -> bool:
        return not self.violations


def _before_the_log(cfg: config.ClusterConfig, name: str) -> Callable[[Key], str]:
    """What the node's newest snapshot says of a request missing from its
    log: "replied" (its session still holds the reply: it was applied before
    the snapshot), "forgotten" (its msg_id is at or below the highest the
    session forgot, and the log does not reach back to the first record: no
    record is left to tell), or "" (the snapshot does not cover it)."""
    data_dir = cfg.node(name).data_dir
    snap = newest_snapshot(data_dir)
    if snap is None:
        return lambda key: ""
    complete = trail_complete(data_dir, snap.lsn)
    sessions = Processor.create(cfg, "audit", snap.epoch, snap.lsn, snap.state).sessions.live

    def known(key: Key) -> str:
        s = sessions.get(key[0])
        if s is None:
            return ""
        if key[1] in s.replies:
            return "replied"
        return "forgotten" if not complete and key[1] <= s.evicted else ""

    return known


def trail_complete(data_dir: Path, upto: int) -> bool:
    """Whether the node's archive and log hold every record from LSN 1 to
    `upto`. Not when they start later, nor when they skip some (a server
    that caught up from a snapshot archived its old segments, and its log
    starts at the snapshot: tools/chaos once counted the 775,816 writes in
    that gap as lost). Only then can a write missing from them be judged."""
    gaps: list[str] = []
    expect = 1
    for lsn, _ in iter_records(data_dir, on_gap=gaps.append, to_lsn=upto):
        if gaps or lsn != expect:
            return False
        expect = lsn + 1
    return not gaps and expect > upto


def check_run(
    cfg: config.ClusterConfig,
    history: History,
    primary: str,
    digests: dict[str, str],
    allowed: Callable[[Key, float], bool] = lambda key, t: False,
) -> RunCheck:
    """All the checks above on stopped nodes. `allowed(key, ack_time)` says
    whether an acknowledged write missing from the final log is a loss the
    design allows (it is counted in `allowed_lost`, not a violation)."""
    res = RunCheck(acked=len(history.acked))
    bad = res.violations.append
    # 1. The history: one completion per invoke.
    if not history.invokes:
        bad("the history holds no request")
    if set(history.completions) != set(history.invokes):
        unfinished = len(set(history.invokes) - set(history.completions))
        strays = len(set(history.completions) - set(history.invokes))
        bad(f"{unfinished} request(s) never completed, {strays} completion(s) never invoked")
    repeated = [k for k, n in history.completions.items() if n > 1]
    if repeated:
        bad(f"{len(repeated)} request(s) completed twice, e.g. {repeated[:3]}")
    # 2. No two servers at one epoch.
    servers_by_epoch: dict[int, set[str]] = collections.defaultdict(set)
    for _, server, epoch in history.oks:
        servers_by_epoch[epoch].add(server)
    res.epochs = len(servers_by_epoch)
    shared = {e: sorted(s) for e, s in servers_by_epoch.items() if len(s) > 1}
    if shared:
        bad(f"epochs served by two servers: {shared}")

    # 3. The final primary's log: acknowledged writes once, nothing twice, in order.
    in_log = requests_in_log(cfg.node(primary).data_dir)
    seen = collections.Counter(in_log)
    last_msg: dict[str, int] = {}
    disorder = []
    for client_id, msg_id in in_log:
        if msg_id <= last_msg.get(client_id, 0):
            disorder.append((client_id, msg_id))
        last_msg[client_id] = msg_id
    if disorder:
        bad(f"{len(disorder)} request(s) out of msg_id order in the log, e.g. {disorder[:3]}")
    res.twice = [k for k, n in seen.items() if n > 1]
    if res.twice:
        bad(f"{len(res.twice)} request(s) applied twice, e.g. {res.twice[:3]}")
    mix = cfg.app.workload(0)
    before = _before_the_log(cfg, primary)
    for k, t in history.acked.items():
        if seen[k] == 0 and k in history.invokes and mix.is_write(history.invokes[k]):
            known = before(k)
            if known == "replied":
                continue  # in the snapshot the log starts from, with its stored reply
            if known == "forgotten":
                res.unverified += 1  # applied before the snapshot, or lost before it
                continue
            (res.allowed_lost if allowed(k, t) else res.lost)[k] = t
    if res.lost:
        bad(f"{len(res.lost)} acknowledged request(s) lost, e.g. {sorted(res.lost)[:3]}")

    # 4. Tables equal a replay of each node's log, and each other; the
    # application's invariants hold; the ledger's log conserves money.
    for n, digest in digests.items():
        proc, _ = replay(cfg.node(n).data_dir, cfg)
        if proc.digest() != digest:
            bad(f"{n}'s tables differ from a replay of its own log")
        if broken := proc.app.check():
            bad(f"{n}'s replayed tables break the application's invariants: {broken[:3]}")
        if cfg.app.name == "ledger" and (wrong := check_log(cfg.node(n).data_dir, cfg)):
            bad(f"{n}'s ledger log: {wrong[:3]}")
    if len(set(digests.values())) > 1:
        bad(f"the nodes ended with different tables: {digests}")
    return res
