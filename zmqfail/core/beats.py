"""The heartbeat a server publishes on both links every interval: what its
peers' failure detectors, elections and switchovers read of it."""

from __future__ import annotations

from zmqfail.core.leader import Leader
from zmqfail.core.log import NodeLog
from zmqfail.failover.state import FailoverState, State
from zmqfail.protocol import Heartbeat
from zmqfail.replication import LINKS


def heartbeats(
    name: str, fs: FailoverState, nlog: NodeLog, leader: Leader | None
) -> list[tuple[str, bytes]]:
    """One encoded heartbeat per link."""
    in_sync = list(leader.full_copies()) if leader is not None else []
    handoff_to = ""
    if fs.state is State.HANDOFF and leader is not None:
        peer = leader.tracker.peers.get(fs.handoff_to)
        if peer is not None and peer.held >= nlog.held:
            handoff_to = fs.handoff_to  # it holds everything: it may take over now
    history = nlog.proc.history.to_wire()
    out = []
    for link in LINKS:
        hb = Heartbeat(
            name,
            fs.role,
            fs.state,
            fs.epoch,
            nlog.held,
            nlog.committed,
            nlog.flushed,
            link,
            in_sync,
            handoff_to,
            nlog.held_epoch,
            history,
            fs.candidate,
            fs.granted[0],
            fs.granted[1],
        )
        out.append((link, hb.encode()))
    return out
