"""The heartbeat a server publishes on both links every interval: what its
peers' failure detectors, elections and switchovers read of it."""

from __future__ import annotations

from typing import Any

from zmqfail.core.leader import Leader
from zmqfail.core.log import NodeLog
from zmqfail.failover.state import FailoverState, State
from zmqfail.protocol import Heartbeat
from zmqfail.replication import LINKS


class Beats:
    """The frames of the last heartbeat, kept while what they say holds.

    An idle pair beats 33 times a second per link with the same content, and
    building and encoding the two frames was a good part of an idle node's
    work. The key is every field the frames carry but the link and our name,
    so a changed field (an LSN, a state, a term, a vote) encodes afresh."""

    __slots__ = ("_frames", "_key", "name")

    def __init__(self, name: str) -> None:
        self.name = name  # the server's, which never changes
        self._key: tuple[Any, ...] | None = None
        self._frames: list[tuple[str, bytes]] = []

    def frames(
        self,
        fs: FailoverState,
        nlog: NodeLog,
        leader: Leader | None,
        held_gen: tuple[str, int] = ("", 0),
        incarnation: int = 0,
    ) -> list[tuple[str, bytes]]:
        """One encoded heartbeat per link. `held_gen`: as a backup, the primary
        and the in-sync generation we hold ourselves to; `incarnation`: our
        process's."""
        in_sync = leader.full_copies() if leader is not None else []
        admitted = tuple(leader.tracker.admitted()) if leader is not None else ()
        handoff_to = ""
        if fs.state is State.HANDOFF and leader is not None:
            peer = leader.tracker.peers.get(fs.handoff_to)
            if peer is not None and peer.held >= nlog.held:
                handoff_to = fs.handoff_to  # it holds everything: it may take over now
        terms = nlog.proc.history.terms
        head = (fs.role, fs.state, fs.epoch, nlog.held, nlog.committed, nlog.flushed)
        # Terms are frozen: equal tuples, equal wire form.
        tail = (tuple(in_sync), handoff_to, nlog.held_epoch, tuple(terms), fs.candidate)
        key = (head, tail, fs.granted, admitted, held_gen, incarnation)
        if key == self._key:
            return self._frames
        history = [t.to_wire() for t in terms]
        granted_to, granted_epoch = fs.granted
        out = []
        for link in LINKS:
            hb = Heartbeat(
                self.name,
                *head,
                link,
                list(in_sync),
                handoff_to,
                nlog.held_epoch,
                history,
                fs.candidate,
                granted_to,
                granted_epoch,
                [list(a) for a in admitted],
                *held_gen,
                incarnation,
            )
            out.append((link, hb.encode()))
        self._key, self._frames = key, out
        return out
