"""The failover agent: observations in, state machine actions out.

It turns what the node saw (heartbeats, silence on every path, client votes,
replication progress, higher epochs) into events for the pure state machine
in ``zmqfail.failover`` and hands the actions to the callback it was given.
It gets only what it uses: the peer table, the pause guard, a way to read our
own log position, and two callbacks (carry out an action, save the meta).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from zmqfail.core.follower import FENCED, OK, STRANGER, WAIT
from zmqfail.core.journal import Journal, StateChange
from zmqfail.core.peers import PauseGuard, PeerTable, Prober, Verdict
from zmqfail.failover.machine import TRANSITIONS, step
from zmqfail.failover.state import (
    Action,
    BackupsInSync,
    ClientVote,
    Event,
    FailoverState,
    HandoffTimeout,
    HigherEpoch,
    IllegalTransition,
    Pause,
    PeerActive,
    PeerCandidate,
    PeerGrant,
    PeerProgress,
    PeerSilent,
    PrimaryGone,
    PrimaryReachable,
    Promote,
    Resume,
    Role,
    StartupDone,
    State,
    Unlisted,
    WitnessElected,
    initial,
)
from zmqfail.protocol import Heartbeat, Hello
from zmqfail.txlog.history import EpochHistory, Term, rival

log = logging.getLogger("zmqfail.failover")

# Heartbeat states of a server that serves clients (or is handing over).
SERVING = frozenset({State.NORMAL, State.PRIMARY_ONLY, State.BACKUP_ONLY, State.HANDOFF})
HANDOFF_TIMEOUT = 3.0  # seconds a switchover may take before it is called off


class FailoverAgent:
    def __init__(
        self,
        name: str,
        peers: tuple[str, ...],
        epoch: int,
        meta: dict[str, Any],
        preferred: str,
        dead_after: float,
        now: float,
        carry_out: Callable[[Action], None],
        save_meta: Callable[[], None],
        position: Callable[[], tuple[int, int]],
        journal: Journal,
        last_heard: Callable[[str], float | None],
        witness: bool = False,
        history: Callable[[], EpochHistory] = EpochHistory,
        incarnation: Callable[[], int] = lambda: 0,
    ) -> None:
        self.name = name
        self.journal = journal  # the failover history (memory and data dir)
        self._last_heard = last_heard  # when a peer was last heard on any path
        self.history = history  # our log's terms: a peer's rival of one is never followed
        self.peer_names = peers
        fresh = "active" not in meta
        self.fs: FailoverState = initial(
            name,
            peers,
            epoch,
            preferred=fresh and name == preferred,
            was_active=bool(meta.get("resync", False)),
            may_lead=bool(meta.get("active", False)),
            now=now,
            vote_window=2 * dead_after,  # failing-over clients probe every 50 ms
            lead_alone=bool(meta.get("alone", False)),
            witness=witness,
            paused=bool(meta.get("paused", False)),
            first=preferred,
        )
        self.dead_after = dead_after
        self.startup_window = 2 * dead_after
        self._carry_out = carry_out
        self._save_meta = save_meta
        self._position = position  # (held lsn, epoch of the record there)
        self.vote_pending = False
        self.silent: set[str] = set()
        self.judged: dict[str, Verdict] = {}  # step 420's verdict, fed once per silence
        self._watching = ""  # the primary whose silence we judge
        self.seen: dict[str, int] = {}  # per peer, the PeerView.count last looked at
        self.clashes: set[tuple[str, Term]] = set()  # rival terms reported
        # What we last told the machine of each peer's progress (epoch, lsn,
        # live, serving): sent again whenever any of it changes.
        self.progress: dict[str, tuple[int, int, bool, bool]] = {}
        self.last_in_sync: tuple[str, ...] | None = None
        # In-sync generations (docs/reliability.md): the primary and epoch we
        # track them for, the newest it told us of ourselves, and the one our
        # NORMAL stands on. `incarnation`: our process's, as our acks name it.
        self._incarnation = incarnation
        self.gen_from: tuple[str, int] = ("", 0)
        self.gen_seen = 0
        self.gen_normal = 0
        self.refused = 0
        self._renewed = False  # our incarnation changed: Unlisted before any other event
        self._told_held_start = False  # logged once: start-up waits for a resume
        if self.fs.paused:
            log.warning(
                "%s: automatic failover is paused (kept in its meta); `zmqfail resume` ends it",
                name,
            )

    # ------------------------------------------------------------- feeding
    def renewed(self) -> None:
        """Our incarnation changed: the next event (or tick) is preceded by
        Unlisted. Not fed here: the change may happen while an event is being
        carried out (a FOLLOW that cuts our log)."""
        self._renewed = True

    def _unlist(self, now: float) -> None:
        if not self._renewed:
            return
        self._renewed = False
        before = self.fs.state
        self.feed(Unlisted(), now)
        if self.fs.state is not before:
            # A silence judged before is void in the new state: it is fed
            # again (else a backup this made syncing would wait forever for a
            # primary that had failed: unsafe seed 604432, "disk").
            self.silent.clear()
            self.judged.clear()

    def feed(self, event: Event, now: float) -> None:
        if not isinstance(event, Unlisted):
            self._unlist(now)
        if (self.fs.state, type(event)) not in TRANSITIONS:
            # Not an error (observations arrive in every state), but never
            # silent: the table says this state does not take it.
            self.refused += 1
            log.debug("%s: %s ignored in state %s", self.name, event, self.fs.state.value)
            return
        old = self.fs
        lsn, epoch = self._position()
        if (old.last_lsn, old.last_epoch) != (lsn, epoch):
            old = replace(old, last_lsn=lsn, last_epoch=epoch)
        self.fs, actions = step(old, event, now)
        new = self.fs
        changed = new.state is not old.state or new.role is not old.role
        entry = self._transition(old, new, event, lsn, now) if changed else None
        for action in actions:
            self._carry_out(action)
        if actions or (new.state, new.role, new.epoch, new.may_lead, new.paused) != (
            old.state,
            old.role,
            old.epoch,
            old.may_lead,
            old.paused,
        ):
            # Durable before anything this state allows (an acknowledgement
            # without a flush, say) can happen: restart rules read it.
            self._save_meta()
        if entry is not None:
            self.journal.add(entry)  # after the takeover itself: it waits for nobody
        else:
            self._unchanged(old, new, event)

    def operate(self, event: Event, now: float) -> None:
        """An operator's event: refused with IllegalTransition (nothing
        changed) where the table does not take it, where `feed` only counts."""
        if (self.fs.state, type(event)) not in TRANSITIONS:
            raise IllegalTransition(
                f"{type(event).__name__} is not allowed in state {self.fs.state.value}"
            )
        self.feed(event, now)

    def _transition(
        self, old: FailoverState, new: FailoverState, event: Event, lsn: int, now: float
    ) -> StateChange:
        why = _why(old, event)
        took_over_from, outage_ms, may_lack = None, None, False
        if old.role is Role.BACKUP and new.role is Role.PRIMARY:
            if old.primary:
                took_over_from = old.primary
                heard = self._last_heard(old.primary)
                if heard is not None and why != "PeerActive":  # a handover is no outage
                    outage_ms = round((now - heard) * 1000)
            if why.startswith("Promote") and old.state is not State.NORMAL:
                # Forced from a state that may lack acknowledged records.
                may_lack = True
                log.warning(
                    "%s: promoted from %s: it may lack records its peers acknowledged",
                    self.name,
                    old.state.value,
                )
        log.info(
            "%s: %s/%s -> %s/%s on %s (epoch %d, lsn %d)",
            self.name,
            old.role.value,
            old.state.value,
            new.role.value,
            new.state.value,
            why,
            new.epoch,
            lsn,
        )
        return StateChange(
            0.0,  # the journal stamps the time of day
            old.state,
            new.state,
            why,
            new.epoch,
            src_role=old.role,
            dst_role=new.role,
            lsn=lsn,
            took_over_from=took_over_from,
            outage_ms=outage_ms,
            may_lack_records=may_lack,
        )

    def _unchanged(self, old: FailoverState, new: FailoverState, event: Event) -> None:
        """Events that changed no state but belong in the history."""
        if isinstance(event, Pause | Resume) and old.paused != new.paused:
            word = "paused" if new.paused else "resumed"
            log.warning("%s: automatic failover %s by the operator", self.name, word)
            self.journal.note(type(event).__name__)
        elif isinstance(event, Promote) and new.asking and new.asking != old.asking:
            log.warning("%s: promote: asking the witness for epoch %d", self.name, new.asking)
            self.journal.note(f"{_why(old, event)}: asking the witness for epoch {new.asking}")
        elif isinstance(event, PrimaryGone) and new.paused and new.primary_gone:
            log.warning(
                "%s: primary %s is gone, but automatic failover is paused: not taking over "
                "(`zmqfail resume` or `zmqfail promote`)",
                self.name,
                event.peer,
            )
            self.journal.note("PrimaryGone: not acted on, failover paused", primary=event.peer)
        elif (
            isinstance(event, StartupDone)
            and new.paused
            and new.state is State.STARTING
            and not new.asking
            and not self._told_held_start
        ):
            self._told_held_start = True
            log.warning(
                "%s: start-up would lead at a new epoch, but automatic failover is paused: "
                "waiting (`zmqfail resume`)",
                self.name,
            )
            self.journal.note("StartupDone: not acted on, failover paused")

    def vote(self, ident: bytes, hello: Hello, knows_client: Callable[[str], bool]) -> bool:
        """A client says it lost its server (the Binary Star vote). It is
        evidence, never a command (the machine weighs it only while the primary
        is silent on every path), and it counts only from a client the lost
        primary served: its connection is its own (routing id = client id) and
        its writes are in the replicated tables (`knows_client`). Random frames
        are not votes. True if it counts."""
        fs = self.fs
        lost_ok = hello.lost == fs.primary if fs.primary else hello.lost in self.peer_names
        if ident == hello.client_id.encode() and lost_ok and knows_client(hello.client_id):
            self.vote_pending = True
            return True
        return False

    # --------------------------------------------------------------- ticks
    def tick(
        self,
        now: float,
        peers: PeerTable,
        guard: PauseGuard,
        repl_heard_at: float,
        full_copies: tuple[str, ...] | None,
        prober: Prober,
    ) -> None:
        """Timers and detection (at most every few ms). `repl_heard_at`: when our
        primary last replicated to us; `full_copies`: as a primary, the backups
        holding everything we acknowledged (None when not replicating)."""
        self._unlist(now)  # before this turn's heartbeats
        fs = self.fs
        history = self.history()  # our log's terms, for rivals in the peers'
        if fs.state is State.HANDOFF and now - fs.since >= HANDOFF_TIMEOUT:
            log.warning(
                "%s: %s did not take over in time; switchover aborted", self.name, fs.handoff_to
            )
            self.feed(HandoffTimeout(), now)
        for name, view in peers.views.items():
            hb = view.last
            if hb is None:
                continue
            alive = view.age(now) <= self.dead_after
            serving = hb.role is Role.PRIMARY and hb.state in SERVING
            clash = rival(history, view.history)
            if clash is not None and alive:
                self._clash(name, clash, now)
                continue  # never followed, its offers never weighed
            if self.seen.get(name) != view.count:
                self.seen[name] = view.count
                if serving:
                    # Right after our own stall, an offer may be stale (called off
                    # since): take none until fresh heartbeats had time to arrive.
                    handoff = (
                        hb.handoff_to if hb.state is State.HANDOFF and guard.trusted(now) else ""
                    )
                    gen = self._listed(name, hb)
                    in_sync = tuple(hb.in_sync)
                    if gen is None:
                        # Not a listing of this process at a generation we may
                        # still take: whatever it says of us, we are not in sync.
                        in_sync = tuple(n for n in in_sync if n != self.name)
                    event = PeerActive(
                        name,
                        hb.epoch,
                        in_sync,
                        handoff,
                        hb.last_lsn,
                        hb.committed_lsn,
                        hb.last_epoch,
                    )
                    self.feed(event, now)
                    fs = self.fs
                    if fs.state is State.NORMAL and fs.primary == name and gen is not None:
                        self.gen_normal = gen
                    # Heard serving: any silence of it is judged afresh. The
                    # detector may not run now (our own pause: untrusted), and
                    # a silence judged before would never be fed again, so a
                    # backup this made syncing waited forever for a primary
                    # that had died (unsafe seed 600411 with "disk").
                    self.silent.discard(name)
                    self.judged.pop(name, None)
                elif hb.epoch > self.fs.epoch:
                    self.feed(HigherEpoch(hb.epoch, name), now)
                fresh = True
            else:
                fresh = False
            # Progress of every peer, whatever its role, with liveness judged now:
            # a report from when a peer was a backup must not stand for it once it
            # leads or falls silent (the audit's erased-history case).
            report = (hb.last_epoch, hb.last_lsn, alive, serving and alive)
            if self.progress.get(name) != report:
                self.progress[name] = report
                self.feed(PeerProgress(name, *report), now)
            if fresh and alive:
                # Elections: asked with the sender's position of this very heartbeat.
                if hb.candidate:
                    self.feed(PeerCandidate(name, hb.candidate, hb.last_epoch, hb.last_lsn), now)
                if hb.grant_to == self.name:
                    self.feed(PeerGrant(name, hb.grant_to, hb.grant_epoch), now)
        fs = self.fs
        if (
            fs.state is State.STARTING
            and now - fs.since >= self.startup_window
            and guard.trusted(now)
        ):
            # After the peers' reports of this turn, and never right after our
            # own pause: what we heard before it may be stale, and the start-up
            # choice (lead, or wait) is made once (found by the simulator: a
            # node paused in its start-up window led with an old report).
            self.feed(StartupDone(), now)
        self._primary_silence(now, peers, guard, repl_heard_at, prober)
        if self.vote_pending:
            self.vote_pending = False
            self.feed(ClientVote(), now)
        primary = full_copies is not None and self.fs.role is Role.PRIMARY
        if primary and full_copies != self.last_in_sync:
            assert full_copies is not None
            self.last_in_sync = full_copies
            self.feed(BackupsInSync(full_copies), now)

    def _primary_silence(
        self,
        now: float,
        peers: PeerTable,
        guard: PauseGuard,
        repl_heard_at: float,
        prober: Prober,
    ) -> None:
        fs = self.fs
        primary = fs.primary if fs.role is Role.BACKUP else ""
        if primary != self._watching:
            # A new primary (or none): what we judged of the last one is void.
            self._watching = primary
            self.silent.clear()
            self.judged.clear()
        if not primary or not guard.trusted(now):
            return
        hb_age = peers.age(primary, now)
        repl_age = now - repl_heard_at if repl_heard_at else float("inf")
        hb = peers.last(primary)
        # A primary that restarted and no longer serves is as gone as a silent one.
        stopped_serving = (
            hb is not None
            and hb_age <= self.dead_after
            and hb.epoch == fs.epoch
            and (hb.role is not Role.PRIMARY or hb.state not in SERVING)
        )
        if stopped_serving or (hb_age > self.dead_after and repl_age > self.dead_after):
            if primary not in self.silent:
                self.silent.add(primary)
                why = (
                    "no longer serves"
                    if stopped_serving
                    else f"is silent on every replication path for "
                    f"{min(hb_age, repl_age) * 1000:.0f} ms"
                )
                log.warning("%s: primary %s %s", self.name, primary, why)
                self.feed(PeerSilent(primary), now)
            # It said itself that it no longer serves (it restarted): gone.
            verdict = Verdict.GONE if stopped_serving else prober.verdict(primary, now)
            if verdict is not None and self.judged.get(primary) is not verdict:
                self.judged[primary] = verdict
                if verdict is Verdict.GONE:
                    if not stopped_serving:
                        log.warning(
                            "%s: primary %s does not answer over the client network either: gone",
                            self.name,
                            primary,
                        )
                    self.feed(PrimaryGone(primary), now)
                else:
                    log.warning(
                        "%s: primary %s answers over the client network: the replication "
                        "links failed; waiting for them",
                        self.name,
                        primary,
                    )
                    self.feed(PrimaryReachable(primary), now)
        else:
            self.silent.discard(primary)
            self.judged.pop(primary, None)

    # ------------------------------------------------------ in-sync generations
    def _listed(self, primary: str, hb: Heartbeat) -> int | None:
        """The generation at which `primary`'s heartbeat counts this process
        in sync, if we may take it: it names our incarnation, and no newer
        generation of ours came from that primary at that epoch (a newer one
        means it dropped or re-admitted us since it sent this). Notes the
        generation it gives us either way."""
        mine = next((e for e in hb.admitted if e[0] == self.name), None)
        if mine is None:
            return None
        _name, incarnation, gen = mine
        fresh = self.note_gen(primary, hb.epoch, gen)
        if self.name not in hb.in_sync or incarnation != self._incarnation() or not fresh:
            return None
        return int(gen)

    def note_gen(self, primary: str, epoch: int, gen: int) -> bool:
        """`primary`, leading at `epoch`, told us our generation is `gen` (a
        heartbeat, or its answer to our probe). False if we heard a newer one."""
        if (primary, epoch) != self.gen_from:
            if epoch < self.gen_from[1]:
                return False
            self.gen_from, self.gen_seen, self.gen_normal = (primary, epoch), 0, 0
        if gen < self.gen_seen:
            return False
        self.gen_seen = gen
        return True

    def held_gen(self) -> tuple[str, int]:
        """The primary and the generation we hold ourselves to, for our
        heartbeat and probe answers: the one our NORMAL stands on while we are
        its NORMAL backup, else the newest it told us. A primary that dropped
        us acknowledges alone only once this reaches the drop."""
        primary, epoch = self.gen_from
        fs = self.fs
        if not primary or epoch != fs.epoch:
            return "", 0
        if fs.role is Role.BACKUP and fs.state is State.NORMAL and fs.primary == primary:
            return primary, self.gen_normal
        return primary, self.gen_seen

    def accept(self, sender: str, epoch: int, now: float) -> str:
        """May records and commits from `sender` at `epoch` be taken?"""
        fs = self.fs
        if sender not in self.peer_names:
            # Only a configured server may replicate to us; anything else (at
            # any epoch) is a stray frame, never a reason to change state.
            return STRANGER
        if epoch < fs.epoch:
            return FENCED
        if epoch > fs.epoch:
            self.higher_epoch(epoch, sender, now)
            return WAIT
        following = fs.state in (State.SYNCING, State.NORMAL)
        if fs.role is Role.BACKUP and fs.primary == sender and following:
            return OK
        return WAIT

    def _clash(self, peer: str, term: Term, now: float) -> None:
        """`peer` holds a term of an epoch we also hold, opened by another
        leader. Leading, we step down above it (whoever leads next sets aside
        what the two histories do not share); following, we never follow a
        primary whose history holds it."""
        fs = self.fs
        leading = fs.role is Role.PRIMARY and fs.state in SERVING
        if (peer, term) not in self.clashes:
            self.clashes.add((peer, term))
            log.critical(
                "%s: %s's history holds epoch %d as opened by %s, ours another term of that "
                "epoch: two leaders opened it; %s",
                self.name,
                peer,
                term.epoch,
                term.leader,
                "stepping down above both" if leading else f"not following {peer} while it lasts",
            )
        if leading:
            self.feed(HigherEpoch(max(fs.epoch, term.epoch) + 1, peer), now)

    def higher_epoch(self, epoch: int, peer: str, now: float) -> None:
        self.feed(HigherEpoch(epoch, peer), now)

    def started_replicating(self) -> None:
        self.last_in_sync = None


def _why(old: FailoverState, event: Event) -> str:
    """The reason a history entry gives: the event's name, told apart for an
    operator's promote (forced or not, and when the witness's grant ends it)."""
    if isinstance(event, Promote):
        return "Promote --force" if event.force else "Promote"
    if isinstance(event, WitnessElected) and old.promoting == event.epoch:
        return "Promote (granted by the witness)"
    return type(event).__name__
