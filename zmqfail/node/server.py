"""One zmqfail server process: the shell around the node core.

It reads the clock (once per turn of the loop), moves bytes between sockets
and the core, touches files through the disk port, and answers operators on
the control socket. It decides nothing: every decision is `NodeCore`'s.
Single-threaded on purpose (the application must be deterministic and the
GIL makes threads no faster for it); only the disk writer runs on its own
thread, because fsync releases the GIL and can overlap the next batch (and,
on a secured cluster, the ZAP handler, so handshakes never take a turn).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import os
import random
from typing import Any

import zmq

from zmqfail.config import ClusterConfig
from zmqfail.core.node import NodeCore
from zmqfail.errors import LogWriteFailed, NodeError
from zmqfail.node import clock, tables
from zmqfail.node.control import Control
from zmqfail.node.disk import RealDisk
from zmqfail.node.links import Channels
from zmqfail.node.metrics import NodeMetrics
from zmqfail.protocol import AckStatus
from zmqfail.replication import LINKS
from zmqfail.security import Curve, ServerKeys
from zmqfail.txlog.fsutil import FILE_MODE, ensure_dir, write_file
from zmqfail.txlog.snapshot import read_meta
from zmqfail.zap import Authenticator, for_server, stopped_on_failure

log = logging.getLogger("zmqfail.node")

JOB_POLL = 0.005  # seconds between checks on forked children while any runs
GOODBYE_LINGER_MS = 200  # at most this long to hand the last heartbeat links their goodbye
# The cyclic garbage collector of a server process. A young collection walks
# every container made since the last one that still lives: under load that
# is mostly new table rows (tuples, untracked after this first walk). Every
# 100,000 allocations it stopped the loop for 40-100 ms every few seconds;
# every 2,000 a pause is a few ms, at about the same total cost
# (`tools/bench pauses`, docs/benchmarks.md).
GC_THRESHOLDS = (2_000, 20, 100)


def tune_collector() -> None:
    """For a process that runs one server: short collector pauses."""
    gc.set_threshold(*GC_THRESHOLDS)


def freeze_loaded() -> None:
    """What recovery built (tables, modules, the node) lives as long as the
    process: no full collection walks it again (as after each snapshot)."""
    gc.freeze()


class Node:
    def __init__(
        self,
        cfg: ClusterConfig,
        name: str,
        ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.me = cfg.node(name)
        self.name = name
        self.ctx: zmq.Context[zmq.Socket[bytes]] = ctx or zmq.Context.instance()
        self.data_dir = self.me.data_dir
        self.stopping = False
        self._lock_fd = -1
        self.metrics: NodeMetrics | None = None
        self.auth: Authenticator | None = None

    # ------------------------------------------------------------------ start
    def open(self) -> None:
        # Keys first: a missing one stops the node before it touches its data.
        keys, self.auth = for_server(self.cfg, self.name, self.ctx)
        with stopped_on_failure(self.auth):
            self._open(keys)

    def _open(self, keys: ServerKeys | None) -> None:
        ensure_dir(self.data_dir)
        self._lock()
        t0 = clock.now()
        meta = read_meta(self.data_dir)
        loaded = tables.load(self.cfg, self.data_dir, self.name, meta)
        proc = loaded.proc
        log.info(
            "%s: recovered to lsn %d epoch %d in %.3fs (snapshot %d, %d records replayed, "
            "%d torn bytes cut)",
            self.name,
            proc.last_lsn,
            proc.epoch,
            clock.now() - t0,
            loaded.snapshot_lsn,
            loaded.replayed,
            loaded.torn_bytes,
        )
        self.poller = zmq.Poller()
        m = self.metrics = NodeMetrics(self.cfg.name, self.me.metrics) if self.me.metrics else None
        self.disk = RealDisk(
            self.ctx,
            self.cfg,
            self.name,
            proc.last_lsn + 1,
            self._notify,
            m.io if m else None,
            m.flush_seconds.observe if m else None,
        )
        now = clock.now()
        self.core = NodeCore(
            self.cfg,
            self.name,
            self.disk,
            loaded,
            meta,
            now,
            wall_offset=clock.wall_offset(),
            rng=random.Random(),
        )
        self.channels = Channels(
            self.ctx,
            self.cfg,
            self.me,
            self.poller,
            lambda: self.core.follower.ack(AckStatus.GAP),
            keys,
        )
        self.control = Control(self.core, self.channels)
        auth = self.auth
        if auth is not None:
            self.control.curve_refused = lambda: auth.refused
            ch = self.channels
            auth.watch({Curve.CLIENTS: ch.frontend, Curve.CONTROL: ch.control})
        write_file(self.data_dir / "node.pid", f"{os.getpid()}\n".encode())
        if self.metrics is not None and not self.metrics.start():
            self.metrics = None
        log.info(
            "%s: starting at epoch %d, clients on %s", self.name, self.core.epoch, self.me.client
        )

    def _notify(self, old: zmq.Socket[bytes] | None, new: zmq.Socket[bytes]) -> None:
        if old is not None:
            self.poller.unregister(old)
        self.poller.register(new, zmq.POLLIN)

    def _lock(self) -> None:
        path = self.data_dir / "LOCK"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pidfile = self.data_dir / "node.pid"
            pid = pidfile.read_text().strip() if pidfile.exists() else "?"
            raise NodeError(
                f"data dir {self.data_dir} is in use by another node (pid {pid})"
            ) from None
        self._lock_fd = fd

    # ------------------------------------------------------------ for tests
    @property
    def role(self) -> str:
        return self.core.agent.fs.role.value

    @property
    def state(self) -> str:
        return self.core.agent.fs.state.value

    @property
    def active(self) -> bool:
        return self.core.agent.fs.active

    @property
    def exit_code(self) -> int:
        return self.core.exit_code

    def status(self, digest: bool = False) -> dict[str, Any]:
        return self.control.status(clock.now(), digest)

    def stop(self) -> None:
        self.stopping = True

    # ------------------------------------------------------------------- loop
    def run(self) -> int:
        core = self.core
        poller = self.poller
        replicating = False
        while not (self.stopping or core.stopping):
            events = dict(poller.poll(self._timeout_ms(clock.now())))
            now = clock.now()  # the reading the whole turn works with
            if self.metrics is not None:
                self._answered(events, now)
            try:
                self._turn(events, now)
            except LogWriteFailed as exc:
                # A synchronous write (a takeover's flush, a cut) failed: the
                # same as a failed background flush, the node stops with
                # nothing more acknowledged.
                core.on_flush_failed(str(exc))
            if self.metrics is not None and self.metrics.due(now):
                self.metrics.update(self.control.node_status(now), now)
            if (core.leader is not None) != replicating:
                replicating = core.leader is not None
                self._replication(replicating)
            self._carry(now)
            core.after_send()
        self._shutdown()
        return core.exit_code

    def _turn(self, events: dict[Any, int], now: float) -> None:
        core, ch, disk = self.core, self.channels, self.disk
        core.begin_turn(now)
        if disk.notify in events:
            self._flushed(now)
        if ch.frontend in events and core.takes_clients:
            frames = ch.read_frontend()
            if frames:
                core.on_client(frames, now)
        hears = core.hears_beats(now)
        for link in LINKS:
            if ch.pull[link] in events:
                records, more = ch.read_records(link)
                if records or more:
                    core.on_records(link, records, now, more)
            if ch.rep[link] in events:
                parts = ch.read_commit(link)
                if parts is not None:
                    core.on_commit(link, parts, now)
            if hears:  # the SUBs are not polled: read in the detector's turns
                beats = ch.read_heartbeats(link)
                if beats:
                    core.on_heartbeats(link, beats, now)
        for sock in [s for s in events if s in ch.owner]:
            got = ch.read_ack(sock)
            if got is not None:
                core.on_ack(*got, now)
        if ch.witness is not None and ch.witness in events:
            answers = ch.read_witness()
            if answers:
                core.on_witness(answers, now)
        for sock in [s for s in events if s in ch.probe_of]:
            peer, answers = ch.read_probe_replies(sock)
            if answers:
                core.on_probe_reply(peer, answers, now)
        if ch.control in events:
            self.control.drain(now)
        if disk.children or self.control.digests.jobs:
            self._reap(now)
        ch.faults.due(now)
        core.end_turn(now)

    def _answered(self, events: dict[Any, int], now: float) -> None:
        """Before a turn: the commit requests whose REQ became readable were
        answered now (asked when `_carry` sent them; a turn may ask again on
        the same link once it took the answer, so this comes first)."""
        m, ch = self.metrics, self.channels
        assert m is not None
        for sock in events:
            key = ch.owner.get(sock)
            if key is not None and key[1] not in ch.faults.deaf:
                m.answered(key[0], key[1], now)

    def _carry(self, now: float) -> None:
        """Send what the core's box holds, after each turn."""
        core, out, m = self.core, self.core.out, self.metrics
        if m is not None and (out.commit or out.reset):
            m.asked(out.commit, out.reset, clock.now())
        for peer in self.channels.carry(out, now):
            core.push_failed(peer)

    def _timeout_ms(self, now: float) -> int:
        deadline = self.core.next_deadline(now)
        d = self.channels.next_deadline()
        if d is not None and d < deadline:
            deadline = d
        if self.disk.children or self.control.digests.jobs:
            deadline = min(deadline, now + JOB_POLL)
        if deadline <= now:
            return 0  # due now (requests wait in the core): look, do not sleep
        return int((deadline - now) * 1000) + 1

    def _flushed(self, now: float) -> None:
        for lsn in self.disk.flushed():
            if lsn < 0:
                self.core.on_flush_failed(self.disk.error)
                return
            self.core.on_flushed(lsn, now)

    def _reap(self, now: float) -> None:
        snaps, images = self.disk.reap()
        for lsn, ok in snaps:
            self.core.on_snapshot_done(lsn, ok)
        for key, data in images:
            self.core.on_transfer_ready(key, data)
        self.control.reap()

    def _replication(self, on: bool) -> None:
        if on:
            self.channels.open_replication()
        else:
            self.channels.close_replication()

    # --------------------------------------------------------------- shutdown
    def _shutdown(self) -> None:
        """Clean stop: make everything processed durable and answer it, then close."""
        core = self.core
        try:
            core.shutdown()
        except (LogWriteFailed, OSError) as exc:
            log.critical("%s: final flush failed: %s", self.name, exc)
            core.exit_code = 3
        self.channels.carry(core.out, clock.now())
        self.control.close()
        self.disk.close()
        for pub in self.channels.pub.values():
            pub.close(linger=GOODBYE_LINGER_MS)  # the goodbyes go out before the process ends
        self.channels.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.auth is not None:
            self.auth.close()
        with contextlib.suppress(OSError):
            (self.data_dir / "node.pid").unlink()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        nlog = core.nlog
        log.info("%s: stopped at lsn %d (flushed %d)", self.name, nlog.held, nlog.flushed)
