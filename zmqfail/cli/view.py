"""The cluster view shared by `zmqfail watch` and `zmqfail status`: its data.

Everything here except `poll` is a pure function of the nodes' typed statuses
(`NodeStatus`, decoded from what the control socket returns) and of a clock
the caller passes in, so the view is tested without sockets and without waiting,
and `watch` stays a thin loop around `poll`, `WatchModel.update` and
`zmqfail/cli/layout.py`'s `render`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from zmqfail.cli.health import (
    UNREACHABLE,
    Failover,
    Health,
    Transition,
    classify,
    last_failover,
    node_words,
    primary_last_heard,
    said_stopped,
)
from zmqfail.client.control import node_status
from zmqfail.config import ClusterConfig
from zmqfail.core.status import NodeStatus
from zmqfail.failover.state import Role
from zmqfail.replication import LINKS

SPARK = "▁▂▃▄▅▆▇█"
HISTORY = 30  # rate samples kept per node (the sparkline's width)
UP_AFTER_INTERVALS = 3  # a heartbeat older than this many intervals: the link is down
# Readings of when each primary was last heard, per (node, epoch): enough to
# reach back past the few polls in which a stalled, overtaken primary still
# sent heartbeats before it learned of the new epoch.
HEARD_KEPT = 64
HEARD_SAME = 0.005  # seconds: two polls of a silent primary differ by jitter only

__all__ = ["Transition"]  # re-exported: the view's state changes are health's


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of a node's request counter, with what tells a restart apart."""

    count: int
    pid: int | None
    uptime: float | None
    seen_at: float  # the caller's monotonic clock, used when uptime is missing


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One node as displayed: every cell already text, so rendering only lays out."""

    name: str
    reachable: bool
    role: str  # in an operator's words: "primary (alone, took over)"
    state: str  # the state machine's name: "backup_only"
    epoch: str
    last_lsn: str
    committed_lsn: str
    flushed_lsn: str
    lag: str
    link: str
    health: Mapping[str, str]  # link name -> up / down / cut / -
    peers: str
    clients: str
    digest: str
    rate: str = "-"
    spark: str = ""


@dataclass(frozen=True, slots=True)
class Frame:
    rows: list[NodeRow]
    transitions: list[Transition]
    polled_at: float  # wall clock
    health: Health
    failover: Failover | None = None


# ----------------------------------------------------------------- polling


def poll(
    cfg: ClusterConfig, digest: bool, timeout: float, pool: Executor | None = None
) -> list[NodeStatus]:
    """Every node's status in config order (an error reply is an unreachable
    node, never the end of the view); with a pool all at once, so a dead node
    costs one timeout per refresh instead of one per dead node."""
    if pool is None:
        return [node_status(n, digest, timeout) for n in cfg.nodes]
    futures = [pool.submit(node_status, n, digest, timeout) for n in cfg.nodes]
    return [f.result() for f in futures]


# ------------------------------------------------------------ pure helpers


def sparkline(values: Iterable[float | None], width: int = HISTORY) -> str:
    """Scaled from zero, not from the minimum, so a steady load draws a flat
    high line instead of noise; a poll without a rate leaves a gap."""
    vals = list(values)[-width:]
    top = max((v for v in vals if v is not None), default=0.0)
    out = []
    for v in vals:
        if v is None:
            out.append(" ")
        elif top <= 0:
            out.append(SPARK[0])
        else:
            out.append(SPARK[min(len(SPARK) - 1, int(max(v, 0.0) / top * len(SPARK)))])
    return "".join(out)


def sample_of(st: NodeStatus, now: float) -> Sample | None:
    if not st.reachable:
        return None
    return Sample(st.counters.get("requests", 0), st.pid, st.uptime, now)


def rate(prev: Sample | None, cur: Sample | None) -> float | None:
    """Requests/s between two readings. The node's own uptime is the clock when
    both have it (no network jitter); after a restart (new pid, counter or
    uptime going back) the counter started from zero, so it is the average
    since the restart, never a negative difference."""
    if prev is None or cur is None:
        return None
    cu, pu = cur.uptime, prev.uptime
    went_back = cu is not None and pu is not None and cu < pu
    if cur.pid != prev.pid or cur.count < prev.count or went_back:
        span = cu if cu is not None else cur.seen_at - prev.seen_at
        return cur.count / span if span > 0 else None
    dt = cu - pu if cu is not None and pu is not None else cur.seen_at - prev.seen_at
    return (cur.count - prev.count) / dt if dt > 0 else None


def _age_up(age_ms: float | None, heartbeat_interval_ms: int) -> bool:
    return age_ms is not None and age_ms < UP_AFTER_INTERVALS * heartbeat_interval_ms


def link_health(st: NodeStatus, heartbeat_interval_ms: int) -> dict[str, str]:
    """Per link: up, down, cut (by fault injection) or - (nothing to judge by).

    A primary judges by its replication tracker (`backups[*].links_up`: no
    commit went unanswered). That stays "up" for a backup that died while
    nothing was sent, so a link whose backup heartbeat is also stale counts
    as down. A backup judges by how recently its primary's heartbeats
    arrived on each link.
    """
    out = dict.fromkeys(LINKS, "-")
    peers = st.peers
    if st.role is Role.PRIMARY:
        backups = st.backups or {}
        for lk in LINKS:
            ups = []
            for name, b in backups.items():
                up = bool(b.links_up.get(lk))
                seen = peers.get(name)
                hb = seen.links if seen is not None else {}
                if lk in hb and not _age_up(hb[lk], heartbeat_interval_ms):
                    up = False
                ups.append(up)
            if ups:
                n = sum(ups)
                out[lk] = "up" if n == len(ups) else "down" if n == 0 else f"{n}/{len(ups)} up"
    elif st.role is Role.BACKUP:
        primary = next((p for p in peers.values() if p.role is Role.PRIMARY), None)
        if primary is not None:
            for lk in LINKS:
                up = _age_up(primary.links.get(lk), heartbeat_interval_ms)
                out[lk] = "up" if up else "down"
    for lk in st.cut_links:
        if lk in out:
            out[lk] = "cut"
    return out


def _ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f}ms" if ms < 1000 else f"{ms / 1000:.1f}s"


def peer_ages(st: NodeStatus) -> str:
    return " ".join(f"{n} {_ms(p.heartbeat_age_ms)}" for n, p in sorted(st.peers.items()))


def _text(value: object) -> str:
    return "-" if value is None else str(value)


def format_rate(r: float | None) -> str:
    if r is None:
        return "-"
    return f"{r:.1f}" if r < 10 else f"{r:.0f}"


def node_row(
    st: NodeStatus,
    heartbeat_interval_ms: int,
    rate_text: str = "-",
    spark: str = "",
    stopped: Iterable[str] = (),
) -> NodeRow:
    reachable = st.reachable
    return NodeRow(
        name=st.name,
        reachable=reachable,
        role=node_words(st, stopped),
        state=st.state_name,
        epoch=_text(st.epoch),
        last_lsn=_text(st.last_lsn),
        committed_lsn=_text(st.committed_lsn),
        flushed_lsn=_text(st.flushed_lsn),
        lag=_text(st.lag),
        link=_text(st.replication_link),
        health=link_health(st, heartbeat_interval_ms) if reachable else dict.fromkeys(LINKS, "-"),
        peers=peer_ages(st) or "-",
        clients=_text(st.clients) if reachable else "-",
        digest=st.digest[:12] if st.digest else "-",
        rate=rate_text,
        spark=spark,
    )


def node_transitions(st: NodeStatus) -> list[Transition]:
    """The node's changes of state (its notes, a start or a pause, are for
    `zmqfail history`)."""
    return [
        Transition(t.time, st.name, t.src.value, t.dst.value, t.why, t.epoch)
        for t in st.transitions
        if t.changed
    ]


def merge_transitions(
    known: Iterable[Transition], new: Iterable[Transition], keep: int = 200
) -> list[Transition]:
    """Every poll returns each node's recent changes again; the union, oldest
    first, keeps each once, and keeps those of nodes that have since died."""
    return sorted(set(known) | set(new), key=lambda t: (t.time, t.node, t.dst))[-keep:]


def snapshot(statuses: Sequence[NodeStatus], heartbeat_interval_ms: int, wall: float) -> Frame:
    """One poll as a frame, without rates: what `zmqfail status` shows."""
    changes: list[Transition] = []
    for st in statuses:
        changes += node_transitions(st)
    changes = merge_transitions((), changes)
    heard = {k: [t] for k, t in primary_last_heard(statuses, wall).items()}
    return Frame(
        [node_row(st, heartbeat_interval_ms, stopped=said_stopped(statuses)) for st in statuses],
        changes,
        wall,
        classify(statuses),
        last_failover(changes, heard),
    )


@dataclass
class WatchModel:
    """What `watch` remembers between polls: counter readings, rate history,
    the merged state changes, who answered last time and when each primary
    was last heard of (so a failover's outage survives the old primary's return)."""

    heartbeat_interval_ms: int
    history: int = HISTORY
    keep: int = 200
    samples: dict[str, Sample] = field(default_factory=dict)
    rates: dict[str, deque[float | None]] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    last_seen: dict[str, NodeStatus] = field(default_factory=dict)
    heard: dict[tuple[str, int], deque[float]] = field(default_factory=dict)

    def update(self, statuses: Sequence[NodeStatus], now: float, wall: float) -> Frame:
        rows: list[NodeRow] = []
        fresh: list[Transition] = []
        stopped = said_stopped(statuses)
        for st in statuses:
            name = st.name
            cur, prev = sample_of(st, now), self.samples.get(name)
            r = rate(prev, cur)
            if cur is not None:
                self.samples[name] = cur  # kept while unreachable: a pause is not a restart
            hist = self.rates.setdefault(name, deque(maxlen=self.history))
            if prev is not None or cur is None:  # a first reading has no rate, a gap has
                hist.append(r)
            rate_text, spark = format_rate(r), sparkline(hist)
            rows.append(node_row(st, self.heartbeat_interval_ms, rate_text, spark, stopped))
            fresh += node_transitions(st)
            fresh += self._seen_change(name, st, wall)
        self.transitions = merge_transitions(self.transitions, fresh, self.keep)
        for key, at in primary_last_heard(statuses, wall).items():
            seen = self.heard.setdefault(key, deque(maxlen=HEARD_KEPT))
            if not seen or abs(seen[-1] - at) > HEARD_SAME:  # a dead primary reads the same
                seen.append(at)
        failover = last_failover(self.transitions, self.heard)
        return Frame(rows, list(self.transitions), wall, classify(statuses), failover)

    def _seen_change(self, name: str, st: NodeStatus, wall: float) -> list[Transition]:
        """A node cannot report its own death, so the watcher records when it
        stops and starts answering."""
        before = self.last_seen.get(name)
        self.last_seen[name] = st
        if before is None or before.reachable == st.reachable:
            return []
        if not st.reachable:
            return [Transition(wall, name, before.state_name, UNREACHABLE, "no reply", None)]
        return [Transition(wall, name, UNREACHABLE, st.state_name, "replies", st.epoch)]
