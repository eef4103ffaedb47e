"""The cluster view shared by `zmqfail watch` and `zmqfail status`.

Everything here except `poll` is a pure function of the status dicts the
control socket returns (see `zmqfail/node/control.py`) and of a clock the
caller passes in, so the view is tested without sockets and without waiting,
and `watch` stays a thin loop around `poll`, `WatchModel.update` and `render`.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import IO, Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from zmqfail.client.control import node_status
from zmqfail.config import ClusterConfig, NodeConfig
from zmqfail.errors import ZmqfailError
from zmqfail.replication import LINKS

SPARK = "▁▂▃▄▅▆▇█"
HISTORY = 30  # rate samples kept per node (the sparkline's width)
UP_AFTER_INTERVALS = 3  # a heartbeat older than this many intervals: the link is down
MIN_WIDTH = 160  # below this the widest columns would be cut when not on a terminal
UNREACHABLE = "unreachable"

STATE_STYLES = {
    "normal": "green",
    "primary_only": "yellow",
    "backup_only": "yellow",
    "syncing": "cyan",
    "standby": "cyan",
    "starting": "cyan",
    "handoff": "magenta",
    "fenced": "red",
    "stopped": "red",
    UNREACHABLE: "grey50",
}
HEALTH_STYLES = {"up": "green", "down": "red", "cut": "magenta"}


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change; `time` is wall-clock seconds, so changes merge across nodes."""

    time: float
    node: str
    src: str
    dst: str
    why: str
    epoch: int | None


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
    role: str
    state: str
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


# ----------------------------------------------------------------- polling


def unreachable_row(node: NodeConfig, error: str | None = None) -> dict[str, Any]:
    """The same shape `node_status` gives a silent node, for nodes that answer badly."""
    row: dict[str, Any] = {
        "name": node.name,
        "role": None,
        "state": UNREACHABLE,
        "epoch": None,
        "last_lsn": None,
        "committed_lsn": None,
        "flushed_lsn": None,
        "digest": None,
        "pid": None,
    }
    if error is not None:
        row["error"] = error
    return row


def _one(node: NodeConfig, digest: bool, timeout: float) -> dict[str, Any]:
    try:
        return node_status(node, digest, timeout)
    except ZmqfailError as exc:  # an error reply must not end the view
        return unreachable_row(node, str(exc))


def poll(
    cfg: ClusterConfig, digest: bool, timeout: float, pool: Executor | None = None
) -> list[dict[str, Any]]:
    """Every node's status in config order; with a pool all at once, so a dead
    node costs one timeout per refresh instead of one per dead node."""
    if pool is None:
        return [_one(n, digest, timeout) for n in cfg.nodes]
    futures = [pool.submit(_one, n, digest, timeout) for n in cfg.nodes]
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


def sample_of(st: Mapping[str, Any], now: float) -> Sample | None:
    counters = st.get("counters")
    if st.get("state") == UNREACHABLE or not isinstance(counters, Mapping):
        return None
    return Sample(int(counters.get("requests", 0)), st.get("pid"), st.get("uptime"), now)


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


def _age_up(age_ms: Any, heartbeat_interval_ms: int) -> bool:
    return isinstance(age_ms, int | float) and age_ms < UP_AFTER_INTERVALS * heartbeat_interval_ms


def link_health(st: Mapping[str, Any], heartbeat_interval_ms: int) -> dict[str, str]:
    """Per link: up, down, cut (by fault injection) or - (nothing to judge by).

    A primary judges by its replication tracker (`backups[*].links_up`: no
    commit went unanswered). That stays "up" for a backup that died while
    nothing was sent, so a link whose backup heartbeat is also stale counts
    as down. A backup judges by how recently its primary's heartbeats
    arrived on each link.
    """
    out = dict.fromkeys(LINKS, "-")
    peers: Mapping[str, Any] = st.get("peers") or {}
    if st.get("role") == "primary":
        backups: Mapping[str, Any] = st.get("backups") or {}
        for lk in LINKS:
            ups = []
            for name, b in backups.items():
                up = bool((b.get("links_up") or {}).get(lk))
                hb = (peers.get(name) or {}).get("links") or {}
                if lk in hb and not _age_up(hb[lk], heartbeat_interval_ms):
                    up = False
                ups.append(up)
            if ups:
                n = sum(ups)
                out[lk] = "up" if n == len(ups) else "down" if n == 0 else f"{n}/{len(ups)} up"
    elif st.get("role") == "backup":
        primary = next((p for p in peers.values() if p.get("role") == "primary"), None)
        if primary is not None:
            hb = primary.get("links") or {}
            for lk in LINKS:
                out[lk] = "up" if _age_up(hb.get(lk), heartbeat_interval_ms) else "down"
    for lk in st.get("cut_links") or ():
        if lk in out:
            out[lk] = "cut"
    return out


def _ms(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return "-"
    return f"{ms:.0f}ms" if ms < 1000 else f"{ms / 1000:.1f}s"


def peer_ages(st: Mapping[str, Any]) -> str:
    peers: Mapping[str, Any] = st.get("peers") or {}
    return " ".join(f"{n} {_ms(p.get('heartbeat_age_ms'))}" for n, p in sorted(peers.items()))


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def format_rate(r: float | None) -> str:
    if r is None:
        return "-"
    return f"{r:.1f}" if r < 10 else f"{r:.0f}"


def node_row(
    st: Mapping[str, Any], heartbeat_interval_ms: int, rate_text: str = "-", spark: str = ""
) -> NodeRow:
    reachable = st.get("state") != UNREACHABLE
    digest = st.get("digest")
    return NodeRow(
        name=str(st.get("name")),
        reachable=reachable,
        role=_text(st.get("role")),
        state=_text(st.get("state")),
        epoch=_text(st.get("epoch")),
        last_lsn=_text(st.get("last_lsn")),
        committed_lsn=_text(st.get("committed_lsn")),
        flushed_lsn=_text(st.get("flushed_lsn")),
        lag=_text(st.get("lag")),
        link=_text(st.get("replication_link")),
        health=link_health(st, heartbeat_interval_ms) if reachable else dict.fromkeys(LINKS, "-"),
        peers=peer_ages(st) or "-",
        clients=_text(st.get("clients")),
        digest=str(digest)[:12] if digest else "-",
        rate=rate_text,
        spark=spark,
    )


def node_transitions(st: Mapping[str, Any]) -> list[Transition]:
    name = str(st.get("name"))
    return [
        Transition(float(t["time"]), name, str(t["from"]), str(t["to"]), str(t["why"]), t["epoch"])
        for t in st.get("transitions") or ()
    ]


def merge_transitions(
    known: Iterable[Transition], new: Iterable[Transition], keep: int = 200
) -> list[Transition]:
    """Every poll returns each node's recent changes again; the union, oldest
    first, keeps each once, and keeps those of nodes that have since died."""
    return sorted(set(known) | set(new), key=lambda t: (t.time, t.node, t.dst))[-keep:]


@dataclass
class WatchModel:
    """What `watch` remembers between polls: counter readings, rate history,
    the merged state changes and who answered last time."""

    heartbeat_interval_ms: int
    history: int = HISTORY
    keep: int = 200
    samples: dict[str, Sample] = field(default_factory=dict)
    rates: dict[str, deque[float | None]] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    last_seen: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def update(self, statuses: Sequence[Mapping[str, Any]], now: float, wall: float) -> Frame:
        rows: list[NodeRow] = []
        fresh: list[Transition] = []
        for st in statuses:
            name = str(st.get("name"))
            cur, prev = sample_of(st, now), self.samples.get(name)
            r = rate(prev, cur)
            if cur is not None:
                self.samples[name] = cur  # kept while unreachable: a pause is not a restart
            hist = self.rates.setdefault(name, deque(maxlen=self.history))
            if prev is not None or cur is None:  # a first reading has no rate, a gap has
                hist.append(r)
            rows.append(node_row(st, self.heartbeat_interval_ms, format_rate(r), sparkline(hist)))
            fresh += node_transitions(st)
            fresh += self._seen_change(name, st, wall)
        self.transitions = merge_transitions(self.transitions, fresh, self.keep)
        return Frame(rows, list(self.transitions), wall)

    def _seen_change(self, name: str, st: Mapping[str, Any], wall: float) -> list[Transition]:
        """A node cannot report its own death, so the watcher records when it
        stops and starts answering."""
        before = self.last_seen.get(name)
        self.last_seen[name] = st
        if before is None or (before.get("state") == UNREACHABLE) == (st["state"] == UNREACHABLE):
            return []
        if st["state"] == UNREACHABLE:
            return [Transition(wall, name, str(before["state"]), UNREACHABLE, "no reply", None)]
        return [Transition(wall, name, UNREACHABLE, str(st["state"]), "replies", st.get("epoch"))]


# --------------------------------------------------------------- rendering


def make_console(file: IO[str] | None = None) -> Console:
    """Off a terminal (pipes, tests) rich would assume 80 columns and cut cells."""
    out = file or sys.stdout
    console = Console(file=out)
    if not console.is_terminal and console.width < MIN_WIDTH:
        console = Console(file=out, width=MIN_WIDTH)
    return console


def _styled(value: str, styles: Mapping[str, str]) -> Text:
    return Text(value, style=styles.get(value, ""))


def table(rows: Sequence[NodeRow], title: str, rates: bool) -> Table:
    t = Table(
        title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title_justify="left"
    )
    right = ("epoch", "last lsn", "committed", "flushed", "lag", "clients")
    heads = ["node", "role", "state", *right[:5], "link", *LINKS, "peer hb", "clients", "digest"]
    if rates:
        heads += ["req/s", "history"]
    for h in heads:
        t.add_column(h, justify="right" if h in (*right, "req/s") else "left", no_wrap=True)
    for r in rows:
        cells: list[Text] = [
            Text(r.name, style="bold"),
            Text(r.role),
            _styled(r.state, STATE_STYLES),
            *(Text(v) for v in (r.epoch, r.last_lsn, r.committed_lsn, r.flushed_lsn, r.lag)),
            Text(r.link),
            *(_styled(r.health.get(lk, "-"), HEALTH_STYLES) for lk in LINKS),
            Text(r.peers),
            Text(r.clients),
            Text(r.digest),
        ]
        if rates:
            cells += [Text(r.rate), Text(r.spark, style="cyan")]
        t.add_row(*cells, style=None if r.reachable else "grey50")
    return t


def transitions_table(items: Sequence[Transition]) -> Table:
    t = Table(title="state changes (newest last)", box=None, pad_edge=False, title_justify="left")
    for h in ("time", "node", "change", "why", "epoch"):
        t.add_column(h, no_wrap=True)
    for tr in items:
        clock = (
            time.strftime("%H:%M:%S", time.localtime(tr.time)) + f".{int(tr.time % 1 * 1000):03d}"
        )
        change = Text()
        change.append(tr.src, style=STATE_STYLES.get(tr.src, ""))
        change.append(" -> ")
        change.append(tr.dst, style=STATE_STYLES.get(tr.dst, ""))
        t.add_row(
            Text(clock), Text(tr.node, style="bold"), change, Text(tr.why), Text(_text(tr.epoch))
        )
    return t


def render(frame: Frame, title: str, max_transitions: int) -> RenderableType:
    parts: list[RenderableType] = [table(frame.rows, title, rates=True)]
    shown = frame.transitions[-max_transitions:] if max_transitions > 0 else []
    if shown:
        parts += [Text(""), transitions_table(shown)]
    return Group(*parts)
