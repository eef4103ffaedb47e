"""NodeCore: one zmqfail server's decisions, fed by a shell.

The shell calls, in each turn of its loop: `begin_turn(now)`; then one `on_*`
per batch of frames that arrived (clients, records, commits, acks,
heartbeats) and per completion (a flush, a snapshot, a table image); then
`end_turn(now)`, which runs replication, timers, failure detection, commits
and flushes. It then sends what the `out` box holds, calls `after_send()`
(a backup applies what it confirmed) and sleeps at most until
`next_deadline(now)` (now, while requests of a large batch wait for the
next turns' budgets), reading client frames only when `takes_clients`.
Every clock reading comes in as `now`: a test or the simulator drives the
same code with a fake clock.

The parts, each with only what it needs: `NodeLog` owns the LSNs and the
tables; `Frontend` serves clients; `Follower` mirrors a primary; `Leader`
replicates to backups; `CheckpointAgent` flushes and snapshots;
`FailoverAgent` runs the state machine (and judges client votes);
`PeerIntake` turns peers' heartbeats and probe answers into observations;
`PeerTable`, `Prober` and `PauseGuard` detect failures; `LocalStore` rewrites
the local log when histories part. The epoch's one owner is the state machine
(`self.epoch`).
"""

from __future__ import annotations

import logging
import random
from typing import Any

from zmqfail.config import ClusterConfig
from zmqfail.core.agent import FailoverAgent
from zmqfail.core.beats import Beats
from zmqfail.core.cadence import SLOW_TICK, Periodic
from zmqfail.core.checkpoint import CheckpointAgent
from zmqfail.core.follower import Follower
from zmqfail.core.frontend import Frontend
from zmqfail.core.intake import PeerIntake
from zmqfail.core.journal import Journal
from zmqfail.core.leader import Leader
from zmqfail.core.local import LocalStore, meta_record
from zmqfail.core.log import NodeLog
from zmqfail.core.operator import Operator
from zmqfail.core.peers import PauseGuard, PeerTable, PeerView, Prober
from zmqfail.core.ports import Disk, Loaded, Outbox
from zmqfail.core.status import NodeStatus, build_status
from zmqfail.core.witness import WitnessClient
from zmqfail.errors import ProtocolError
from zmqfail.failover.state import Action, HigherEpoch, Role, State
from zmqfail.processor import Processor
from zmqfail.protocol import Goodbye
from zmqfail.replication import LINKS, RENEWAL_BITS
from zmqfail.txlog.history import EpochHistory, rival

log = logging.getLogger("zmqfail.node")
RENEWAL_MASK = (1 << RENEWAL_BITS) - 1


class NodeCore:
    def __init__(
        self,
        cfg: ClusterConfig,
        name: str,
        disk: Disk,
        loaded: Loaded,
        meta: dict[str, Any],
        now: float,
        wall_offset: float = 0.0,
        rng: random.Random | None = None,
        tick: float = SLOW_TICK,
    ) -> None:
        self.cfg = cfg
        self.name = name
        self.disk = disk
        self.out = Outbox()
        self.rng = rng or random.Random()
        self.wall_offset = wall_offset  # time of day = now + offset (for the record)
        self.now = now
        self.started = now
        fo = cfg.failover
        self.dead_after = fo.heartbeat_interval_ms * fo.heartbeat_misses / 1000.0
        self.beat_interval = fo.heartbeat_interval_ms / 1000.0
        self.peer_names = tuple(p.name for p in cfg.peers(name))
        # A random nonce of this process, its renewals counted below it
        # (replication.RENEWAL_BITS): a peer orders two of ours.
        self.incarnation = self.rng.getrandbits(32) << RENEWAL_BITS
        self.exit_code = 0
        self.stopping = False
        self.acked_lsn: int | None = None  # highest LSN we acknowledged as primary
        self.takeovers = 0
        self.ticks = Periodic(tick, now)  # failure detection and timers
        self.beats = Periodic(self.beat_interval, now)
        self.beat_frames = Beats(name)
        self.nlog = NodeLog(loaded.proc, loaded.snapshot_lsn, cfg.flush)
        self.peers = PeerTable(self.peer_names, self.dead_after)
        self.guard = PauseGuard(self.dead_after)
        self.prober = Prober(self.peer_names, self.dead_after, self.beat_interval)
        self.journal = Journal(name, disk, self.wall, lambda: self.agent.fs)
        if loaded.cuts:
            # Its history is in doubt: it must follow a primary before it leads.
            meta = dict(meta, active=False, alone=False)
        self.agent = FailoverAgent(
            name,
            self.peer_names,
            max(loaded.proc.epoch, 1),
            meta,
            cfg.primary,
            self.dead_after,
            now,
            self.carry_out,
            self.save_meta,
            lambda: (self.nlog.held, self.nlog.held_epoch),
            self.journal,
            self._last_heard,
            witness=cfg.witness is not None,
            history=lambda: self.nlog.proc.history,
            incarnation=lambda: self.incarnation,
        )
        self.intake = PeerIntake(
            self.peers, self.prober, lambda: self.epoch, self.agent.higher_epoch, self._peer_gen
        )
        self._beat_gen = 0  # the leader's generation our last heartbeat carried
        prior = meta.get("quarantined", 0)
        self.store = LocalStore(
            name,
            self.nlog,
            disk,
            self.meta,
            lambda epoch, lsn, state: Processor.create(cfg, name, epoch, lsn, state),
            prior if isinstance(prior, int) else 0,
            self.journal,
        )
        for cut in loaded.cuts:
            self.store.note_cut(cut, "does not apply", None)
        self.witness = (
            WitnessClient(name, cfg.witness.lease_ms / 1000.0) if cfg.witness is not None else None
        )
        self.frontend = Frontend(
            name,
            self.nlog,
            self.out,
            lambda: self.agent.fs.active,
            lambda: self.epoch,
            lambda: f"{self.agent.fs.role.value}/{self.agent.fs.state.value}",
            lambda ident, hello: self.agent.vote(ident, hello, self.nlog.proc.knows_client),
            self._probe_gen,
        )
        self.follower = Follower(
            name,
            self.nlog,
            self.peers,
            self.out,
            lambda sender, epoch: self.agent.accept(sender, epoch, self.now),
            lambda: (self.epoch, self.incarnation),
            self._install,
            self.save_meta,
        )
        self.leader: Leader | None = None
        self.checkpoint = CheckpointAgent(
            name, self.nlog, disk, lambda: self.alone, self._release_alone
        )
        self.checkpoint.apply_mode()
        # What an operator may ask of its failover (the control socket's commands).
        self.operator = Operator(name, self.agent, self.peers, self.dead_after, disk)
        self.save_meta()
        # A restart shows in the history: a start without a clean stop before
        # it means the process died (kill -9, a crash, power).
        self.journal.note("started", lsn=self.nlog.held, paused=self.agent.fs.paused)

    # ------------------------------------------------------------ the facts
    @property
    def epoch(self) -> int:
        return self.agent.fs.epoch

    @property
    def alone(self) -> bool:
        return self.agent.fs.state in (State.PRIMARY_ONLY, State.BACKUP_ONLY)

    def _lease_holds(self, now: float) -> bool:
        """Running alone with a witness, replies wait for its valid lease."""
        w = self.witness
        return not self.alone or w is None or w.valid(self.agent.fs.epoch, now)

    def _release_alone(self, lsn: int) -> None:
        """What a completed flush alone releases: only under the lease."""
        if self._lease_holds(self.now):
            point = self.leader.commit_point() if self.leader is not None else None
            # A dropped backup that may still count itself in sync holds the
            # replies to what it holds (replication.py, "leaving").
            self.frontend.commit(lsn if point is None else min(lsn, point))

    def _peer_gen(self, peer: str, epoch: int, gen: int) -> None:
        """A peer's answer to our probe named an in-sync generation: as a
        primary, the one our dropped backup holds itself to; as a backup, the
        one our primary gives us."""
        if self.leader is not None:
            if epoch == self.epoch:
                self.leader.confirm(peer, gen)
        elif gen:
            self.agent.note_gen(peer, epoch, gen)

    def _probe_gen(self, asker: str) -> int:
        """What our answer to `asker`'s probe says of the generation between us."""
        if self.leader is not None:
            return self.leader.gen_of(asker)
        primary, gen = self.agent.held_gen()
        return gen if primary == asker else 0

    def wall(self) -> float:
        return self.now + self.wall_offset

    def _last_heard(self, peer: str) -> float | None:
        """When `peer` last gave a sign of life on any path (heartbeats, or
        replication from the primary we follow): the start of an outage."""
        followed = self.follower.last_heard if peer == self.follower.primary else 0.0
        return max(self.peers.last_heard(peer), followed) or None

    # --------------------------------------------------------------- inputs
    def begin_turn(self, now: float) -> None:
        self.now = now
        pauses = self.guard.pauses
        self.guard.turn(now)
        if self.guard.pauses != pauses:
            # Our loop stood still: a primary may have judged us gone and
            # acknowledged alone. Before anything is answered this turn, we
            # are another process to it, and no listing of the one before
            # (some may wait in our sockets) makes us NORMAL.
            self._renew()
        self.frontend.new_turn()
        self.follower.new_turn()

    @property
    def takes_clients(self) -> bool:
        """Whether the shell should read client frames this turn: not while
        requests of earlier frames still wait (their clients' windows bound
        them; the socket's queue bounds the rest)."""
        return not self.frontend.backlogged

    def on_client(self, frames: list[tuple[bytes, bytes]], now: float) -> None:
        self.frontend.on_frames(frames, now)

    def on_records(self, link: str, frames: list[bytes], now: float, more: bool = False) -> None:
        self.follower.on_records(link, frames, now, more)

    def on_commit(self, link: str, parts: list[bytes], now: float) -> None:
        self.follower.on_commit(link, parts, now)

    def on_ack(self, peer: str, link: str, parts: list[bytes], now: float) -> None:
        if self.leader is None:
            return  # an answer to a replicator that is gone
        bad = self.leader.bad_acks
        ack = self.leader.on_ack(peer, link, parts, now)
        if self.leader.bad_acks == bad:
            self.intake.on_ack(peer)
        if ack is not None:
            self.agent.higher_epoch(ack.epoch, ack.sender, now)

    def hears_beats(self, now: float) -> bool:
        """Read the peers' heartbeats this turn? Only when the failure detector,
        their one reader, runs: a beat waits in its socket at most a tick (the
        detector's granularity anyway) instead of waking the loop for nothing."""
        return self.ticks.is_due(now)

    def on_heartbeats(self, link: str, frames: list[bytes], now: float) -> None:
        self.intake.on_heartbeats(link, frames, now)

    def on_probe_reply(self, peer: str, frames: list[bytes], now: float) -> None:
        self.intake.on_probe_reply(peer, frames, now)

    def on_witness(self, frames: list[bytes], now: float) -> None:
        """The witness's answers: a grant to lead, a lease, or a newer epoch."""
        if self.witness is None:
            return
        for data in frames:
            event = self.witness.on_answer(data, self.agent.fs, now)
            if isinstance(event, HigherEpoch):
                log.warning(
                    "%s: the witness says %s leads at epoch %d (%s)",
                    self.name,
                    event.peer,
                    event.epoch,
                    self.witness.last_refusal,
                )
                self.agent.higher_epoch(event.epoch, event.peer, now)
            elif event is not None:
                self.agent.feed(event, now)

    def on_flushed(self, lsn: int, now: float) -> None:
        self.checkpoint.on_flushed(lsn, now)

    def on_flush_failed(self, error: str) -> None:
        log.critical("%s: %s; stopping without acknowledging more", self.name, error)
        if self.exit_code == 0:
            self.journal.note("stopped: the log could not be written", error=error)
        self.exit_code = 3
        self.frontend.gate.drop_all()
        self.stopping = True

    def on_snapshot_done(self, lsn: int, ok: bool) -> None:
        self.checkpoint.on_snapshot_done(lsn, ok, self.now)

    def on_transfer_ready(self, key: int, state: bytes | None) -> None:
        if self.leader is not None:
            self.leader.on_transfer_ready(key, state)

    def push_failed(self, peer: str) -> None:
        if self.leader is not None:
            self.leader.push_failed(peer)

    # ------------------------------------------------------------ each turn
    def end_turn(self, now: float) -> None:
        """After every turn of the loop: what commits and replies depend on."""
        self.now = now
        self.frontend.work(now)  # requests still waiting, within the turn's budget
        self.follower.answer_pending(now)
        if self.leader is not None:
            self.leader.pump(now)
        if self.ticks.due(now):
            self._slow_tick(now)
        fs = self.agent.fs
        if not self._lease_holds(now):
            pass  # running alone needs the witness's lease: the replies wait
        elif self.leader is not None and fs.role is Role.PRIMARY:
            self.frontend.commit(self._ack_point(self.leader.commit_point()))
        elif fs.role is Role.BACKUP:
            nlog = self.nlog
            nlog.committed = nlog.held if fs.state is State.NORMAL else nlog.flushed
        if self._beat_due(now):
            held = self.agent.held_gen()
            frames = self.beat_frames.frames(fs, self.nlog, self.leader, held, self.incarnation)
            self.out.beat.extend(frames)
        self.checkpoint.due(now)

    def _beat_due(self, now: float) -> bool:
        """On the heartbeat grid, and at once when a new in-sync generation
        (a backup admitted or dropped) is to be told: a dropped backup learns
        it with the least delay, and a stalled one finds it waiting."""
        gen = self.leader.tracker.gen if self.leader is not None else 0
        due = self.beats.due(now)
        if gen == self._beat_gen:
            return due
        self._beat_gen = gen
        return True

    def after_send(self) -> None:
        """After the shell sent what the turn decided: keep a backup's tables
        warm with the records it holds. Step 253 acknowledges a record once it
        is held; applying it before the answer left would put the tables'
        work on every commit's round trip (and the primary's replies behind
        it). Whatever needs the tables current first (a takeover, a snapshot
        install, a cut of the log) applies them itself."""
        self._apply_held()

    def _ack_point(self, point: int | None) -> int:
        """The last LSN the primary may acknowledge, given the backups' commit
        point (None: no backup to wait for)."""
        flushed = self.nlog.flushed
        if point is None:
            return flushed
        if self.alone or self.nlog.on_disk:
            # Alone with a backup catching up (it must not miss what we add
            # meanwhile), or durability "disk": acknowledge what is both on
            # our disk and confirmed by the backup.
            return min(flushed, point)
        return point

    def _slow_tick(self, now: float) -> None:
        """Every SLOW_TICK on average: failure detection and timers. Heartbeats come
        every 30 ms and the dead time is 150 ms, so a few ms of granularity
        costs nothing, and the request path stays short."""
        leader = self.leader
        prober = self.prober
        ages = {p: self.peers.age(p, now) for p in self.peer_names}
        repl_age = now - self.follower.last_heard if self.follower.last_heard else float("inf")
        for peer, age in ages.items():
            quiet = age if peer != self.agent.fs.primary else min(age, repl_age)
            if prober.due(peer, quiet, now):
                self.out.probe.append(peer)
        if leader is not None and self.guard.trusted(now):
            verdict = prober.verdict
            for peer in leader.tracker.leaving():
                hb = self.peers.last(peer)
                if hb is None:
                    continue
                leader.renewed(peer, hb.incarnation)
                if hb.epoch == self.epoch and hb.gen_of == self.name:
                    leader.confirm(peer, hb.gen)
            leader.mark_lost_silent(
                now,
                self.dead_after,
                ages,
                lambda p: verdict(p, now),
                self.intake.said_bye,
                lambda p: prober.unanswered(p, now),
            )
        full = leader.full_copies() if leader is not None else None
        self.agent.tick(now, self.peers, self.guard, self.follower.last_heard, full, prober)
        if self.witness is not None:
            self.out.witness.extend(self.witness.tick(self.agent.fs, now))
        self.checkpoint.apply_mode()

    def next_deadline(self, now: float) -> float:
        if self.frontend.backlogged:
            return now  # requests wait: turn again at once
        deadline = min(self.ticks.next, self.beats.next)
        for d in (self.nlog.flush_deadline(now), self.follower.next_deadline()):
            if d is not None and d < deadline:
                deadline = d
        return deadline

    def _apply_held(self) -> None:
        failed = self.nlog.apply_held()
        if failed is not None:
            lsn, exc = failed
            # A mirrored record does not apply: our tables are not the primary's
            # (a history mixed before terms existed, or a bug). Never die of it:
            # set it and what follows aside, rebuild, and let the primary resend.
            log.critical(
                "%s: mirrored record %d does not apply to the tables (%s: %s); rebuilding "
                "from the log before it",
                self.name,
                lsn,
                type(exc).__name__,
                exc,
            )
            self.store.cut_to(lsn - 1, "does not apply", self.acked_lsn)
            self._renew()
            self.save_meta()

    def _renew(self) -> None:
        """A new incarnation: commit answers of it are not late answers of the
        one before, and no primary's listing of the one before counts (the
        failover agent leaves NORMAL: Unlisted)."""
        count = (self.incarnation & RENEWAL_MASK) + 1
        if count > RENEWAL_MASK:  # 4 billion renewals: never, in practice
            self.incarnation = self.rng.getrandbits(32) << RENEWAL_BITS
        else:
            self.incarnation = self.incarnation & ~RENEWAL_MASK | count
        self.agent.renewed()

    def flush_now(self) -> None:
        self.checkpoint.flush_now(self.now)

    # --------------------------------------------------- the state machine
    def carry_out(self, action: Action) -> None:
        """Do what the failover state machine decided."""
        fs = self.agent.fs
        if action is Action.BECOME_PRIMARY:
            self._lead(fs.epoch)
        elif action is Action.TAKE_OVER:
            # Method 425a: stop mirroring (426), flush (427), apply outstanding
            # records (428), then serve at the new epoch; the signal (429) follows.
            self.follower.forget()
            self._apply_held()
            self.flush_now()
            self._lead(fs.epoch)
            self.takeovers += 1
        elif action is Action.RECOVERY_SIGNAL:
            self.frontend.recovery_signal(fs.epoch)
        elif action is Action.STEP_DOWN:
            dropped = self.frontend.gate.drop_all()  # never acknowledge after a takeover
            self.acked_lsn = self.nlog.committed
            # A term we opened and wrote nothing in holds no record, but our
            # recovery signal may have announced it: it stays known (txlog.history).
            self.nlog.proc.history.cut_keeping_announced(self.nlog.held)
            log.warning(
                "%s: stepped down at epoch %d; %d held replies dropped",
                self.name,
                fs.epoch,
                dropped,
            )
            self.leader = None
        elif action is Action.FLUSH:
            self.flush_now()
        elif action is Action.FOLLOW:
            self._follow(fs.primary)
        elif action is Action.STOP:
            self.stopping = True
        self.checkpoint.apply_mode()

    def _lead(self, epoch: int) -> None:
        """Open a term of our own (txlog.history): every record we write from
        here on is told apart from any other server's at the same LSN."""
        self._set_aside_superseded()
        nlog = self.nlog
        nlog.proc.epoch = epoch  # records and replies carry it
        nlog.proc.history.open_term(epoch, self.name, nlog.held + 1, self.rng.getrandbits(48))
        self.acked_lsn = None
        self.save_meta()  # durable before the first record of the term
        fo = self.cfg.failover
        self.leader = Leader(
            self.name,
            self.peer_names,
            nlog,
            self.out,
            self.disk,
            epoch,
            ack_timeout=fo.link_timeout_ms / 1000.0,
            keepalive=fo.heartbeat_interval_ms / 1000.0,
        )
        self.agent.started_replicating()

    def _set_aside_superseded(self) -> None:
        """Before leading: a peer's newer term, or a rival of one of ours, began
        on a log without our part beyond the common prefix, which its recovery
        signal may have told clients is lost: we set that aside too."""
        history = self.nlog.proc.history
        newer = self.peers.newer_term(history.last.epoch if history.last else 0)
        if newer is not None:
            name, epoch, view = newer
            self._keep_shared(view, f"superseded by {name}'s epoch {epoch}")
        for name, view in self.peers.views.items():
            if (clash := rival(history, view.history)) is not None:
                self._keep_shared(view, f"{name} holds another epoch {clash.epoch}")

    def _follow(self, primary: str) -> None:
        """Before mirroring a primary, keep only the part of our log its history
        shares; whatever else we hold no other server has, and is set aside
        (the audit's erased-history cases came from following without this
        check, or from throwing everything away)."""
        self.nlog.proc.history.cut(self.nlog.held)
        view = self.peers.views.get(primary)
        if view is not None:
            self._keep_shared(view, f"diverged from {primary}")
        self.follower.primary = primary

    def _keep_shared(self, view: PeerView, why: str) -> None:
        if view.last is None:
            return
        self._apply_held()
        if self.store.keep_common_prefix(view.history, view.last.last_lsn, why, self.acked_lsn):
            self._renew()  # held went down

    def _install(self, lsn: int, epoch: int, state: dict[str, Any], history: EpochHistory) -> None:
        self._apply_held()
        try:
            self.store.install(lsn, epoch, state, history, self.name, self.acked_lsn)
        except (ProtocolError, ValueError, KeyError, TypeError) as exc:
            self.follower.bad_frames += 1
            log.warning("%s: refused a snapshot: %s", self.name, exc)
            return
        self._renew()  # held changed: not a late answer
        self.save_meta()

    # ------------------------------------------------------------- meta
    def meta(self, clean_stop: bool = False) -> dict[str, Any]:
        history = self.nlog.proc.history
        fs, quarantined = self.agent.fs, self.store.quarantined
        return meta_record(fs, self.name, self.cfg.name, history, quarantined, clean_stop)

    def save_meta(self) -> None:
        self.disk.write_meta(self.meta())

    def shutdown(self) -> None:
        """Clean stop: make everything processed durable and answer it."""
        if self.exit_code != 0:
            return
        self.flush_now()
        # Everything we acknowledged is on our disk now: as after running
        # alone, we may lead again on our own after a restart.
        self.disk.write_meta(self.meta(clean_stop=True))
        self.journal.note("stopped cleanly", lsn=self.nlog.held)
        bye = Goodbye(self.name, self.agent.fs.epoch).encode()
        self.out.beat.extend((link, bye) for link in LINKS)  # peers log a stop, not a silence

    def status(self, now: float) -> NodeStatus:
        return build_status(self, now)
