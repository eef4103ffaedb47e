"""`zmqfail witness` as a real process: elects and refuses, keeps its epoch
across kill -9 and honours a lease it may have granted for a lease time
after the restart, survives malformed frames, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from conftest import Procs, wait_for
from witnesskit import Asker, status_of

from zmqfail import config
from zmqfail.errors import ZmqfailError
from zmqfail.netutil import free_base_port
from zmqfail.protocol import ControlReply, decode
from zmqfail.witness.logic import Granted
from zmqfail.witness.store import Store

pytestmark = [pytest.mark.timeout(60), pytest.mark.process]

LEASE_MS = 3000  # the restarted witness must be asked within it, on a busy machine


@pytest.fixture
def zctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def witness_config(tmp: Path, lease_ms: int = LEASE_MS) -> tuple[Path, config.ClusterConfig]:
    text = config.render(2, free_base_port(25), witness=True)
    text = re.sub(r"^lease_ms = \d+", f"lease_ms = {lease_ms}", text, flags=re.M)
    path = tmp / "zmqfail.toml"
    path.write_text(text)
    cfg = config.load(path)
    assert cfg.witness is not None and cfg.witness.lease_ms == lease_ms
    return path, cfg


def up(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> dict[str, object]:
    def ask() -> dict[str, object] | None:
        try:
            return status_of(ctx, endpoint)
        except ZmqfailError:
            return None

    return wait_for(ask, 20, "the witness to answer")  # type: ignore[return-value]


def test_a_witness_process_elects_refuses_and_keeps_its_word_across_kill_9(
    tmp_path: Path, procs: Procs, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    path, cfg = witness_config(tmp_path)
    assert cfg.witness is not None
    ep = cfg.witness.endpoint
    w = procs.start("witness", "--config", str(path), log="witness")
    up(zctx, ep)
    a, b = Asker(zctx, ep, "a"), Asker(zctx, ep, "b")
    assert a.elect(1, 0).granted
    assert a.lease(1).granted
    assert "a holds a lease" in b.elect(2, 1).why  # b, cut from a, may not take over
    # Frames that are not asks: answered with an error or dropped; it lives on.
    a.send_raw(b"\x00garbage")
    rep = decode(a.recv())
    assert isinstance(rep, ControlReply) and not rep.ok and "bad frame" in rep.error
    a.send_raw(b"x", b"y", b"z")
    assert status_of(zctx, ep)["bad_frames"] == 2

    # kill -9 right after a grant: the grant was stored before it was answered.
    os.kill(w.pid, signal.SIGKILL)
    assert w.wait(10) == -signal.SIGKILL
    w = procs.start("witness", "--config", str(path), log="witness")
    up(zctx, ep)
    t0 = time.monotonic()  # before the witness reads its clock for this status
    st = status_of(zctx, ep)
    assert (st["epoch"], st["leader"], st["lease_holder"]) == (1, "a", "a"), st
    assert st["bad_frames"] == 0 and st["elections"] == 0  # counters are the process's own
    # The lease it honours runs a lease time from its start.
    assert abs(st["lease_left_ms"] - (LEASE_MS - st["up_s"] * 1000)) <= 1, st
    assert st["lease_left_ms"] > 1000, f"asked too late to see the lease: {st}"
    # It cannot know whether it renewed a's lease just before dying: nobody
    # renewed it since the restart, yet b is refused...
    no = b.elect(2, 1)
    assert not no.granted and "a holds a lease" in no.why, no
    # ...until the lease it may have granted has run out; then b is elected.
    wait_for(lambda: b.elect(2, 1).granted, 15, "b elected after a's lease")
    assert time.monotonic() - t0 >= st["lease_left_ms"] / 1000
    old = a.lease(1)  # a learns it was replaced
    assert (old.granted, old.epoch, old.leader) == (False, 2, "b")
    assert not a.elect(3, 1).granted  # a stale a may not lead

    w.send_signal(signal.SIGTERM)
    assert w.wait(10) == 0
    log = procs.log_text("witness")
    assert "elected a at epoch 1 (it knows epoch 0)" in log
    assert "refused election of b at epoch 2 (it knows epoch 1): a holds a lease" in log
    assert "epoch 1 granted to a, who may still hold a lease" in log
    assert "elected b at epoch 2" in log and "witness stopped at epoch 2 (leader b)" in log
    assert "refused lease of a at epoch 1: the leader is b at epoch 2" in log
    assert not (cfg.witness.data_dir / "witness.pid").exists()
    again = Store(cfg.witness.data_dir)
    assert again.open() == Granted(2, "b")
    again.close()
