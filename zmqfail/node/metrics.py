"""A node's Prometheus metrics, served over HTTP by a thread that only reads.

The node's loop is single-threaded and its core must not be touched from
another thread, so a scrape never asks the core anything: after a turn, at
most every `UPDATE_EVERY` seconds, the shell hands over a fresh `NodeStatus`
(the same object `zmqfail status` reads), and a scrape turns the last one into
metric families (`families`, pure). Latencies are histograms observed where
they are measured: a flush (write and fsync of one group) when the disk
writer reports it, each fsync of a log file around the call, and a
replication round trip from the moment a commit request leaves for a backup
to the moment its answer is readable. Names and meanings: docs/operations.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app
from prometheus_client.registry import Collector

from zmqfail.core.status import NodeStatus
from zmqfail.failover.state import Role, State
from zmqfail.node import clock
from zmqfail.txlog.segments import LogIO

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

log = logging.getLogger("zmqfail.node")

UPDATE_EVERY = 0.5  # seconds between status hand-overs: a scrape is at most this old
SHUTDOWN_POLL = 0.05  # seconds: how long a stopping node may wait for the HTTP thread
NS = "zmqfail"

# (status counter, metric name without _total, help). Counters restart from 0
# with the process, as Prometheus expects of a counter.
COUNTERS = (
    (
        "requests",
        "requests",
        "Client messages taken (requests, each of a batch too, registrations, hellos)",
    ),
    (
        "replies",
        "replies",
        "Messages sent to clients (replies, each of a batch too, refusals, recovery signals)",
    ),
    ("duplicates", "duplicates", "Requests answered from a stored reply (a resend)"),
    ("applied", "applied_records", "Transaction records applied to the tables"),
    ("takeovers", "failovers", "Times this node took over as primary"),
    ("votes", "votes", "Client votes for a takeover counted"),
    ("flushes", "flushes", "Flushes of the transaction log"),
    ("snapshots", "snapshots", "Snapshots written"),
    ("snapshots_sent", "snapshots_sent", "Table images sent to a backup that lacked records"),
    (
        "link_resets",
        "link_resets",
        "Replication links reset: a commit went unanswered for link_timeout_ms",
    ),
    ("quarantined", "quarantined_records", "Records set aside as held by no other server"),
    ("pauses", "pauses", "Stalls of this node's own loop longer than half the dead time"),
    (
        "undeliverable",
        "undeliverable_replies",
        "Frames to clients (a reply or a batch of replies) that could not be queued",
    ),
    ("ack_gaps", "lost_ack_gaps", "Clients told that requests they were answered are lost"),
    ("ack_gap_ids", "lost_ack_msg_ids", "Width of those msg_id ranges (an upper bound)"),
    ("curve_refused", "curve_refused", "CURVE handshakes refused: a key not on the channel's list"),
)
# reason label -> status counter
REJECTS = {
    "rejected": "rejected",  # the application said no (a bad order, no funds)
    "stale": "stale",  # a msg_id older than the stored replies
    "expired": "expired",  # the session is gone
    "app_error": "app_failures",  # the application raised
    "too_many_in_flight": "too_many_in_flight",  # the client's bound on unanswered requests
}
# channel label -> status counter
BAD_FRAMES = {
    "client": "bad_frames",
    "replication": "repl_bad_frames",
    "replication_stale": "repl_stale_frames",
    "ack": "repl_bad_acks",
    "heartbeat": "hb_bad_frames",
    "control": "control_bad_frames",
}
FLUSH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
RTT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def _gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        g = GaugeMetricFamily(f"{NS}_{name}", doc)
        g.add_metric([], float(value))
        yield g


def families(st: NodeStatus, cluster: str) -> Iterator[Metric]:
    """The metric families of one status (pure: what a scrape shows)."""
    info = GaugeMetricFamily(
        f"{NS}_node_info",
        "This node: its name, cluster and application",
        labels=["node", "cluster", "app"],
    )
    info.add_metric([st.name, cluster, str(st.app.get("name", ""))], 1.0)
    yield info
    role = GaugeMetricFamily(f"{NS}_role", "1 for the node's role", labels=["role"])
    for r in Role:
        role.add_metric([r.value], 1.0 if st.role is r else 0.0)
    yield role
    state = GaugeMetricFamily(f"{NS}_state", "1 for the node's failover state", labels=["state"])
    for s in State:
        state.add_metric([s.value], 1.0 if st.state is s else 0.0)
    yield state
    yield from _gauge("serving", "1 if this node serves clients now", 1.0 if st.active else 0.0)
    yield from _gauge("epoch", "The node's epoch", st.epoch)
    paused = 1.0 if st.failover_paused else 0.0
    yield from _gauge("failover_paused", "1 while automatic failover is paused here", paused)
    yield from _gauge("last_lsn", "Last transaction record held", st.last_lsn)
    yield from _gauge("committed_lsn", "Last record committed (replies released)", st.committed_lsn)
    yield from _gauge("flushed_lsn", "Last record on this node's disk", st.flushed_lsn)
    yield from _gauge("snapshot_lsn", "Record of the newest snapshot", st.snapshot_lsn)
    yield from _gauge(
        "lag_records", "Records the backup (on a primary: the slowest) is behind", st.lag
    )
    yield from _gauge("clients", "Clients heard from in the last 5 s", st.clients)
    yield from _gauge("held_replies", "Replies waiting for their record's commit", st.held_replies)
    yield from _gauge("sessions", "Live client sessions", st.sessions.get("sessions"))
    yield from _gauge("uptime_seconds", "Seconds since the node started", st.uptime)
    yield from _backups(st)
    yield from _peers(st)
    counters = st.counters
    for key, name, doc in COUNTERS:
        c = CounterMetricFamily(f"{NS}_{name}", doc)
        c.add_metric([], float(counters.get(key, 0)))
        yield c
    rejects = CounterMetricFamily(
        f"{NS}_rejects", "Requests answered without being done", labels=["reason"]
    )
    for reason, key in REJECTS.items():
        rejects.add_metric([reason], float(counters.get(key, 0)))
    yield rejects
    bad = CounterMetricFamily(
        f"{NS}_bad_frames",
        "Malformed or unexpected frames, counted and dropped or refused",
        labels=["channel"],
    )
    for channel, key in BAD_FRAMES.items():
        bad.add_metric([channel], float(counters.get(key, 0)))
    yield bad


def _backups(st: NodeStatus) -> Iterable[Metric]:
    if st.backups is None:
        return  # not replicating: the series disappear rather than lie
    held = GaugeMetricFamily(
        f"{NS}_backup_held_lsn", "Last record each backup confirmed", labels=["backup"]
    )
    lag = GaugeMetricFamily(
        f"{NS}_backup_lag_records", "Records each backup lacks", labels=["backup"]
    )
    sync = GaugeMetricFamily(
        f"{NS}_backup_in_sync",
        "1 if the backup holds every acknowledged record (it may take over)",
        labels=["backup"],
    )
    up = GaugeMetricFamily(
        f"{NS}_backup_link_up", "1 if the replication link answers", labels=["backup", "link"]
    )
    leaving = GaugeMetricFamily(
        f"{NS}_backup_leaving",
        "1 if the backup was dropped and has not yet confirmed it: the primary "
        "acknowledges nothing beyond what it holds",
        labels=["backup"],
    )
    last = st.last_lsn or 0
    for name, b in sorted(st.backups.items()):
        held.add_metric([name], float(b.held))
        lag.add_metric([name], float(max(0, last - b.held)))
        sync.add_metric([name], 1.0 if b.full_copy else 0.0)
        leaving.add_metric([name], 1.0 if b.leaving else 0.0)
        for link, ok in sorted(b.links_up.items()):
            up.add_metric([name, link], 1.0 if ok else 0.0)
    yield from (held, lag, sync, leaving, up)


def _peers(st: NodeStatus) -> Iterable[Metric]:
    age = GaugeMetricFamily(
        f"{NS}_peer_heartbeat_age_seconds",
        "Seconds since a heartbeat of each peer arrived",
        labels=["peer"],
    )
    stopped = GaugeMetricFamily(
        f"{NS}_peer_stopped",
        "1 if the peer said it stopped cleanly and has not been heard since",
        labels=["peer"],
    )
    for name, p in sorted(st.peers.items()):
        if p.heartbeat_age_ms is not None:
            age.add_metric([name], p.heartbeat_age_ms / 1000.0)
        stopped.add_metric([name], 1.0 if p.stopped else 0.0)
    yield from (age, stopped)


class StatusCollector(Collector):
    """Serves the last status handed over; the scrape thread only reads it."""

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self.status: NodeStatus | None = None  # replaced whole, never changed in place
        self.updated = 0.0  # wall clock of the status

    def collect(self) -> Iterator[Metric]:
        st = self.status
        if st is None:
            return
        yield from families(st, self.cluster)
        yield from _gauge(
            "status_timestamp_seconds",
            "When the loop last handed over its status (a stalled loop stops moving it)",
            self.updated,
        )


class TimedIO(LogIO):
    """The log's file calls, with each fsync timed."""

    def __init__(self, fsync_seconds: Histogram) -> None:
        self._hist = fsync_seconds

    def fsync(self, fd: int) -> None:
        t0 = clock.now()
        super().fsync(fd)
        self._hist.observe(clock.now() - t0)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is not news for the node's log


class NodeMetrics:
    """The registry of one node, its HTTP server, and the shell's hooks."""

    def __init__(self, cluster: str, endpoint: str) -> None:
        self.endpoint = endpoint
        self._wall_offset = clock.wall_offset()
        self.registry = CollectorRegistry(auto_describe=True)
        self.collector = StatusCollector(cluster)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)  # CPU, memory, open files of the process
        self.flush_seconds = Histogram(
            f"{NS}_flush_seconds",
            "Writing and fsyncing one group of records",
            buckets=FLUSH_BUCKETS,
            registry=self.registry,
        )
        self.fsync_seconds = Histogram(
            f"{NS}_fsync_seconds",
            "One fsync of a transaction log file",
            buckets=FLUSH_BUCKETS,
            registry=self.registry,
        )
        self.round_trip = Histogram(
            f"{NS}_replication_round_trip_seconds",
            "From sending a commit request to a backup to its answer",
            ["backup", "link"],
            buckets=RTT_BUCKETS,
            registry=self.registry,
        )
        self.io = TimedIO(self.fsync_seconds)
        self._asked: dict[tuple[str, str], float] = {}  # (backup, link) -> when asked
        # Each (backup, link)'s histogram child, looked up once: `labels()`
        # takes a lock and builds a key, and an answer is timed before the
        # turn that takes it (on the acknowledgement's path).
        self._rtt: dict[tuple[str, str], Any] = {}
        self._next_update = 0.0
        self._server: WSGIServer | None = None

    def start(self) -> bool:
        """Serve /metrics; False (and an ERROR in the log) if the port is taken.
        A node runs on without its metrics rather than not at all."""
        host, _, port = self.endpoint.rpartition(":")
        try:
            server = make_server(
                host, int(port), make_wsgi_app(self.registry), ThreadingWSGIServer, _Quiet
            )
        except OSError as exc:
            log.error(
                "metrics: cannot serve on %s (%s); running without metrics",
                self.endpoint,
                exc.strerror or exc,
            )
            return False
        # A short poll interval: a clean stop waits for the thread to notice.
        threading.Thread(
            target=server.serve_forever, args=(SHUTDOWN_POLL,), name="metrics", daemon=True
        ).start()
        self._server = server
        log.info("metrics on http://%s/metrics", self.endpoint)
        return True

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ------------------------------------------------------------ hooks
    def due(self, now: float) -> bool:
        return now >= self._next_update

    def update(self, st: NodeStatus, now: float) -> None:
        self._next_update = now + UPDATE_EVERY
        self.collector.status = st
        self.collector.updated = now + self._wall_offset  # the turn's own reading

    def flushed(self, seconds: float) -> None:
        self.flush_seconds.observe(seconds)

    def asked(
        self, commits: Iterable[tuple[str, str, Any]], resets: Iterable[tuple[str, str]], now: float
    ) -> None:
        """Commit requests about to leave (a reset link forgets its question)."""
        for key in resets:
            self._asked.pop(key, None)
        for peer, link, _data in commits:
            self._asked[(peer, link)] = now

    def answered(self, peer: str, link: str, now: float) -> None:
        t = self._asked.pop((peer, link), None)
        if t is not None:
            child = self._rtt.get((peer, link))
            if child is None:
                child = self._rtt[(peer, link)] = self.round_trip.labels(peer, link)
            child.observe(max(0.0, now - t))
