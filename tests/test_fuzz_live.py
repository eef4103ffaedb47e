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
from typing import Any

import pytest
import zmq
from conftest import ROOT, Procs, wait_for

from zmqfail import config
from zmqfail.client.control import node_status
from zmqfail.protocol import CommitRequest, ReplRecords

pytestmark = [pytest.mark.timeout(180), pytest.mark.process]


def test_tools_fuzz_leaves_the_cluster_as_it_was(tmp_path: Path, procs: Procs) -> None:
    out = tmp_path / "summary.json"
    cmd = [sys.executable, str(ROOT / "tools" / "fuzz.py"), "--seconds", "4", "--rate", "300"]
    # 600 ms dead time: on a loaded test machine only what the frames do counts.
    cmd += ["--heartbeat-misses", "20", "--dir", str(tmp_path / "fz"), "--json", str(out)]
    p = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        text, _ = p.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        raise
    assert p.returncode == 0, text
    summary = json.loads(out.read_text())
    assert summary["failures"] == []
    assert summary["sent_total"] >= 300 and summary["orders_answered"] > 0
    kinds = {key.split(" -> ")[1] for key in summary["sent"]}
    assert kinds == {"client", "control", "records", "ack", "heartbeat"}
    for name in ("a", "b"):
        c = summary["counters"][name]
        assert c["bad_frames"] > 0 and c["repl_bad_frames"] > 0, c  # counted, not fatal
    assert "OK: both nodes up" in text


# --- reproducers of node bugs tools/fuzz found ---------------------------------


@pytest.fixture
def pair(cluster_dir: Callable[..., Path], procs: Procs) -> config.ClusterConfig:
    cfg = config.load(cluster_dir(failover__heartbeat_misses=20))
    for name in ("a", "b"):
        procs.node(cfg.path or Path(), name)

    def settled() -> bool:
        rows = [node_status(n, digest=False, timeout=0.5) for n in cfg.nodes]
        return [(r.get("role"), r["state"]) for r in rows] == [
            ("primary", "normal"),
            ("backup", "normal"),
        ]

    wait_for(settled, 30, "a primary and b backup, both normal")
    return cfg


def roles(cfg: config.ClusterConfig) -> list[tuple[Any, Any, Any]]:
    rows = [node_status(n, digest=False, timeout=1.0) for n in cfg.nodes]
    return [(r.get("role"), r["state"], r["epoch"]) for r in rows]


def stays(cfg: config.ClusterConfig, before: list[tuple[Any, Any, Any]], seconds: float) -> None:
    """Both nodes keep answering status, in the same role, state and epoch."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert roles(cfg) == before
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
    pair: config.ClusterConfig, procs: Procs
) -> None:
    send_raw(pair.node("b").main.ack, zmq.DEALER, [b"", b"x", b"y"])
    wait_for(lambda: procs.procs[1].poll() is not None or roles(pair)[1][1] == "normal", 5, "b")
    assert procs.procs[1].poll() is None, procs.log_text("node-b")[-2000:]
    assert roles(pair)[1][:2] == ("backup", "normal")


def test_a_request_without_delimiter_does_not_block_the_primary(
    pair: config.ClusterConfig,
) -> None:
    before = roles(pair)
    send_raw(pair.node("a").main.ack, zmq.DEALER, [b"x"])
    stays(pair, before, 1.5)


def test_a_newer_epoch_from_an_unknown_sender_changes_nothing(
    pair: config.ClusterConfig,
) -> None:
    before = roles(pair)
    epoch = int(before[0][2])
    forged = ReplRecords("mallory", epoch + 1, 10**6, []).encode()
    send_raw(pair.node("b").main.records, zmq.PUSH, [forged])
    commit = CommitRequest("mallory", epoch + 1, 0).encode()
    send_raw(pair.node("a").main.ack, zmq.DEALER, [b"", commit])
    stays(pair, before, 1.5)  # a step-down comes at once, within the next heartbeat
