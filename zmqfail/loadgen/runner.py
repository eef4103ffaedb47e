"""The bench's parent: starts the client processes, lines them up on one start
instant, relays their progress and merges their results.

Clients are started with the ``spawn`` method: a forked child would inherit
whatever ZeroMQ context and I/O threads the parent holds, which ZeroMQ does
not survive. Every client connects before the clock starts, so connection
set-up and process start-up never count against throughput.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import queue as queue_mod
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

from zmqfail.config import ClusterConfig
from zmqfail.errors import ConfigError, ZmqfailError
from zmqfail.loadgen.history import merge_parts
from zmqfail.loadgen.results import ClientResult, summarize
from zmqfail.loadgen.worker import WorkerSpec, run_client

READY_GRACE = 30.0  # process start-up (imports) on a loaded machine, beyond the connect timeout
DEAD_GRACE = 1.0  # seconds a dead client's queued messages get to arrive
ProgressFn = Callable[[float, dict[int, dict[str, Any]]], None]


@dataclass(frozen=True, slots=True)
class BenchOptions:
    clients: int = 1
    window: int = 16
    rate: float | None = None  # total req/s across clients; None: closed loop
    duration: float | None = None
    requests: int | None = None  # total across clients
    seed: int = 1
    history: Path | None = None
    drain: float = 5.0
    connect_timeout: float = 5.0
    lost_after: float = 10.0

    def validate(self) -> None:
        if self.clients < 1:
            raise ConfigError(f"--clients must be at least 1, got {self.clients}")
        if self.window < 1:
            raise ConfigError(f"--window must be at least 1, got {self.window}")
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ConfigError(f"--rate must be a positive number of requests/s, got {self.rate}")
        if (self.duration is None) == (self.requests is None):
            raise ConfigError("give exactly one of --duration and --requests")
        if self.duration is not None and not self.duration > 0:
            raise ConfigError(f"--duration must be positive, got {self.duration}")
        if self.requests is not None and self.requests < 1:
            raise ConfigError(f"--requests must be at least 1, got {self.requests}")
        if self.drain < 0 or self.connect_timeout <= 0 or self.lost_after <= 0:
            raise ConfigError("--drain must be >= 0, --connect-timeout and --lost-after > 0")


def split(total: int, parts: int) -> list[int]:
    """`total` shared as evenly as integers allow; the first ones get the rest."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def part_paths(history: Path, clients: int) -> list[Path]:
    return [history.with_name(f"{history.name}.part{i}") for i in range(clients)]


@dataclass(slots=True)
class BenchRun:
    summary: dict[str, Any]
    results: list[ClientResult]


class _Fleet:
    """The client processes and the one queue they all report on."""

    def __init__(self, cfg: ClusterConfig, opts: BenchOptions) -> None:
        self.opts = opts
        ctx = mp.get_context("spawn")
        self.queue: Any = ctx.Queue()
        self.start = ctx.Event()
        self.stop = ctx.Event()
        self.start_at: Any = ctx.Value("d", 0.0)
        n = opts.clients
        shares: list[int | None] = list(split(opts.requests, n)) if opts.requests else [None] * n
        parts = part_paths(opts.history, n) if opts.history else None
        self.procs: list[SpawnProcess] = []
        for i in range(n):
            spec = WorkerSpec(
                index=i,
                requests=shares[i],
                duration=opts.duration,
                rate=opts.rate / n if opts.rate else None,
                window=opts.window,
                seed=opts.seed,
                history_part=str(parts[i]) if parts else None,
                drain=opts.drain,
                connect_timeout=opts.connect_timeout,
                lost_after=opts.lost_after,
            )
            args = (spec, cfg, self.queue, self.start, self.stop, self.start_at)
            self.procs.append(
                ctx.Process(target=run_client, args=args, name=f"bench-client-{i}", daemon=True)
            )
        self.ready: set[int] = set()
        self.results: dict[int, ClientResult] = {}
        self.errors: dict[int, str] = {}
        self.progress: dict[int, dict[str, Any]] = {i: {} for i in range(n)}
        self.dead_since: dict[int, float] = {}

    def launch(self) -> None:
        for p in self.procs:
            p.start()

    def _take(self, timeout: float) -> None:
        try:
            kind, index, payload = self.queue.get(timeout=timeout)
        except queue_mod.Empty:
            self._check_dead()
            return
        if kind == "ready":
            self.ready.add(index)
        elif kind == "progress":
            self.progress[index] = payload
        elif kind == "done":
            self.results[index] = payload
        elif kind == "error":
            self.errors[index] = payload

    def _check_dead(self) -> None:
        now = time.monotonic()
        for i, p in enumerate(self.procs):
            if p.exitcode is None or i in self.results or i in self.errors:
                continue
            # Its last words may still be on their way through the pipe.
            since = self.dead_since.setdefault(i, now)
            if now - since > DEAD_GRACE:
                self.errors[i] = f"client {i} exited with code {p.exitcode} without a result"

    def _finished(self) -> int:
        return len(self.results) + len(self.errors)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.opts.connect_timeout + READY_GRACE
        while len(self.ready) < len(self.procs):
            if self.errors:
                raise ZmqfailError(next(iter(self.errors.values())))
            if time.monotonic() > deadline:
                raise ZmqfailError("bench clients did not start in time")
            self._take(0.1)

    def go(self) -> float:
        t0 = time.monotonic()
        self.start_at.value = t0
        self.start.set()
        return t0

    def wait_done(self, t0: float, on_progress: ProgressFn | None) -> None:
        # The first Ctrl-C is a flag, not an exception: a KeyboardInterrupt
        # raised inside multiprocessing's queue or a finalizer can be swallowed
        # there, and the run would go on to its full duration (seen under
        # load). A second one raises, as a user pressing it twice expects.
        asked: list[int] = []

        def on_sigint(signum: int, frame: object) -> None:
            if asked:
                raise KeyboardInterrupt
            asked.append(signum)

        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, on_sigint) if main else None
        try:
            self._wait_done(t0, on_progress, asked)
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)

    def _wait_done(self, t0: float, on_progress: ProgressFn | None, asked: list[int]) -> None:
        next_draw = 0.0
        while self._finished() < len(self.procs):
            try:
                if asked and not self.stop.is_set():
                    self.stop.set()  # Ctrl-C: stop sending, drain, report
                self._take(0.1)
                if self.errors:
                    self.stop.set()  # one client failed: end the run, keep what the others have
                now = time.monotonic()
                if on_progress is not None and now >= next_draw:
                    next_draw = now + 0.1
                    on_progress(now - t0, self.progress)
            except KeyboardInterrupt:
                if self.stop.is_set():
                    raise
                self.stop.set()  # first Ctrl-C: stop sending, drain, report
        if on_progress is not None:
            on_progress(time.monotonic() - t0, self.progress)

    def reap(self) -> None:
        self.stop.set()
        self.start.set()
        for p in self.procs:
            if p.pid is None:
                continue
            p.join(timeout=self.opts.drain + 5.0)
            if p.is_alive():
                p.terminate()
                p.join(timeout=2.0)
            if p.is_alive():
                p.kill()
                p.join()


def run_bench(
    cfg: ClusterConfig, opts: BenchOptions, on_progress: ProgressFn | None = None
) -> BenchRun:
    """Run the whole bench; raises ZmqfailError with one line when it cannot."""
    opts.validate()
    fleet = _Fleet(cfg, opts)
    try:
        fleet.launch()
        fleet.wait_ready()
        t0 = fleet.go()
        fleet.wait_done(t0, on_progress)
    finally:
        fleet.reap()
        if opts.history is not None:
            parts = part_paths(opts.history, opts.clients)
            if not fleet.errors and len(fleet.results) == opts.clients:
                merge_parts(parts, opts.history)
            for p in parts:
                p.unlink(missing_ok=True)
    if fleet.errors:
        raise ZmqfailError(fleet.errors[min(fleet.errors)])
    results = [fleet.results[i] for i in sorted(fleet.results)]
    summary = summarize(results, window=opts.window, rate=opts.rate, seed=opts.seed)
    return BenchRun(summary, results)
