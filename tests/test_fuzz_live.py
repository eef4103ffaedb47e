"""Bad frames at a live two-node cluster (issue 12.3): `tools/fuzz` for a few
seconds, and the reproducers of what it found in zmqfail/node/ (fixed with
issue 15: each stopped or misled a node)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq
from conftest import ROOT, MakeCluster, Procs, wait_for

from zmqfail.cluster import Cluster
from zmqfail.failover.state import Role, State
from zmqfail.protocol import CommitRequest, ReplRecords

pytestmark = [pytest.mark.timeout(300), pytest.mark.process]


def test_tools_fuzz_leaves_the_cluster_as_it_was(tmp_path: Path, procs: Procs) -> None:
    out = tmp_path / "summary.json"
    cmd = [sys.executable, str(ROOT / "tools" / "fuzz.py"), "--seconds", "4", "--rate", "300"]
    # At least 300 frames, however slowly a loaded machine sends them.
    cmd += ["--min-frames", "300"]
    # 600 ms dead time: on a loaded test machine only what the frames do counts.
    cmd += ["--heartbeat-misses", "20", "--dir", str(tmp_path / "fz"), "--json", str(out)]
    p = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        text, _ = p.communicate(timeout=270)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        raise
    assert p.returncode == 0, text
    summary = json.loads(out.read_text())
    assert summary["failures"] == []
    assert summary["sent_total"] >= 300 and summary["orders_answered"] > 0
    kinds = {key.split(" -> ")[1] for key in summary["sent"]}
    assert kinds == {"client", "control", "records", "ack", "heartbeat", "metrics"}
    assert summary["sent"].get("bad-http -> metrics", 0) > 0
    for name in ("a", "b"):
        c = summary["counters"][name]
        assert c["bad_frames"] > 0 and c["repl_bad_frames"] > 0, c  # counted, not fatal
    assert "OK: both nodes up" in text


# --- reproducers of node bugs tools/fuzz found ---------------------------------


@pytest.fixture
def pair(cluster_dir: Callable[..., Path], cluster: MakeCluster) -> Cluster:
    cl = cluster(cluster_dir(failover__heartbeat_misses=20))
    cl.start("a", "b")
    want = [(Role.PRIMARY, State.NORMAL), (Role.BACKUP, State.NORMAL)]
    cl.wait_all(lambda rows: [(r.role, r.state) for r in rows] == want, "a primary, b backup", 30)
    return cl


Roles = list[tuple[Role | None, State | None, int | None]]


def roles(cl: Cluster) -> Roles:
    return [(r.role, r.state, r.epoch) for r in cl.statuses(timeout=1.0)]


def stays(cl: Cluster, before: Roles, seconds: float) -> None:
    """Both nodes keep answering status, in the same role, state and epoch."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert roles(cl) == before
        time.sleep(0.1)


def send_raw(endpoint: str, kind: int, parts: list[bytes]) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 1000)
    s.connect(endpoint)
    s.send_multipart(parts)
    s.close()
    ctx.term()  # waits (up to the linger) until the frames are out


def test_extra_message_parts_on_the_ack_socket_do_not_stop_the_backup(
    pair: Cluster, procs: Procs
) -> None:
    send_raw(pair.cfg.node("b").main.ack, zmq.DEALER, [b"", b"x", b"y"])
    b = pair.procs["b"]
    wait_for(lambda: b.poll() is not None or roles(pair)[1][1] is State.NORMAL, 5, "b")
    assert b.poll() is None, procs.log_text("node-b")[-2000:]
    assert roles(pair)[1][:2] == (Role.BACKUP, State.NORMAL)


def test_a_request_without_delimiter_does_not_block_the_primary(pair: Cluster) -> None:
    before = roles(pair)
    send_raw(pair.cfg.node("a").main.ack, zmq.DEALER, [b"x"])
    stays(pair, before, 1.5)


def test_a_newer_epoch_from_an_unknown_sender_changes_nothing(pair: Cluster) -> None:
    before = roles(pair)
    epoch = before[0][2]
    assert epoch is not None
    forged = ReplRecords("mallory", epoch + 1, 10**6, []).encode()
    send_raw(pair.cfg.node("b").main.records, zmq.PUSH, [forged])
    commit = CommitRequest("mallory", epoch + 1, 0).encode()
    send_raw(pair.cfg.node("a").main.ack, zmq.DEALER, [b"", commit])
    stays(pair, before, 1.5)  # a step-down comes at once, within the next heartbeat
