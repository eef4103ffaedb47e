"""One zmqfail server process: the poll loop that ties the agents together.

Single-threaded on purpose (the application must be deterministic and the GIL makes
threads no faster for it); only the disk writer runs on its own thread, because
fsync releases the GIL and can overlap the next batch's processing.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import time
from typing import Any

import zmq

from zmqfail.checkpoint import PERIODIC, SYNC, FlushPolicy
from zmqfail.config import ClusterConfig
from zmqfail.errors import NodeError, ProtocolError
from zmqfail.failover.machine import Action, Role, State
from zmqfail.node import control, tables
from zmqfail.node.agent import FailoverAgent
from zmqfail.node.digest import DigestJobs
from zmqfail.node.flusher import Flusher
from zmqfail.node.heartbeat import Heartbeats
from zmqfail.node.mirror import Mirror
from zmqfail.node.replicator import Replicator
from zmqfail.node.storage import Storage
from zmqfail.processor import Processed, ReplyGate
from zmqfail.protocol import (
    READ_BUDGET,
    STATUS_ERROR,
    STATUS_NOT_ACTIVE,
    Channel,
    ControlReply,
    ControlRequest,
    Hello,
    RecoverySignal,
    Register,
    Request,
    Welcome,
    decode,
    decode_request,
    encode_reply,
    limit_socket,
)
from zmqfail.txlog.history import EpochHistory, common_prefix, new_term_id
from zmqfail.txlog.memlog import MemLog
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.segments import DiskLog
from zmqfail.txlog.snapshot import read_meta, write_meta

log = logging.getLogger("zmqfail.node")

MAX_BATCH = 512  # frames taken from a socket per poll round, so no channel starves
PUSH_EVERY = 16  # requests processed between replication pushes within one batch
SLOW_TICK = 0.005  # seconds between runs of the failure detector and timers


class Node(Storage):
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
        self.exit_code = 0
        self.incarnation = random.getrandbits(48)
        self.clients: dict[bytes, float] = {}  # identities seen, for the recovery signal
        self.counters: dict[str, int] = {
            "requests": 0,
            "replies": 0,
            "bad_frames": 0,
            "undeliverable": 0,
            "flushes": 0,
            "snapshots": 0,
            "snapshots_installed": 0,
            "takeovers": 0,
            "votes": 0,
            "votes_refused": 0,
            "quarantined": 0,
        }
        # Records this server set aside because no other server's history has
        # them (some may have been acknowledged): what, when, why. Shown in
        # status; the files stay in DATA_DIR/quarantine.
        self.quarantine: list[dict[str, Any]] = []
        self.acked_lsn: int | None = None  # highest LSN we acknowledged as primary
        fo = cfg.failover
        self.dead_after = fo.heartbeat_interval_ms * fo.heartbeat_misses / 1000.0
        self.cut_links: set[str] = set()
        self.heal_at: dict[str, float] = {}  # link (or "delay:link") -> when it heals
        self.delays: dict[str, float] = {}  # link -> seconds records are held (fault)
        self.now = time.monotonic()  # the loop's clock reading for this turn
        self.to_apply: list[TxRecord] = []
        self.started = time.time()
        self.replicator: Replicator | None = None
        self.snapshot_child: tuple[int, int, float] | None = None
        self._next_slow = 0.0
        self.trust_silence_after = 0.0
        self.digests = DigestJobs()
        self._lock_fd = -1
        self._sockets: list[zmq.Socket[bytes]] = []

    # ------------------------------------------------------------------ start
    def open(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        t0 = time.perf_counter()
        meta = read_meta(self.data_dir)
        loaded = tables.load(self.cfg, self.data_dir, self.name, meta)
        self.proc = loaded.proc
        self.snapshot_lsn = loaded.snapshot_lsn
        self.held_epoch = self.proc.last_epoch
        log.info(
            "%s: recovered to lsn %d epoch %d in %.3fs (snapshot %d, %d records replayed, "
            "%d torn bytes cut)",
            self.name,
            self.proc.last_lsn,
            self.proc.epoch,
            time.perf_counter() - t0,
            self.snapshot_lsn,
            loaded.replayed,
            loaded.torn_bytes,
        )
        prior = meta.get("quarantined", 0)
        self.counters["quarantined"] = prior if isinstance(prior, int) else 0
        for cut in loaded.cuts:
            self.note_cut(cut, "does not apply", None)
        if loaded.cuts:
            # Its history is in doubt: it must follow a primary before it leads.
            meta = dict(meta, active=False, alone=False)
        self.agent = FailoverAgent(self, self.proc.epoch, meta, time.monotonic())
        self._save_meta()
        self.disklog = DiskLog(self.data_dir, self.cfg.flush.segment_bytes, self.proc.last_lsn + 1)
        self.memlog = MemLog(self.proc.last_lsn + 1)
        self.flushed_lsn = self.proc.last_lsn
        self.committed_lsn = self.proc.last_lsn
        self.policy = FlushPolicy(self.cfg.flush, SYNC)
        self.gate = ReplyGate()
        self.flusher = Flusher(self.ctx, self.disklog, self.name)
        self.poller = zmq.Poller()
        self.frontend = self._socket(zmq.ROUTER)
        self.frontend.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.frontend.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.frontend.setsockopt(zmq.SNDHWM, 100_000)
        self.frontend.setsockopt(zmq.RCVHWM, 100_000)
        limit_socket(self.frontend, Channel.CLIENTS)
        self.control = self._socket(zmq.ROUTER)
        limit_socket(self.control, Channel.CONTROL)
        self.bind(self.frontend, self.me.client)
        self.bind(self.control, self.me.control)
        self.mirror = Mirror(self)
        try:
            self.heartbeats = Heartbeats(self.ctx, self.cfg, self.me)
        except zmq.ZMQError as exc:
            raise NodeError(f"cannot bind a heartbeat endpoint: {exc.strerror}") from None
        for s in (
            self.frontend,
            self.control,
            self.flusher.notify,
            *self.mirror.sockets(),
            *self.heartbeats.sockets(),
        ):
            self.poller.register(s, zmq.POLLIN)
        (self.data_dir / "node.pid").write_text(f"{os.getpid()}\n")
        self._apply_mode()
        log.info(
            "%s: starting at epoch %d, clients on %s", self.name, self.proc.epoch, self.me.client
        )

    def _save_meta(self, clean_stop: bool = False) -> None:
        # `active`: the last server known to serve was this one. `alone`: and it
        # ran alone (or stopped cleanly), so its log holds every record it
        # acknowledged: it may start as primary on its own. `resync`: it
        # served, so its log may hold records nobody else has. `history`: the
        # terms of its log (see txlog.history). `quarantined`: records it set
        # aside so far.
        fs = self.agent.fs
        alone = fs.may_lead and (
            fs.state in (State.PRIMARY_ONLY, State.BACKUP_ONLY)
            or (clean_stop and fs.role is Role.PRIMARY)
        )
        meta = {
            "epoch": self.proc.epoch,
            "node": self.name,
            "cluster": self.cfg.name,
            "active": fs.may_lead,
            "alone": alone,
            "resync": fs.was_active,
            "history": self.proc.history.to_wire(),
            "quarantined": self.counters["quarantined"],
        }
        write_meta(self.data_dir, meta)

    def _lock(self) -> None:
        path = self.data_dir / "LOCK"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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

    def _socket(self, kind: int) -> zmq.Socket[bytes]:
        s: zmq.Socket[bytes] = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        self._sockets.append(s)
        return s

    def bind(self, sock: zmq.Socket[bytes], endpoint: str) -> None:
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise NodeError(f"cannot bind {endpoint}: {exc.strerror}") from None

    def _apply_mode(self) -> None:
        # Alone, a record's only copy is ours: flush before every acknowledgement.
        # With an in-sync backup holding it, flushing periodically is enough.
        self.policy.set_mode(SYNC if self.alone else PERIODIC)

    # ------------------------------------------------------------------- loop
    @property
    def role(self) -> str:
        return self.agent.fs.role.value

    @property
    def state(self) -> str:
        return self.agent.fs.state.value

    @property
    def active(self) -> bool:
        return self.agent.fs.active

    @property
    def alone(self) -> bool:
        return self.agent.fs.state in (State.PRIMARY_ONLY, State.BACKUP_ONLY)

    def run(self) -> int:
        last = time.monotonic()
        while not self.stopping:
            now = time.monotonic()
            events = dict(self.poller.poll(self._timeout_ms(now)))
            now = self.now = time.monotonic()
            if now - last > self.dead_after / 2:
                # We were not running (SIGSTOP, a long pause): every "silence" we
                # would measure now is our own. Judge nobody until fresh input
                # has had a dead time to arrive.
                self.trust_silence_after = now + self.dead_after
            last = now
            if self.flusher.notify in events:
                self._on_flushed()
            if self.frontend in events:
                self._drain_frontend()
            for sock in events:
                if sock in self.mirror.link_of:
                    self.mirror.on_readable(sock, now)
                elif self.replicator is not None and sock in self.replicator.owner:
                    self.replicator.on_readable(sock, now)
            for link, sub in self.heartbeats.subs.items():
                if sub in events:
                    self.heartbeats.drain(link, now)
            if self.control in events:
                self._drain_control()
            self._tick(now)
        self._shutdown()
        return self.exit_code

    def _timeout_ms(self, now: float) -> int:
        deadline = min(self._next_slow, self.heartbeats.next_beat)
        repl = self.replicator.next_deadline() if self.replicator is not None else None
        for d in (self.policy.next_deadline(now), self.mirror.next_deadline(), repl):
            if d is not None and d < deadline:
                deadline = d
        return max(0, int((deadline - now) * 1000) + 1)

    def _tick(self, now: float) -> None:
        """After every turn of the loop: what commits and replies depend on."""
        self.mirror.answer_pending(now)
        self.apply_held()
        replicator = self.replicator
        if replicator is not None:
            replicator.pump(now)
        if now >= self._next_slow:
            self._slow_tick(now)
        fs = self.agent.fs
        if replicator is not None and fs.role is Role.PRIMARY:
            point = replicator.tracker.commit_point()
            # Alone, what is flushed is committed (also records flushed while we
            # still counted on a backup); otherwise what every in-sync backup holds.
            if point is None:
                self._commit(self.flushed_lsn)
            elif self.alone:
                # No full copy yet, but a backup counts: acknowledge what is both
                # on our disk and held by it (it is catching up on records we
                # acknowledged alone, and must not miss what we add meanwhile).
                self._commit(min(self.flushed_lsn, point))
            else:
                self._commit(point)
        elif fs.role is Role.BACKUP:
            self.committed_lsn = self.held_lsn if fs.state is State.NORMAL else self.flushed_lsn
        if now >= self.heartbeats.next_beat:
            self.heartbeats.beat(now, self._heartbeat_fields())
        self._maybe_flush()

    def _slow_tick(self, now: float) -> None:
        """At most every SLOW_TICK: failure detection, timers, child processes.
        Heartbeats come every 30 ms and the dead time is 150 ms, so a few ms of
        granularity costs nothing, and the request path stays short."""
        self._next_slow = now + SLOW_TICK
        self._reap_snapshot()
        if self.digests.jobs:
            for ident, st in self.digests.finished():
                with contextlib.suppress(zmq.ZMQError):
                    self.control.send_multipart(
                        (ident, ControlReply(True, st, "").encode()), zmq.NOBLOCK
                    )
        for key, when in list(self.heal_at.items()):
            if now >= when:
                kind, _, link = key.rpartition(":")
                if kind == "delay":
                    control.handle(self, "delay", {"link": link, "ms": 0})
                else:
                    control.handle(self, "heal", {"link": link})
        if self.replicator is not None:
            self._mark_lost_backups(now)
        self.agent.tick(now)
        self._apply_mode()

    def _heartbeat_fields(self) -> dict[str, object]:
        fs = self.agent.fs
        in_sync = self.replicator.tracker.full_copies() if self.replicator else []
        handoff_to = ""
        if fs.state is State.HANDOFF and self.replicator is not None:
            peer = self.replicator.tracker.peers.get(fs.handoff_to)
            if peer is not None and peer.held >= self.proc.last_lsn:
                handoff_to = fs.handoff_to  # it holds everything: it may take over now
        return {
            "name": self.name,
            "role": self.role,
            "state": self.state,
            "epoch": self.proc.epoch,
            "last_lsn": self.held_lsn,
            "committed_lsn": self.committed_lsn,
            "flushed_lsn": self.flushed_lsn,
            "in_sync": in_sync,
            "handoff_to": handoff_to,
            "last_epoch": self.held_epoch,
            "history": self.proc.history.to_wire(),
        }

    def _mark_lost_backups(self, now: float) -> None:
        assert self.replicator is not None
        if now < self.trust_silence_after:
            return
        tracker = self.replicator.tracker
        for name in tracker.in_sync():
            view = self.heartbeats.peers[name]
            if tracker.silent_for(name, now) > self.dead_after and view.age(now) > self.dead_after:
                # Proven unavailable on every path: stop waiting for it (step 280).
                log.warning("%s: backup %s silent on every link; running alone", self.name, name)
                tracker.mark_lost(name)

    def stop(self) -> None:
        self.stopping = True

    def _drain_frontend(self) -> None:
        fe = self.frontend
        n_req = 0
        now = self.now
        budget = READ_BUDGET
        for _ in range(MAX_BATCH):
            if budget <= 0:
                break  # the rest waits for the next turn: heartbeats go out meanwhile
            try:
                ident = fe.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            # Two frames from a DEALER client: [identity, payload]. Read them one
            # by one (cheaper than recv_multipart on the hot path); anything
            # longer is drained and counted.
            two = bool(fe.getsockopt(zmq.RCVMORE))
            payload = fe.recv(zmq.NOBLOCK) if two else b""
            budget -= len(payload)
            extra = False
            while fe.getsockopt(zmq.RCVMORE):
                fe.recv(zmq.NOBLOCK)
                extra = True
            if "clients" in self.cut_links:
                continue
            if extra or not two:
                self.counters["bad_frames"] += 1  # no reply: the framing is unknown
                continue
            self.counters["requests"] += 1
            if ident in self.clients or len(self.clients) < 100_000:
                self.clients[ident] = now
            try:
                msg = decode_request(payload)
            except ProtocolError as exc:
                self.counters["bad_frames"] += 1
                self._send(ident, self._error_reply(0, "bad_frame", str(exc)))
                continue
            if isinstance(msg, Request):
                self._on_request(ident, msg)
                n_req += 1
                if self.replicator is not None and n_req % PUSH_EVERY == 0:
                    # Let the backup start on this part of the batch while we
                    # process the rest: primary, backup and client overlap.
                    self.replicator.pump(time.monotonic())
            elif isinstance(msg, Register):
                self._on_register(ident, msg)
            elif isinstance(msg, Hello):
                if not self.active and msg.lost and msg.lost != self.name:
                    self._on_vote(ident, msg)
                self._send(ident, Welcome(self.name, self.proc.epoch, self.active).encode())
            else:
                self.counters["bad_frames"] += 1
                self._send(ident, self._error_reply(0, "unexpected", f"{msg.TYPE} not expected"))

    def _on_vote(self, ident: bytes, hello: Hello) -> None:
        """A client says it lost its server (the Binary Star vote). It is
        evidence, never a command (the machine weighs it only while the primary
        is silent on every path), and it counts only from a client the lost
        primary served: its connection is its own (routing id = client id) and
        its writes are in the replicated tables. Random frames are not votes."""
        fs = self.agent.fs
        lost_ok = hello.lost == fs.primary if fs.primary else hello.lost in self.agent.peer_names
        if (
            ident == hello.client_id.encode()
            and lost_ok
            and self.proc.knows_client(hello.client_id)
        ):
            self.counters["votes"] += 1
            self.agent.vote()
        else:
            self.counters["votes_refused"] += 1

    def _error_reply(self, msg_id: int, code: str, message: str) -> bytes:
        result = {"code": code, "message": message}
        return encode_reply(msg_id, STATUS_ERROR, result, self.proc.epoch, self.name)

    def _on_request(self, ident: bytes, req: Request) -> None:
        if self._refused(ident, req.msg_id):
            return
        self._take(ident, self.proc.submit(req.client_id, req.msg_id, req.body, req.session))

    def _on_register(self, ident: bytes, reg: Register) -> None:
        if not self._refused(ident, 0):
            self._take(ident, self.proc.register(reg.client_id, reg.nonce))

    def _refused(self, ident: bytes, msg_id: int) -> bool:
        """Only the active server takes requests; the others say so."""
        if self.active:
            return False
        result = {"code": "not_active", "message": f"{self.name} is {self.role}/{self.state}"}
        self._send(
            ident, encode_reply(msg_id, STATUS_NOT_ACTIVE, result, self.proc.epoch, self.name)
        )
        return True

    def _take(self, ident: bytes, out: Processed) -> None:
        """Log what the request wrote; answer now or once that is committed."""
        if out.record is not None:
            self.held_epoch = self.proc.epoch
            self.disklog.append(out.gate_lsn, out.record)
            self.memlog.append(out.gate_lsn, out.record)
        if out.gate_lsn <= self.committed_lsn:
            self._send(ident, out.reply)
        else:
            self.gate.hold(out.gate_lsn, ident, out.reply)

    def _send(self, ident: bytes, data: bytes) -> None:
        if "clients" in self.cut_links:
            self.counters["undeliverable"] += 1  # the channel is cut both ways
            return
        fe = self.frontend
        try:
            fe.send(ident, zmq.NOBLOCK | zmq.SNDMORE)
            fe.send(data, zmq.NOBLOCK)
            self.counters["replies"] += 1
        except zmq.ZMQError:
            # Client gone or its queue full: it will time out and resend, and the
            # dedup table answers the resend from the stored reply.
            self.counters["undeliverable"] += 1

    # ------------------------------------------------------ backup: following
    def accept_primary(self, sender: str, epoch: int) -> str:
        """May records and commits from `sender` at `epoch` be taken? Returns
        "ok", "fenced" (the sender is stale) or "wait" (we do not follow it)."""
        fs = self.agent.fs
        if sender not in self.agent.peer_names:
            # Only a configured server may replicate to us; anything else (at
            # any epoch) is a stray frame, never a reason to change state.
            return "stranger"
        if epoch < fs.epoch:
            return "fenced"
        if epoch > fs.epoch:
            self.agent.higher_epoch(epoch, sender, time.monotonic())
            return "wait"
        if (
            fs.role is Role.BACKUP
            and fs.primary == sender
            and fs.state
            in (
                State.SYNCING,
                State.NORMAL,
            )
        ):
            return "ok"
        return "wait"

    def on_higher_epoch(self, epoch: int, sender: str) -> None:
        self.agent.higher_epoch(epoch, sender, time.monotonic())

    def carry_out(self, action: Action) -> None:
        """Do what the failover state machine decided."""
        fs = self.agent.fs
        if action is Action.BECOME_PRIMARY:
            self._lead(fs.epoch)
        elif action is Action.TAKE_OVER:
            # Method 425a: stop mirroring (426), flush (427), apply outstanding
            # records (428), then serve at the new epoch; the signal (429) follows.
            self.mirror.primary = ""
            self.apply_held()
            self.flush_now()
            self._lead(fs.epoch)
            self.counters["takeovers"] = self.counters.get("takeovers", 0) + 1
        elif action is Action.RECOVERY_SIGNAL:
            signal = RecoverySignal(self.name, fs.epoch).encode()
            for ident in list(self.clients):
                self._send(ident, signal)
        elif action is Action.STEP_DOWN:
            dropped = self.gate.drop_all()  # never acknowledge after a takeover
            self.acked_lsn = self.committed_lsn
            log.warning(
                "%s: stepped down at epoch %d; %d held replies dropped",
                self.name,
                fs.epoch,
                dropped,
            )
            self._stop_replicator()
            self.proc.epoch = fs.epoch
        elif action is Action.FLUSH:
            self.flush_now()
        elif action is Action.FOLLOW:
            self._follow(fs.primary)
            self.proc.epoch = fs.epoch
        elif action is Action.STOP:
            self.stop()
        self._apply_mode()

    def _lead(self, epoch: int) -> None:
        """Open a term of our own (txlog.history): every record we write from
        here on is told apart from any other server's at the same LSN."""
        self.proc.epoch = epoch
        self.proc.history.open_term(epoch, self.name, self.proc.last_lsn + 1, new_term_id())
        self.acked_lsn = None
        self._save_meta()  # durable before the first record of the term
        self._start_replicator()

    def _follow(self, primary: str) -> None:
        """Before mirroring a primary, keep only the part of our log that its
        history shares; whatever else we hold no other server has, and is set
        aside (the audit's erased-history cases came from following without
        this check, or from throwing everything away)."""
        view = self.heartbeats.peers.get(primary)
        hb = view.last if view is not None else None
        if hb is None:
            return
        theirs = view.history if view is not None else EpochHistory()
        self.apply_held()
        mine = self.held_lsn
        keep = common_prefix(self.proc.history, mine, theirs, hb.last_lsn)
        if keep < mine:
            self.diverge_to(keep, f"diverged from {primary}")
        self.mirror.primary = primary

    def _start_replicator(self) -> None:
        if self.replicator is None:
            self.replicator = Replicator(self, self.cfg.peers(self.name))
            self.agent.last_in_sync = None

    def _stop_replicator(self) -> None:
        if self.replicator is not None:
            for s in self.replicator.sockets():
                self.poller.unregister(s)
            self.replicator.close()
            self.replicator = None

    # ------------------------------------------------------------ status/control
    def lag(self) -> int | None:
        if self.replicator is not None:
            return self.replicator.tracker.lag(self.proc.last_lsn)
        view = self.heartbeats.peers.get(self.mirror.primary)
        if view is None or view.last is None:
            return None
        return max(0, view.last.last_lsn - self.proc.last_lsn)

    def replication_link(self) -> str | None:
        if self.replicator is not None:
            return self.replicator.tracker.carrying_link()
        return self.mirror.link or None

    def status(self, digest: bool = False) -> dict[str, Any]:
        return control.status(self, digest)

    def _drain_control(self) -> None:
        for _ in range(64):
            try:
                frames = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                continue
            ident, payload = frames
            try:
                req = decode(payload)
                if not isinstance(req, ControlRequest):
                    raise ProtocolError(f"expected a control request, got {req.TYPE}")
                digest = req.args.get("digest", False)
                if req.command == "status" and not isinstance(digest, bool):
                    raise ProtocolError(f"'digest' must be true or false, got {digest!r:.40}")
                if (
                    req.command == "status"
                    and digest
                    and not self.digests.small(self.proc)
                    and len(self.digests.jobs) < 4  # never a fork storm
                ):
                    # Answered when the forked child has hashed the tables.
                    self.digests.start(self.proc, ident, control.status(self, False))
                    continue
                reply = ControlReply(True, control.handle(self, req.command, req.args), "")
            except ProtocolError as exc:
                reply = ControlReply(False, {}, str(exc))
            with contextlib.suppress(zmq.ZMQError):
                self.control.send_multipart((ident, reply.encode()), zmq.NOBLOCK)

    # --------------------------------------------------------------- shutdown
    def _shutdown(self) -> None:
        """Clean stop: make everything processed durable and answer it, then close."""
        if self.exit_code == 0:
            self._wait_flusher_idle()
            batch = self.disklog.take()
            if batch is not None and self.exit_code == 0:
                self.disklog.write(batch, sync=True)
                self.flushed_lsn = batch.last_lsn
            if self.alone:
                self._commit(self.flushed_lsn)
            # Everything we acknowledged is on our disk now: as after running
            # alone, we may lead again on our own after a restart.
            self._save_meta(clean_stop=True)
        if self.snapshot_child is not None:
            os.waitpid(self.snapshot_child[0], 0)  # let it finish its atomic write
            self.snapshot_child = None
        self.digests.close()
        self.flusher.close()
        self.disklog.close()
        for closer in (self.mirror.close, self.heartbeats.close):
            closer()
        if self.replicator is not None:
            self.replicator.close()
        for s in self._sockets:
            s.close(linger=0)
        with contextlib.suppress(OSError):
            (self.data_dir / "node.pid").unlink()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        log.info(
            "%s: stopped at lsn %d (flushed %d)", self.name, self.proc.last_lsn, self.flushed_lsn
        )
