"""A node's status as one typed object: what `zmqfail status`, `watch`,
`health`, `kill` and `tools/bench` read.

The core builds it; the control socket sends `to_dict()` (a msgpack map with
enums as their names' values: maps travel well and old tools read what they
know); readers decode it with `from_wire`, which checks every field it knows
(a role or state that is not one of the state machine's is a ProtocolError,
never a string passed on), ignores keys it does not know and fills those a
node did not send. A node that did not answer is a status too
(`NodeStatus.unreachable`, with the reason), so tables and health checks need
no special case.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from zmqfail.core.journal import StateChange
from zmqfail.core.reader import Reader
from zmqfail.errors import ProtocolError
from zmqfail.failover.state import Role, State

if TYPE_CHECKING:
    from zmqfail.core.node import NodeCore

UNREACHABLE = "unreachable"  # the state a reader shows for a node that did not answer
SERVING = frozenset({State.NORMAL, State.PRIMARY_ONLY, State.BACKUP_ONLY})
# Keys every row of `status --json` has, reachable or not: stable for scripts.
STATUS_KEYS = (
    "name",
    "role",
    "state",
    "epoch",
    "last_lsn",
    "committed_lsn",
    "flushed_lsn",
    "digest",
    "pid",
    "lag",
    "replication_link",
)


@dataclass(slots=True)
class PeerSeen:
    """What a node last heard from one peer."""

    heartbeat_age_ms: float | None = None
    role: Role | None = None
    state: State | None = None
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
    # Dropped, and has not yet said it knows (replication.py): nothing is
    # acknowledged beyond what it holds until it does, or is judged gone.
    leaving: bool = False


@dataclass(slots=True)
class NodeStatus:
    name: str
    role: Role | None = None
    state: State | None = None  # None: the node did not answer (see `error`)
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
    cut_links: list[str] = field(default_factory=list)  # cut either way
    cut_one_way: dict[str, str] = field(default_factory=dict)  # of those: link -> in / out
    delays_ms: dict[str, int] = field(default_factory=dict)
    held_replies: int = 0
    clients: int = 0
    transitions: list[StateChange] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    app: dict[str, Any] = field(default_factory=dict)
    sessions: dict[str, Any] = field(default_factory=dict)
    peers: dict[str, PeerSeen] = field(default_factory=dict)
    backups: dict[str, BackupSeen] | None = None
    # Records set aside because no other server's history holds them: a server
    # that erased acknowledged history must never look healthy.
    quarantine: list[StateChange] = field(default_factory=list)
    # An operator paused automatic failover on this node (`zmqfail resume`).
    failover_paused: bool = False
    # With a witness: asking for which epoch, the lease left, the last refusal.
    witness: dict[str, Any] | None = None
    digest: str | None = None
    error: str | None = None  # why a reader could not use the node's answer

    @property
    def reachable(self) -> bool:
        return self.state is not None

    @property
    def state_name(self) -> str:
        """The state as shown and written by tools: "unreachable" for no answer."""
        return UNREACHABLE if self.state is None else self.state.value

    @property
    def role_name(self) -> str | None:
        return None if self.role is None else self.role.value

    def is_(self, role: Role, *states: State) -> bool:
        """Has this role, and (when any are given) one of these states."""
        return self.role is role and (not states or self.state in states)

    @property
    def serving(self) -> bool:
        """Takes client requests now (the role and states a client accepts)."""
        return self.role is Role.PRIMARY and self.state in SERVING

    @property
    def active(self) -> bool:
        return self.serving

    @property
    def quarantined(self) -> int:
        return int(self.counters.get("quarantined", 0))

    @classmethod
    def unreachable(cls, name: str, error: str | None = None) -> NodeStatus:
        return cls(name, error=error)

    def to_dict(self) -> dict[str, Any]:
        """The wire form (what the control socket sends)."""
        d = asdict(self, dict_factory=_plain)
        d["transitions"] = [t.to_wire() for t in self.transitions]
        d["quarantine"] = [q.to_wire() for q in self.quarantine]
        for key in ("backups", "digest", "error"):
            if d[key] is None:
                d.pop(key)
        return d

    def to_json(self) -> dict[str, Any]:
        """A row of `status --json`: every key a node reports, and every one of
        STATUS_KEYS (null when unknown); an unreachable node has only those,
        its state "unreachable" and the error."""
        if not self.reachable:
            row: dict[str, Any] = dict.fromkeys(STATUS_KEYS)
            row.update(name=self.name, state=UNREACHABLE)
            if self.error is not None:
                row["error"] = self.error
            return row
        return {**dict.fromkeys(STATUS_KEYS), **self.to_dict()}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> NodeStatus:
        """Decode and check a control reply. Unknown keys are ignored, missing
        ones take their defaults (a newer tool reading an older node), except
        the name and the state; anything of the wrong type, or a role or state
        the state machine does not have, raises ProtocolError."""
        r = Reader(d, "status")
        st = cls(
            r.text("name", required=True) or "?",
            role=r.enum("role", Role),
            state=r.enum("state", State, required=True),
            epoch=r.int_("epoch"),
            last_lsn=r.int_("last_lsn"),
            committed_lsn=r.int_("committed_lsn"),
            flushed_lsn=r.int_("flushed_lsn"),
            snapshot_lsn=r.int_("snapshot_lsn"),
            flush_mode=r.text("flush_mode"),
            pid=r.int_("pid"),
            uptime=r.number("uptime"),
            lag=r.int_("lag"),
            replication_link=r.text("replication_link"),
            cut_links=[r.item_text("cut_links", v) for v in r.list_("cut_links")],
            cut_one_way={
                k: r.item_text("cut_one_way", v) for k, v in r.map_("cut_one_way").items()
            },
            delays_ms={k: r.item_int("delays_ms", v) for k, v in r.map_("delays_ms").items()},
            held_replies=r.int_("held_replies") or 0,
            clients=r.int_("clients") or 0,
            transitions=[
                StateChange.from_wire(t, "status transition") for t in r.list_("transitions")
            ],
            counters={k: r.item_int("counters", v) for k, v in r.map_("counters").items()},
            app=r.tree("app"),
            sessions=r.tree("sessions"),
            peers={k: _peer(k, v) for k, v in r.map_("peers").items()},
            quarantine=[
                StateChange.from_wire(q, "status quarantine") for q in r.list_("quarantine")
            ],
            failover_paused=r.flag("failover_paused"),
            digest=r.text("digest"),
        )
        if d.get("backups") is not None:
            st.backups = {k: _backup(k, v) for k, v in r.map_("backups").items()}
        if d.get("witness") is not None:
            st.witness = r.tree("witness")
        return st


def _plain(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """asdict's factory: enums as their values (msgpack and JSON carry strings)."""
    return {k: v.value if isinstance(v, enum.Enum) else v for k, v in items}


def _peer(name: str, p: object) -> PeerSeen:
    r = Reader(p, f"status peer {name!r:.40}")
    links = r.map_("links")
    return PeerSeen(
        heartbeat_age_ms=r.number("heartbeat_age_ms"),
        role=r.enum("role", Role),
        state=r.enum("state", State),
        epoch=r.int_("epoch"),
        last_lsn=r.int_("last_lsn"),
        links={k: Reader(links, "links").number(k) for k in links},
        stopped=r.flag("stopped"),
    )


def _backup(name: str, b: object) -> BackupSeen:
    r = Reader(b, f"status backup {name!r:.40}")
    ups = r.map_("links_up")
    for lk, up in ups.items():
        if not isinstance(up, bool):
            raise ProtocolError(f"{r.what} links_up {lk} must be true or false, got {up!r:.40}")
    return BackupSeen(
        r.int_("held") or 0,
        r.flag("in_sync"),
        r.flag("full_copy"),
        link=r.text("link") or "main",
        links_up=dict(ups),
        leaving=r.flag("leaving"),
    )


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
        "too_many_in_flight": fe.too_many_in_flight,
        "flushes": core.checkpoint.flushes,
        "snapshots": core.checkpoint.snapshots,
        "snapshots_installed": core.store.snapshots_installed,
        "takeovers": core.takeovers,
        "votes": fe.votes,
        "votes_refused": fe.votes_refused,
        "probes_sent": core.prober.sent,
        "probe_answers": core.prober.answers,
        "probes_answered": fe.probes,
        "ack_gaps": fe.ack_gaps,
        "ack_gap_ids": fe.ack_gap_ids,
        "quarantined": core.store.quarantined,
        "applied": proc.applied,
        "duplicates": proc.duplicates,
        "rejected": proc.rejected,
        "stale": proc.stale,
        "expired": proc.expired,
        "repl_bad_frames": core.follower.bad_frames,
        "repl_stale_frames": core.follower.stale_frames,
        "hb_bad_frames": core.intake.bad_frames,
        "app_failures": proc.failures,
        "repl_bad_acks": leader.bad_acks if leader else 0,
        "snapshots_sent": leader.snapshots_sent if leader else 0,
        "link_resets": leader.link_resets if leader else 0,
        "events_refused": core.agent.refused,
        "history_errors": core.journal.errors,
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
            stopped=name in core.intake.said_bye,
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
                p.leaving,
            )
            for p in leader.tracker.peers.values()
        }
    return NodeStatus(
        name=core.name,
        role=fs.role,
        state=fs.state,
        epoch=fs.epoch,
        last_lsn=proc.last_lsn,
        committed_lsn=nlog.committed,
        flushed_lsn=nlog.flushed,
        snapshot_lsn=nlog.snapshot_lsn,
        flush_mode=nlog.policy.mode,
        uptime=round(now - core.started, 3),
        lag=_lag(core),
        replication_link=leader.carrying_link() if leader else (core.follower.link or None),
        held_replies=len(fe.gate),
        clients=fe.recent_clients(now),
        transitions=core.journal.recent[-20:],
        counters=counters,
        app=proc.describe(),
        sessions=proc.sessions.describe(),
        peers=peers,
        backups=backups,
        quarantine=core.store.entries[-5:],
        failover_paused=fs.paused,
        witness=_witness(core, now),
    )


def _lag(core: NodeCore) -> int | None:
    """Records behind: the slowest backup's as primary, ours behind our primary as backup."""
    if core.leader is not None:
        return core.leader.lag()
    hb = core.peers.last(core.follower.primary)
    if hb is None:
        return None
    return max(0, hb.last_lsn - core.nlog.proc.last_lsn)


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
