"""The failover agent's I/O side: observations in, state machine actions out.

It turns what the node saw since the last tick (heartbeats, silence on every
path, client votes, replication progress, higher epochs) into events for the
pure state machine in ``zmqfail.failover`` and hands the resulting actions to
the node. Observations that mean nothing in the current state are not sent:
the table decides what is legal, and this module asks it first.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from zmqfail.failover.machine import (
    TRANSITIONS,
    Action,
    BackupsInSync,
    ClientVote,
    Event,
    FailoverState,
    HandoffTimeout,
    HigherEpoch,
    PeerActive,
    PeerProgress,
    PeerSilent,
    Role,
    StartupDone,
    State,
    initial,
    step,
)
from zmqfail.protocol import Heartbeat

if TYPE_CHECKING:
    from zmqfail.node.server import Node

log = logging.getLogger("zmqfail.failover")

# Heartbeat states of a server that serves clients (or is handing over).
SERVING = frozenset({"normal", "primary_only", "backup_only", "handoff"})
HANDOFF_TIMEOUT = 3.0  # seconds a switchover may take before it is called off


class FailoverAgent:
    def __init__(self, node: Node, epoch: int, meta: dict[str, object], now: float) -> None:
        cfg = node.cfg
        self.node = node
        fresh = "active" not in meta
        self.peer_names = tuple(p.name for p in cfg.peers(node.name))
        self.fs: FailoverState = initial(
            node.name,
            self.peer_names,
            epoch,
            preferred=fresh and node.name == cfg.primary,
            was_active=bool(meta.get("resync", False)),
            may_lead=bool(meta.get("active", False)),
            now=now,
            vote_window=2 * node.dead_after,  # failing-over clients probe every 50 ms
            lead_alone=bool(meta.get("alone", False)),
        )
        self.startup_window = 2 * node.dead_after
        self.vote_pending = False
        self.silent: set[str] = set()
        self.seen: dict[str, Heartbeat] = {}
        # What we last told the machine of each peer's progress (epoch, lsn,
        # live, serving): sent again whenever any of it changes.
        self.progress: dict[str, tuple[int, int, bool, bool]] = {}
        self.refused = 0
        self.last_in_sync: tuple[str, ...] | None = None
        self.transitions: list[tuple[float, str, str, str, int]] = []  # wall, from, to, why, epoch

    # ------------------------------------------------------------- feeding
    def feed(self, event: Event, now: float) -> None:
        if (self.fs.state, type(event)) not in TRANSITIONS:
            # Not an error (observations arrive in every state), but never
            # silent: the table says this state does not take it.
            self.refused += 1
            log.debug("%s: %s ignored in state %s", self.node.name, event, self.fs.state.value)
            return
        old = self.fs
        here = replace(old, last_lsn=self.node.held_lsn, last_epoch=self.node.held_epoch)
        self.fs, actions = step(here, event, now)
        if self.fs.state is not old.state or self.fs.role is not old.role:
            why = type(event).__name__
            self.transitions.append(
                (time.time(), old.state.value, self.fs.state.value, why, self.fs.epoch)
            )
            del self.transitions[:-50]
            log.info(
                "%s: %s/%s -> %s/%s on %s (epoch %d, lsn %d)",
                self.node.name,
                old.role.value,
                old.state.value,
                self.fs.role.value,
                self.fs.state.value,
                why,
                self.fs.epoch,
                self.node.held_lsn,
            )
        for action in actions:
            self.node.carry_out(action)
        new = self.fs
        if actions or (new.state, new.role, new.epoch, new.may_lead) != (
            old.state,
            old.role,
            old.epoch,
            old.may_lead,
        ):
            # Durable before anything this state allows (an acknowledgement
            # without a flush, say) can happen: restart rules read it.
            self.node.save_meta()

    def tick(self, now: float) -> None:
        node = self.node
        fs = self.fs
        if fs.state is State.STARTING and now - fs.since >= self.startup_window:
            self.feed(StartupDone(), now)
        if fs.state is State.HANDOFF and now - fs.since >= HANDOFF_TIMEOUT:
            log.warning(
                "%s: %s did not take over in time; switchover aborted", node.name, fs.handoff_to
            )
            self.feed(HandoffTimeout(), now)
        for name, view in node.heartbeats.peers.items():
            hb = view.last
            if hb is None:
                continue
            alive = view.age(now) <= node.dead_after
            serving = hb.role == "primary" and hb.state in SERVING
            if self.seen.get(name) is not hb:
                self.seen[name] = hb
                if serving:
                    # Right after our own stall, an offer may be stale (called off
                    # since): take none until fresh heartbeats had time to arrive.
                    fresh_input = now >= node.trust_silence_after
                    handoff = hb.handoff_to if hb.state == "handoff" and fresh_input else ""
                    event = PeerActive(
                        name, hb.epoch, tuple(hb.in_sync), handoff, hb.last_lsn, hb.committed_lsn
                    )
                    self.feed(event, now)
                elif hb.epoch > self.fs.epoch:
                    self.feed(HigherEpoch(hb.epoch, name), now)
            # Progress of every peer, whatever its role, with liveness judged now:
            # a report from when a peer was a backup must not stand for it once it
            # leads or falls silent (the audit's erased-history case).
            report = (hb.last_epoch, hb.last_lsn, alive, serving and alive)
            if self.progress.get(name) != report:
                self.progress[name] = report
                self.feed(PeerProgress(name, *report), now)
        self._primary_silence(now)
        if self.vote_pending:
            self.vote_pending = False
            self.feed(ClientVote(), now)
        if node.replicator is not None and self.fs.role is Role.PRIMARY:
            in_sync = tuple(node.replicator.tracker.full_copies())
            if in_sync != self.last_in_sync:
                self.last_in_sync = in_sync
                self.feed(BackupsInSync(in_sync), now)

    def _primary_silence(self, now: float) -> None:
        node, fs = self.node, self.fs
        primary = fs.primary
        if not primary or fs.role is not Role.BACKUP or now < node.trust_silence_after:
            return
        view = node.heartbeats.peers.get(primary)
        hb_age = view.age(now) if view is not None else float("inf")
        repl_age = now - node.mirror.last_heard if node.mirror.last_heard else float("inf")
        hb = view.last if view is not None else None
        # A primary that restarted and no longer serves is as gone as a silent one.
        stopped_serving = (
            hb is not None
            and hb_age <= node.dead_after
            and hb.epoch == fs.epoch
            and (hb.role != "primary" or hb.state not in SERVING)
        )
        if stopped_serving or (hb_age > node.dead_after and repl_age > node.dead_after):
            if primary not in self.silent:
                self.silent.add(primary)
                why = (
                    "no longer serves"
                    if stopped_serving
                    else f"is silent on every path for {min(hb_age, repl_age) * 1000:.0f} ms"
                )
                log.warning("%s: primary %s %s", node.name, primary, why)
                self.feed(PeerSilent(primary), now)
        else:
            self.silent.discard(primary)

    def higher_epoch(self, epoch: int, peer: str, now: float) -> None:
        self.feed(HigherEpoch(epoch, peer), now)

    def vote(self) -> None:
        self.vote_pending = True


__all__ = ["Action", "FailoverAgent"]
