"""A node's status as one typed object: what `zmqfail status`, `watch`, `kill`
and `tools/bench` read.

The core builds it; the control socket sends `to_dict()` (msgpack maps travel
well and old tools read what they know); readers rebuild it with `from_dict`,
which fills what a node did not send. An unreachable node is a status too
(`NodeStatus.unreachable`), so tables and health checks need no special case.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from zmqfail.failover.state import Role, State

if TYPE_CHECKING:
    from zmqfail.core.node import NodeCore

UNREACHABLE = "unreachable"


@dataclass(slots=True)
class PeerSeen:
    """What a node last heard from one peer."""

    heartbeat_age_ms: float | None = None
    role: str | None = None
    state: str | None = None
    epoch: int | None = None
    last_lsn: int | None = None
    links: dict[str, float | None] = field(default_factory=dict)  # link -> age ms
    stopped: bool = False  # its last word was a clean stop (a goodbye)


@dataclass(slots=True)
class BackupSeen:
    """A primary's view of one backup."""

    held: int = 0
    in_sync: bool = False  # counted for commits
    full_copy: bool = False  # holds every acknowledged record: may take over
    link: str = "main"
    links_up: dict[str, bool] = field(default_factory=dict)


@dataclass(slots=True)
class NodeStatus:
    name: str
    role: str | None = None
    state: str = UNREACHABLE
    epoch: int | None = None
    last_lsn: int | None = None
    committed_lsn: int | None = None
    flushed_lsn: int | None = None
    snapshot_lsn: int | None = None
    flush_mode: str | None = None
    pid: int | None = None
    uptime: float | None = None
    lag: int | None = None
    replication_link: str | None = None
    cut_links: list[str] = field(default_factory=list)
    delays_ms: dict[str, int] = field(default_factory=dict)
    held_replies: int = 0
    clients: int = 0
    transitions: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    app: dict[str, Any] = field(default_factory=dict)
    sessions: dict[str, Any] = field(default_factory=dict)
    peers: dict[str, PeerSeen] = field(default_factory=dict)
    backups: dict[str, BackupSeen] | None = None
    # Records set aside because no other server's history holds them: a server
    # that erased acknowledged history must never look healthy.
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    # With a witness: asking for which epoch, the lease left, the last refusal.
    witness: dict[str, Any] | None = None
    digest: str | None = None

    @property
    def reachable(self) -> bool:
        return self.state != UNREACHABLE

    @property
    def active(self) -> bool:
        return self.role == Role.PRIMARY.value and self.state in (
            State.NORMAL.value,
            State.PRIMARY_ONLY.value,
            State.BACKUP_ONLY.value,
        )

    @property
    def quarantined(self) -> int:
        return int(self.counters.get("quarantined", 0))

    @classmethod
    def unreachable(cls, name: str) -> NodeStatus:
        return cls(name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.backups is None:
            d.pop("backups")
        if self.digest is None:
            d.pop("digest")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NodeStatus:
        """Rebuild from a control reply; unknown keys are ignored, missing ones
        take their defaults (a newer tool reading an older node)."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["peers"] = {
            n: PeerSeen(**{k: v for k, v in p.items() if k in _PEER_FIELDS})
            for n, p in (d.get("peers") or {}).items()
        }
        if d.get("backups") is not None:
            kw["backups"] = {
                n: BackupSeen(**{k: v for k, v in b.items() if k in _BACKUP_FIELDS})
                for n, b in d["backups"].items()
            }
        kw.setdefault("name", "?")
        return cls(**kw)


_PEER_FIELDS = {f.name for f in fields(PeerSeen)}
_BACKUP_FIELDS = {f.name for f in fields(BackupSeen)}


def build_status(core: NodeCore, now: float) -> NodeStatus:
    """The status of a node core (the shell adds pid, faults, its own counters)."""
    fs = core.agent.fs
    nlog = core.nlog
    proc = nlog.proc
    leader = core.leader
    fe = core.frontend
    counters = {
        "requests": fe.requests,
        "replies": fe.replies,
        "bad_frames": fe.bad_frames,
        "flushes": core.checkpoint.flushes,
        "snapshots": core.checkpoint.snapshots,
        "snapshots_installed": core.store.snapshots_installed,
        "takeovers": core.takeovers,
        "votes": fe.votes,
        "votes_refused": fe.votes_refused,
        "probes_sent": core.prober.sent,
        "probe_answers": core.prober.answers,
        "probes_answered": fe.probes,
        "quarantined": core.store.quarantined,
        "applied": proc.applied,
        "duplicates": proc.duplicates,
        "rejected": proc.rejected,
        "stale": proc.stale,
        "expired": proc.expired,
        "repl_bad_frames": core.follower.bad_frames,
        "repl_stale_frames": core.follower.stale_frames,
        "hb_bad_frames": core.hb_bad_frames,
        "app_failures": proc.failures,
        "repl_bad_acks": leader.bad_acks if leader else 0,
        "snapshots_sent": leader.snapshots_sent if leader else 0,
        "events_refused": core.agent.refused,
        "pauses": core.guard.pauses,
    }
    peers = {}
    for name, v in core.peers.views.items():
        age = v.age(now)
        peers[name] = PeerSeen(
            heartbeat_age_ms=None if age == float("inf") else round(age * 1000, 1),
            role=v.last.role if v.last else None,
            state=v.last.state if v.last else None,
            epoch=v.last.epoch if v.last else None,
            last_lsn=v.last.last_lsn if v.last else None,
            links={
                lk: (None if not t else round((now - t) * 1000, 1)) for lk, t in v.heard_at.items()
            },
            stopped=name in core.said_bye,
        )
    backups = None
    if leader is not None:
        full = set(leader.full_copies())
        backups = {
            p.name: BackupSeen(
                p.held,
                p.in_sync,
                p.name in full,
                p.link,
                {lk: ls.up for lk, ls in p.links.items()},
            )
            for p in leader.tracker.peers.values()
        }
    return NodeStatus(
        name=core.name,
        role=fs.role.value,
        state=fs.state.value,
        epoch=fs.epoch,
        last_lsn=proc.last_lsn,
        committed_lsn=nlog.committed,
        flushed_lsn=nlog.flushed,
        snapshot_lsn=nlog.snapshot_lsn,
        flush_mode=nlog.policy.mode,
        uptime=round(now - core.started, 3),
        lag=core.lag(),
        replication_link=leader.carrying_link() if leader else (core.follower.link or None),
        held_replies=len(fe.gate),
        clients=fe.recent_clients(now),
        transitions=core.agent.transitions[-20:],
        counters=counters,
        app=proc.describe(),
        sessions=proc.sessions.describe(),
        peers=peers,
        backups=backups,
        quarantine=core.store.entries[-5:],
        witness=_witness(core, now),
    )


def _witness(core: NodeCore, now: float) -> dict[str, Any] | None:
    w = core.witness
    if w is None:
        return None
    left = w.valid_until - now
    return {
        "asking": core.agent.fs.asking,
        "lease_left_ms": round(left * 1000) if left > 0 else 0,
        "asks": w.asks,
        "answers": w.answers,
        "refusals": w.refusals,
        "last_refusal": w.last_refusal,
    }
