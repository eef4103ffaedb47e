"""Control socket commands: status for the operator tools, fault injection, stop."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from zmqfail.chaos import LINK_NAMES
from zmqfail.errors import ProtocolError
from zmqfail.replication import LINKS

if TYPE_CHECKING:
    from zmqfail.node.server import Node


def handle(node: Node, command: str, args: dict[str, Any]) -> dict[str, Any]:
    if command == "status":
        return status(node, digest=bool(args.get("digest", False)))
    if command == "stop":
        node.stop()
        return {"stopping": True}
    if command == "switchover":
        from zmqfail.failover.machine import IllegalTransition, Role, State, Switchover

        fs = node.agent.fs
        if fs.role is not Role.PRIMARY or fs.state is not State.NORMAL:
            raise ProtocolError(
                f"cannot switch over: {node.name} is {fs.role.value}/{fs.state.value}; "
                "only a primary in the normal state (with an in-sync backup) can hand over"
            )
        try:
            node.agent.feed(Switchover(), time.monotonic())
        except IllegalTransition as exc:
            raise ProtocolError(f"cannot switch over: {exc}") from None
        return {"handoff_to": node.agent.fs.handoff_to, "state": node.state}
    if command == "delay":
        return _delay(node, args)
    if command in ("cut", "heal"):
        link = args.get("link")
        if link not in LINK_NAMES:
            raise ProtocolError(f"link must be one of {', '.join(LINK_NAMES)}, got {link!r}")
        seconds = args.get("for")
        if seconds is not None and (
            not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0
        ):
            raise ProtocolError(f"'for' must be a positive number of seconds, got {seconds!r}")
        if command == "cut":
            node.cut_links.add(link)
            if seconds is not None:
                # The node heals itself: a cut must not outlive a dead operator tool.
                node.heal_at[link] = time.monotonic() + float(seconds)
        else:
            node.cut_links.discard(link)
            node.heal_at.pop(link, None)
        node.heartbeats.cut = {lk for lk in node.cut_links if lk in LINKS}
        return {"cut": sorted(node.cut_links)}
    raise ProtocolError(f"unknown control command {command!r}")


def _delay(node: Node, args: dict[str, Any]) -> dict[str, Any]:
    """Fault injection: hold the replication records this node sends on a
    link for `ms` milliseconds (0 ends it), as a slow network would; `for`
    ends it by itself. Frames still held when the process dies are lost, as
    in a send queue. Used to reproduce races that need a slow catch-up."""
    link, ms, seconds = args.get("link"), args.get("ms"), args.get("for")
    if link not in LINKS:
        raise ProtocolError(f"link must be one of {', '.join(LINKS)}, got {link!r}")
    if not isinstance(ms, int | float) or isinstance(ms, bool) or not 0 <= ms <= 10_000:
        raise ProtocolError(f"'ms' must be a number of milliseconds from 0 to 10000, got {ms!r}")
    if seconds is not None and (
        not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0
    ):
        raise ProtocolError(f"'for' must be a positive number of seconds, got {seconds!r}")
    key = f"delay:{link}"
    if ms:
        node.delays[link] = ms / 1000.0
        if seconds is not None:
            node.heal_at[key] = time.monotonic() + float(seconds)
    else:
        node.delays.pop(link, None)
        node.heal_at.pop(key, None)
    return {"delays_ms": {lk: round(d * 1000) for lk, d in sorted(node.delays.items())}}


def status(node: Node, digest: bool = False) -> dict[str, Any]:
    now = time.monotonic()
    proc = node.proc
    st: dict[str, Any] = {
        "name": node.name,
        "role": node.role,
        "state": node.state,
        "epoch": proc.epoch,
        "last_lsn": proc.last_lsn,
        "committed_lsn": node.committed_lsn,
        "flushed_lsn": node.flushed_lsn,
        "snapshot_lsn": node.snapshot_lsn,
        "flush_mode": node.policy.mode,
        "pid": os.getpid(),
        "uptime": round(time.time() - node.started, 3),
        "lag": node.lag(),
        "replication_link": node.replication_link(),
        "cut_links": sorted(node.cut_links),
        "delays_ms": {lk: round(d * 1000) for lk, d in sorted(node.delays.items())},
        "held_replies": len(node.gate),
        "clients": sum(1 for t in node.clients.values() if now - t < 5.0),
        "transitions": [
            {"time": t, "from": a, "to": b, "why": why, "epoch": e}
            for t, a, b, why, e in node.agent.transitions[-20:]
        ],
        "counters": dict(
            node.counters,
            applied=proc.applied,
            duplicates=proc.duplicates,
            stale=proc.stale,
            expired=proc.expired,
            repl_bad_frames=node.mirror.bad_frames,
            repl_stale_frames=node.mirror.stale_frames,
            hb_bad_frames=node.heartbeats.bad_frames,
            app_failures=proc.failures,
            repl_bad_acks=node.replicator.bad_acks if node.replicator else 0,
            snapshots_sent=node.replicator.snapshots_sent if node.replicator else 0,
            events_refused=node.agent.refused,
        ),
        # Records set aside because no other server's history holds them: a
        # server that erased acknowledged history must never look healthy.
        "quarantine": node.quarantine[-5:],
        "app": proc.describe(),
        "sessions": proc.sessions.describe(),
        "peers": {
            name: {
                "heartbeat_age_ms": None
                if v.age(now) == float("inf")
                else round(v.age(now) * 1000, 1),
                "role": v.last.role if v.last else None,
                "state": v.last.state if v.last else None,
                "epoch": v.last.epoch if v.last else None,
                "last_lsn": v.last.last_lsn if v.last else None,
                "links": {
                    lk: (None if not t else round((now - t) * 1000, 1))
                    for lk, t in v.heard_at.items()
                },
            }
            for name, v in node.heartbeats.peers.items()
        },
    }
    if node.replicator is not None:
        st["backups"] = {
            p.name: {
                "held": p.held,
                "in_sync": p.in_sync,
                "link": p.link,
                "links_up": {lk: ls.up for lk, ls in p.links.items()},
            }
            for p in node.replicator.tracker.peers.values()
        }
    if digest:
        st["digest"] = proc.digest()
    return st
