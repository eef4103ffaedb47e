"""Prometheus metrics: what a scrape shows for a status (pure), the latency
histograms' accounting, and the /metrics of a running pair scraped over HTTP,
with a clean stop and a kill -9 of the backup told apart in the primary's log
and metrics."""

from __future__ import annotations

import os
import re
import signal
import socket
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BUY, Procs, run_zmqfail, wait_for
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from zmqfail import config
from zmqfail.client.control import node_status
from zmqfail.client.sync import Client
from zmqfail.core.status import BackupSeen, NodeStatus, PeerSeen
from zmqfail.errors import ConfigError
from zmqfail.failover.state import Role, State
from zmqfail.node.metrics import NodeMetrics, StatusCollector

pytestmark = pytest.mark.timeout(90)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def primary_status() -> NodeStatus:
    return NodeStatus(
        name="a",
        role=Role.PRIMARY,
        state=State.NORMAL,
        epoch=3,
        last_lsn=120,
        committed_lsn=118,
        flushed_lsn=100,
        snapshot_lsn=50,
        lag=20,
        clients=2,
        held_replies=5,
        uptime=12.5,
        counters={
            "requests": 500,
            "replies": 490,
            "duplicates": 7,
            "rejected": 4,
            "stale": 1,
            "expired": 2,
            "app_failures": 0,
            "takeovers": 1,
            "bad_frames": 3,
            "hb_bad_frames": 6,
            "control_bad_frames": 1,
        },
        app={"name": "orders"},
        sessions={"sessions": 2},
        peers={
            "b": PeerSeen(heartbeat_age_ms=12.0, role=Role.BACKUP, state=State.NORMAL, stopped=True)
        },
        backups={"b": BackupSeen(100, True, True, "main", {"main": True, "failsafe": False}, True)},
    )


def scrape(st: NodeStatus | None) -> Samples:
    reg = CollectorRegistry()
    c = StatusCollector("prod")
    c.status, c.updated = st, 1000.0
    reg.register(c)
    return parse(generate_latest(reg).decode())


EXPECTED: list[tuple[str, dict[str, str], float]] = [
    ("zmqfail_node_info", {"node": "a", "cluster": "prod", "app": "orders"}, 1),
    ("zmqfail_role", {"role": "primary"}, 1),
    ("zmqfail_role", {"role": "backup"}, 0),
    ("zmqfail_state", {"state": "normal"}, 1),
    ("zmqfail_state", {"state": "primary_only"}, 0),
    ("zmqfail_serving", {}, 1),
    ("zmqfail_epoch", {}, 3),
    ("zmqfail_failover_paused", {}, 0),
    ("zmqfail_last_lsn", {}, 120),
    ("zmqfail_committed_lsn", {}, 118),
    ("zmqfail_flushed_lsn", {}, 100),
    ("zmqfail_lag_records", {}, 20),
    ("zmqfail_backup_held_lsn", {"backup": "b"}, 100),
    ("zmqfail_backup_lag_records", {"backup": "b"}, 20),
    ("zmqfail_backup_in_sync", {"backup": "b"}, 1),
    ("zmqfail_backup_leaving", {"backup": "b"}, 1),
    ("zmqfail_backup_link_up", {"backup": "b", "link": "main"}, 1),
    ("zmqfail_backup_link_up", {"backup": "b", "link": "failsafe"}, 0),
    ("zmqfail_peer_heartbeat_age_seconds", {"peer": "b"}, 0.012),
    ("zmqfail_peer_stopped", {"peer": "b"}, 1),
    ("zmqfail_requests_total", {}, 500),
    ("zmqfail_replies_total", {}, 490),
    ("zmqfail_duplicates_total", {}, 7),
    ("zmqfail_failovers_total", {}, 1),
    ("zmqfail_rejects_total", {"reason": "rejected"}, 4),
    ("zmqfail_rejects_total", {"reason": "expired"}, 2),
    ("zmqfail_bad_frames_total", {"channel": "client"}, 3),
    ("zmqfail_bad_frames_total", {"channel": "heartbeat"}, 6),
    ("zmqfail_bad_frames_total", {"channel": "control"}, 1),
    ("zmqfail_status_timestamp_seconds", {}, 1000.0),
]


def test_a_primarys_status_as_metrics() -> None:
    s = scrape(primary_status())
    for name, labels, want in EXPECTED:
        assert value(s, name, **labels) == pytest.approx(want), (name, labels)
    assert sum(v for (n, _), v in s.items() if n == "zmqfail_state") == 1  # one state at a time


def test_a_backup_shows_no_backup_series_and_nothing_before_a_status() -> None:
    st = primary_status()
    st.role, st.state, st.backups = Role.BACKUP, State.SYNCING, None
    s = scrape(st)
    assert value(s, "zmqfail_role", role="backup") == 1
    assert value(s, "zmqfail_serving") == 0
    st.failover_paused = True
    assert value(scrape(st), "zmqfail_failover_paused") == 1
    assert not [k for k in s if k[0].startswith("zmqfail_backup_")]
    assert scrape(None) == {}


def test_round_trips_from_question_to_answer() -> None:
    m = NodeMetrics("prod", "127.0.0.1:1")  # not started: no port is bound
    rtt = "zmqfail_replication_round_trip_seconds"

    def count(link: str) -> float | None:
        return m.registry.get_sample_value(f"{rtt}_count", {"backup": "b", "link": link})

    m.asked([("b", "main", b"")], [], 10.0)
    m.answered("b", "main", 10.004)
    assert count("main") == 1
    assert m.registry.get_sample_value(f"{rtt}_sum", {"backup": "b", "link": "main"}) == (
        pytest.approx(0.004)
    )
    m.answered("b", "main", 10.5)  # no question outstanding: not a round trip
    assert count("main") == 1
    m.asked([("b", "failsafe", b"")], [], 11.0)
    m.asked([], [("b", "failsafe")], 11.2)  # the link was reset: its question is void
    m.answered("b", "failsafe", 11.3)
    assert count("failsafe") is None


def test_each_fsync_and_flush_is_timed() -> None:
    m = NodeMetrics("prod", "127.0.0.1:1")
    fd, path = tempfile.mkstemp()
    try:
        m.io.write(fd, b"x" * 100)
        m.io.fsync(fd)
        m.io.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(path)
    assert m.registry.get_sample_value("zmqfail_fsync_seconds_count") == 2
    m.flush_seconds.observe(0.003)
    assert m.registry.get_sample_value("zmqfail_flush_seconds_bucket", {"le": "0.0025"}) == 0
    assert m.registry.get_sample_value("zmqfail_flush_seconds_bucket", {"le": "0.005"}) == 1


def test_config_metrics_key(tmp_path: Path) -> None:
    text = config.render(2, 21000)
    cfg = config.loads(text, tmp_path)
    assert [n.metrics for n in cfg.nodes] == ["127.0.0.1:21008", "127.0.0.1:21018"]
    off = config.loads(re.sub(r"^metrics = .*$", "", text, flags=re.M), tmp_path)
    assert [n.metrics for n in off.nodes] == [None, None]
    for bad, says in (
        ('"21008"', "host:port"),
        ('"127.0.0.1:70000"', "out of range"),
        ("21008", "host:port"),
        ('"127.0.0.1:21000"', "used twice"),  # a's client port
    ):
        wrong = text.replace('metrics = "127.0.0.1:21008"', f"metrics = {bad}", 1)
        with pytest.raises(ConfigError, match=says):
            config.loads(wrong, tmp_path)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        body: bytes = r.read()
        return body.decode()


def test_a_running_pair_scraped_and_a_clean_stop_told_from_a_kill(
    tmp_path: Path, procs: Procs, cluster_dir: Callable[..., Path]
) -> None:
    path = cluster_dir(2)
    cfg = config.load(path)
    a, b = cfg.node("a"), cfg.node("b")
    assert a.metrics and b.metrics
    # b's metrics port is taken: b logs it and serves on without metrics.
    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    host, port = b.metrics.rsplit(":", 1)
    taken.bind((host, int(port)))
    taken.listen()
    url = f"http://{a.metrics}/metrics"
    try:
        quiet = ("--no-log-repeats",)  # every line the node logs, nothing held back
        debug = ("--log-level", "debug")
        procs.start("node", "--config", str(path), "--name", "a", *quiet, *debug, log="node-a")
        node_b = procs.start("node", "--config", str(path), "--name", "b", *quiet, log="node-b")
        wait_for(lambda: node_status(b).state is State.NORMAL, 30, "b in sync")
        assert "metrics: cannot serve on" in procs.log_text("node-b")
        with Client(cfg, timeout=10.0) as c:
            for _ in range(5):
                assert c.request(BUY).status == "ok"
            assert c.request({**BUY, "instrument": "NOPE"}).status == "rejected"

        def scraped() -> Samples | None:
            s = parse(get(url))  # once a status from after the last request is handed over
            return s if value(s, "zmqfail_rejects_total", reason="rejected") else None

        s = wait_for(scraped, 10, "a's metrics to count the requests")
        assert isinstance(s, dict)
        assert value(s, "zmqfail_role", role="primary") == 1
        assert value(s, "zmqfail_state", state="normal") == 1
        assert value(s, "zmqfail_backup_in_sync", backup="b") == 1
        assert value(s, "zmqfail_rejects_total", reason="rejected") == 1
        assert (value(s, "zmqfail_requests_total") or 0) >= 7  # register + 6 requests
        assert value(s, "zmqfail_applied_records_total") == 7  # the rejected write is logged too
        assert (value(s, "zmqfail_flush_seconds_count") or 0) > 0
        assert (value(s, "zmqfail_fsync_seconds_count") or 0) > 0
        trips = sum(v for (n, lb), v in s.items() if n.endswith("round_trip_seconds_count"))
        assert trips >= 6  # each acknowledged write waited for b's answer
        assert value(s, "process_resident_memory_bytes")

        # A clean stop: a logs it as one, not as a silence, and says so in health.
        # (On a loaded machine a slow answer may have reset a link before: the
        # lines that count are those from b's stop on.)
        before = len(procs.log_text("node-a"))
        node_b.send_signal(signal.SIGTERM)
        assert node_b.wait(timeout=20) == 0

        def since() -> str:
            return procs.log_text("node-a")[before:]

        wait_for(lambda: "running alone" in procs.log_text("node-a"), 30, "a to run alone")
        log_a = procs.log_text("node-a")
        assert "INFO zmqfail.replication: a: backup b stopped cleanly; running alone" in log_a
        assert "silent on every link" not in log_a
        wait_for(lambda: value(parse(get(url)), "zmqfail_peer_stopped", peer="b"), 15, "stopped")
        health = run_zmqfail("health", "--config", str(path))
        assert health.returncode == 3
        assert "b stopped (clean)" in health.stdout
        # While b is down a resets its links again and again (DEBUG lines, as
        # it runs at --log-level debug), but says so once per link at INFO.
        wait_for(lambda: since().count("timed out again") >= 6, 20, "retries")
        infos = re.findall(r"INFO .*link to b timed out; reset", since())
        assert len(infos) <= 2  # at most once per link (none if it was down already)
        # b restarts and catches up: each link is said to answer again.
        procs.start("node", "--config", str(path), "--name", "b", *quiet, log="node-b2")
        wait_for(lambda: node_status(b).state is State.NORMAL, 30, "b back in sync")
        wait_for(lambda: "answers again (after " in procs.log_text("node-a"), 30, "link back")
        # kill -9 is a failure: the same primary now warns.
        pid = node_status(b).pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: "silent on every link" in procs.log_text("node-a"), 30, "a's warning")
        assert re.search(
            r"WARNING zmqfail\.replication: a: backup b silent on every link",
            procs.log_text("node-a"),
        )
    finally:
        taken.close()


def test_every_metric_name_is_documented() -> None:
    m = NodeMetrics("prod", "127.0.0.1:1")
    m.update(primary_status(), 0.0)
    m.round_trip.labels("b", "main").observe(0.001)
    names = {
        fam.name
        for fam in text_string_to_metric_families(generate_latest(m.registry).decode())
        if fam.name.startswith("zmqfail_") and not fam.name.endswith("_created")
    }  # (_created: the library's own companion of every histogram)
    assert {"zmqfail_flush_seconds", "zmqfail_backup_in_sync", "zmqfail_rejects"} <= names
    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    # Counters are documented with the _total a scrape shows.
    missing = [n for n in names if f"`{n}`" not in doc and f"`{n}_total`" not in doc]
    assert not missing, f"docs/operations.md does not name: {missing}"


def test_the_server_serves_until_closed_and_a_taken_port_is_no_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from zmqfail.netutil import free_base_port

    endpoint = f"127.0.0.1:{free_base_port(1)}"
    m = NodeMetrics("prod", endpoint)
    m.update(primary_status(), 0.0)
    assert m.start()
    try:
        assert value(parse(get(f"http://{endpoint}/metrics")), "zmqfail_epoch") == 3
        other = NodeMetrics("prod", endpoint)
        assert not other.start()  # the port is taken: False and an ERROR, not an exception
        assert f"metrics: cannot serve on {endpoint}" in caplog.text
    finally:
        m.close()
    with pytest.raises(OSError):
        get(f"http://{endpoint}/metrics")
