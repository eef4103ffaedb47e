"""A chaos campaign against real processes, and its verdict.

`run` starts a pair (and a witness if asked) through the library's cluster
helper, loads it with `zmqfail client bench` recording a history, injects
the seeded faults one at a time (schedule.py, inject.py) while a poller reads
every node's status, then stops the load (SIGINT: the bench stops sending,
drains and writes its history), waits for the pair to be whole, notes each
node's digest and stops both cleanly. Everything the verdict needs is left
in the run's directory (run.json beside the config, the history and the
logs), so `check` can judge a run again later, or a doctored copy of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchkit.procs import Reaper, check_interrupted

from zmqfail import config
from zmqfail.cluster import Cluster, spawn_node
from zmqfail.core.status import NodeStatus
from zmqfail.errors import ZmqfailError
from zmqfail.netlab import NetLab
from zmqfail.runcheck import (
    History,
    Key,
    RunCheck,
    bench_args,
    check_run,
    whole_then_stopped,
)

from . import netns
from .inject import RECOVER, Injector, Poller
from .schedule import Kind, draw
from .tally import Done, Row, in_any, power_ages, power_window, tally

RUN_FILE = "run.json"
HISTORY = "history.jsonl"
FLOWING_LSN = 200  # commits before the first fault: the load is flowing
# Seconds the bench gets after SIGINT to drain and merge its clients' parts
# into one history (some 300 MB after 15 minutes of full load).
STOP_LOAD = 600.0
DIGEST_WAIT = 60.0  # seconds a node gets to hash its tables at the end (a forked child)
CALM_TAIL = 2.0  # seconds of load after the last fault, so its outage closes


@dataclass(slots=True)
class Options:
    seed: int
    minutes: float
    app: str = "orders"
    witness: bool = False
    kinds: tuple[Kind, ...] = ()
    max_faults: int | None = None
    directory: Path | None = None
    rate: float | None = None  # requests/s over both clients; None: as fast as they go
    netns: bool = False  # node b in a network namespace, cuts on real cables (netns.py)


@dataclass(slots=True)
class Verdict:
    rows: list[Row]
    violations: list[str]
    power_windows: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": [r.as_dict() for r in self.rows],
            "violations": self.violations,
            "notes": self.notes,
        }


def _done_to_json(d: Done) -> dict[str, Any]:
    return {**asdict(d), "kind": d.kind.value}


def _done_from_json(raw: dict[str, Any]) -> Done:
    return Done(**{**raw, "kind": Kind(raw["kind"])})


def run(opts: Options, say: Callable[[str], None]) -> Path:
    """The campaign; returns its directory (with run.json for `check`)."""
    directory = opts.directory or Path(tempfile.mkdtemp(prefix="zmqfail-chaos-"))
    directory.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "seed": opts.seed,
        "minutes": opts.minutes,
        "app": opts.app,
        "rate": opts.rate,
        "kinds": [k.value for k in opts.kinds],
        "faults": [],
        "problems": [],
        "samples": [],
        "primary": None,
        "digests": {},
        "netns": opts.netns,
    }
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(netns.lab()) if opts.netns else None
        reaper = stack.enter_context(Reaper())  # ends the nodes before the lab goes
        made: list[Cluster] = []  # the helper, once made: its spawn needs its config path

        def spawn(name: str) -> subprocess.Popen[bytes]:
            cl = made[0]
            before = netns.prefix(lab, name) if lab is not None else []
            return reaper.adopt(spawn_node(cl.path, name, cl.log_of(name), before))

        if lab is not None:
            path = netns.write_config(lab, directory, opts.app, opts.witness)
            cl = Cluster(config.load(path), spawn, logs=directory)
        else:
            cl = Cluster.in_dir(directory, 2, app=opts.app, witness=opts.witness, spawn=spawn)
        made.append(cl)
        try:
            _campaign(opts, cl, reaper, directory, record, say, lab)
        finally:
            cl.close()
            (directory / RUN_FILE).write_text(json.dumps(record))
    return directory


def _campaign(
    opts: Options,
    cl: Cluster,
    reaper: Reaper,
    directory: Path,
    record: dict[str, Any],
    say: Callable[[str], None],
    lab: NetLab | None = None,
) -> None:
    problems: list[str] = record["problems"]
    if opts.witness:
        reaper.adopt(cl.start_witness())
    cl.start()
    cl.wait_whole(60)
    history = directory / HISTORY
    argv = bench_args(cl.path, history, directory / "bench.json", 7 * 86_400, opts.app)
    # Stopped by SIGINT once the faults are done; a power loss of every server
    # must not make a client give up.
    argv += ["--connect-timeout", "30", "--lost-after", "300"]
    if opts.rate is not None:
        argv += ["--rate", f"{opts.rate:g}"]
    bench = reaper.popen([sys.executable, "-m", "zmqfail", *argv], directory / "bench.log")

    def flowing(rows: list[NodeStatus]) -> bool:
        if bench.poll() is not None:
            raise ZmqfailError(f"the bench exited early; see {directory / 'bench.log'}")
        return any(r.serving and (r.committed_lsn or 0) > FLOWING_LSN for r in rows)

    cl.wait_all(flowing, f"past commit {FLOWING_LSN} (load flowing)", 90)
    poller = Poller(cl)
    poller.start()
    injector = Injector(cl, reaper.adopt, say, lab)
    deadline = time.monotonic() + opts.minutes * 60
    where = f" (node b in namespace {lab.ns}: cuts on real cables)" if lab else ""
    say(f"load flowing; faults for {opts.minutes:g} min (seed {opts.seed}) in {directory}{where}")
    try:
        for fault in draw(opts.seed, opts.kinds):
            if opts.max_faults is not None and fault.index > opts.max_faults:
                break
            if time.monotonic() + fault.gap + fault.hold > deadline:
                break
            _calm(fault.gap, bench)
            done = injector.do(fault)
            record["faults"].append(_done_to_json(done))
            if done.whole is None:
                break  # stuck: the next fault would be a double failure
        _calm(CALM_TAIL, bench)
    finally:
        poller.stop()
        record["samples"] = poller.samples
        problems.extend(injector.problems)
        _stop_bench(bench, problems)
    try:
        primary, digests = whole_then_stopped(cl, RECOVER, DIGEST_WAIT)
        record["primary"], record["digests"] = primary, digests
    except ZmqfailError as exc:
        problems.append(f"the pair was not whole at the end: {exc}")


def _calm(seconds: float, bench: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        check_interrupted()
        if bench.poll() is not None:
            raise ZmqfailError(f"the bench exited during the campaign (status {bench.returncode})")
        time.sleep(min(left, 0.1))


def _stop_bench(bench: subprocess.Popen[bytes], problems: list[str]) -> None:
    if bench.poll() is None:
        os.kill(bench.pid, signal.SIGINT)  # the bench itself, not its clients
    try:
        rc = bench.wait(STOP_LOAD)
    except subprocess.TimeoutExpired:
        problems.append(f"the bench did not stop within {STOP_LOAD:g}s of SIGINT")
        return
    if rc != 0:
        problems.append(f"the bench ended with status {rc} (see bench.log)")


def check(directory: Path) -> Verdict:
    """The verdict on a finished run's directory: the checker over the
    history and every node's log, the power-loss allowance, the table."""
    raw = json.loads((directory / RUN_FILE).read_text())
    cfg = config.load(directory / "zmqfail.toml")
    faults = [_done_from_json(f) for f in raw["faults"]]
    kinds = [Kind(k) for k in raw["kinds"]]
    violations = list(raw["problems"])
    history_path = directory / HISTORY
    if not history_path.exists():
        return Verdict([], [*violations, "no history: the bench wrote none"])
    history = History.load(history_path)
    windows = power_window(faults, cfg.flush.interval_ms / 1000.0)

    def allowed(key: Key, t: float) -> bool:
        return in_any(t, windows)

    notes = []
    if raw["primary"] is None:
        violations.append("no verdict on the logs: the pair never became whole")
        res = RunCheck(acked=len(history.acked))
    else:
        res = check_run(cfg, history, raw["primary"], raw["digests"], allowed)
        violations += res.violations
    if res.allowed_lost:
        # How long before the power loss that allows it each was acknowledged.
        ages = power_ages(res.allowed_lost.values(), faults, cfg.flush.interval_ms / 1000.0)
        notes.append(
            f"{len(res.allowed_lost)} acknowledged request(s) lost to power losses of every "
            f"server, allowed by design; the oldest acknowledged {max(ages) * 1000:.0f} ms "
            "before its power loss"
        )
    if res.unverified:
        notes.append(
            f"{res.unverified} acknowledged write(s) are not in the final primary's log "
            "and archive, which skip records (it caught up from its peer's snapshot, which "
            "keeps only each session's last replies): not judged one by one"
        )
    samples = [(float(t), int(n)) for t, n in raw["samples"]]
    rows = tally(faults, history, res, samples, kinds)
    return Verdict(rows, violations, len(windows), notes)


def remove(directory: Path, keep: bool) -> None:
    if not keep:
        shutil.rmtree(directory, ignore_errors=True)
