"""One bench client: a process of its own with its own ZeroMQ context.

It connects, reports ready, waits for the common start, then keeps up to
`window` requests in flight (closed loop) or sends at scheduled times (open
loop, ``rate``), and at the end drains what is still in flight before it
counts anything as unknown: a request whose reply is merely late is not an
error. It never lets ``Client.submit`` wait for window room itself, since a
blocking submit would hide replies from the bookkeeping here and wreck the
open-loop schedule.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import zmq

from zmqfail.client.session import ClientState
from zmqfail.client.sync import Client
from zmqfail.config import ClusterConfig
from zmqfail.errors import Unavailable, ZmqfailError
from zmqfail.loadgen.history import HistoryWriter, completion_type
from zmqfail.loadgen.outage import OutageTracker
from zmqfail.loadgen.results import NO_REPLY, ClientResult
from zmqfail.protocol import STATUS_OK, STATUS_REJECTED, STATUS_STALE, Reply

WAIT = 0.05  # longest single wait, so progress, deadlines and stop requests stay prompt
PROGRESS_EVERY = 0.2
# ZeroMQ polls in whole milliseconds: a shorter wait would spin and steal the
# CPU the servers need; a send up to 1 ms late is not "behind".
MIN_WAIT = 0.001


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    index: int
    requests: int | None  # this client's share of --requests; None: run for `duration`
    duration: float | None
    rate: float | None  # this client's share of --rate; None: closed loop
    window: int
    seed: int
    history_part: str | None
    drain: float
    connect_timeout: float
    lost_after: float = 10.0


def client_seed(seed: int, index: int) -> int:
    """Distinct, reproducible streams per client from one --seed."""
    return seed * 1_000_003 + index


def run_client(
    spec: WorkerSpec,
    cfg: ClusterConfig,
    queue: Queue[tuple[str, int, Any]],
    start: Event,
    stop: Event,
    start_at: Synchronized[float],
) -> None:
    """Process entry point: every outcome ends in one message on `queue`."""
    # Ctrl-C reaches the whole process group; the parent turns it into `stop`
    # so that every client still drains and reports.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = _Run(spec, cfg, queue).run(start, stop, start_at)
        queue.put(("done", spec.index, result))
    except ZmqfailError as exc:
        queue.put(("error", spec.index, str(exc)))
    except Exception as exc:
        queue.put(("error", spec.index, f"{type(exc).__name__}: {exc}"))


class _Run:
    def __init__(self, spec: WorkerSpec, cfg: ClusterConfig, queue: Queue[tuple[str, int, Any]]):
        self.spec = spec
        self.cfg = cfg
        self.queue = queue
        self.mix = cfg.app.workload(client_seed(spec.seed, spec.index))  # the app's request mix
        self.inflight: dict[int, tuple[float, dict[str, Any]]] = {}  # msg_id -> (sent, body)
        self.tracker = OutageTracker()
        self.seen_failovers = 0
        self.history: HistoryWriter | None = None
        self.next_progress = 0.0
        self.res = ClientResult(spec.index, "")

    def run(self, start: Event, stop: Event, start_at: Synchronized[float]) -> ClientResult:
        # A context of its own: nothing inherited, nothing shared with the parent.
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            with Client(
                self.cfg,
                timeout=self.spec.connect_timeout,
                window=self.spec.window,
                ctx=ctx,
                lost_after=self.spec.lost_after,
            ) as client:
                return self._drive(client, start, stop, start_at)
        finally:
            ctx.destroy(linger=0)

    def _drive(
        self, c: Client, start: Event, stop: Event, start_at: Synchronized[float]
    ) -> ClientResult:
        c.connect(self.spec.connect_timeout)
        res = self.res
        res.client_id = c.client_id
        if self.spec.history_part:
            self.history = HistoryWriter(Path(self.spec.history_part), c.client_id)
        self.queue.put(("ready", self.spec.index, c.client_id))
        while not start.wait(WAIT):
            if stop.is_set():
                break
        t0 = float(start_at.value) or time.monotonic()
        res.started = res.finished = t0
        try:
            self._load(c, stop, t0)
            if not res.lost:
                self._drain(c)
        finally:
            self._finish(c)
        return res

    # ------------------------------------------------------------ sending
    def _send(self, c: Client) -> None:
        body = self.mix.next_body()
        now = time.monotonic()
        msg_id = c.submit(body)
        self.inflight[msg_id] = (now, body)
        self.res.invoked += 1
        if self.history is not None:
            self.history.invoke(now, msg_id, body)

    def _load(self, c: Client, stop: Event, t0: float) -> None:
        spec, res = self.spec, self.res
        budget = spec.requests if spec.requests is not None else math.inf
        end = t0 + spec.duration if spec.duration is not None else math.inf
        interval = 1.0 / spec.rate if spec.rate else None
        behind_upto = 0
        while not stop.is_set():
            now = time.monotonic()
            if now >= end or res.invoked >= budget:
                return
            if c.state is ClientState.LOST:
                res.lost = f"client {spec.index} lost every server"
                return
            wait = WAIT
            if interval is None:
                while len(self.inflight) < spec.window and res.invoked < budget:
                    self._send(c)
            else:
                due = min(budget, math.floor((now - t0) / interval) + 1)
                while res.invoked < due and len(self.inflight) < spec.window:
                    self._send(c)
                if res.invoked < due:  # due, but the window is full: late
                    res.behind += int(due - max(res.invoked, behind_upto))
                    behind_upto = int(due)
                elif len(self.inflight) < spec.window:
                    wait = min(WAIT, t0 + res.invoked * interval - time.monotonic())
                    wait = max(MIN_WAIT, wait)
            self._poll(c, max(0.0, min(wait, end - time.monotonic())))
            if res.lost:
                return

    # ------------------------------------------------------------ replies
    def _poll(self, c: Client, wait: float) -> None:
        try:
            replies = c.poll(wait)
        except Unavailable as exc:
            self.res.lost = f"client {self.spec.index}: {exc}"
            replies = []
        now = time.monotonic()
        for rep in replies:
            self._complete(rep, now)
        new = c.failovers[self.seen_failovers :]
        self.seen_failovers = len(c.failovers)
        if replies or new:
            self.tracker.batch(now, [(r.server, r.epoch) for r in replies], new)
        if replies:
            self.res.finished = now
        if now >= self.next_progress:
            self.next_progress = now + PROGRESS_EVERY
            self.queue.put(("progress", self.spec.index, self._progress(c)))

    def _complete(self, rep: Reply, now: float) -> None:
        res = self.res
        sent, body = self.inflight.pop(rep.msg_id)
        code = str(rep.result.get("code", "unknown"))
        if rep.status == STATUS_OK:
            res.ok += 1
            self.mix.on_ok(body, rep.result)
            if body.get("op") == "new":
                res.new_ok += 1
                if rep.result.get("filled"):
                    res.crossed += 1
        elif rep.status == STATUS_REJECTED:
            res.rejected_by_code[code] = res.rejected_by_code.get(code, 0) + 1
        else:
            kind = STATUS_STALE if rep.status == STATUS_STALE else f"{rep.status}:{code}"
            res.errors_by_kind[kind] = res.errors_by_kind.get(kind, 0) + 1
        if rep.status in (STATUS_OK, STATUS_REJECTED):
            res.latency_us.record(max(0, round((now - sent) * 1e6)))
        if self.history is not None:
            self.history.complete(
                now,
                completion_type(rep.status),
                rep.msg_id,
                rep.server,
                rep.epoch,
                rep.status,
                rep.result,
            )

    def _drain(self, c: Client) -> None:
        deadline = time.monotonic() + self.spec.drain
        while self.inflight and not self.res.lost:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._poll(c, min(WAIT, left))

    def _finish(self, c: Client) -> None:
        """Whatever is still in flight has an unknown outcome: say so, once each."""
        res = self.res
        now = time.monotonic()
        if self.inflight:
            res.errors_by_kind[NO_REPLY] = res.errors_by_kind.get(NO_REPLY, 0) + len(self.inflight)
            if self.history is not None:
                for msg_id in self.inflight:
                    self.history.complete(now, "info", msg_id, None, None, None, None)
            self.inflight.clear()
        if self.history is not None:
            self.history.close()
        res.resends = c.session.resends
        res.outages = self.tracker.finish()
        self.queue.put(("progress", self.spec.index, self._progress(c)))

    def _progress(self, c: Client) -> dict[str, Any]:
        res = self.res
        return {
            "sent": res.invoked,
            "ok": res.ok,
            "rejected": res.rejected,
            "errors": res.errors,
            "inflight": len(self.inflight),
            "resends": c.session.resends,
            "failovers": len(c.failovers),
            "state": c.state.value,
            "server": c.server,
        }
