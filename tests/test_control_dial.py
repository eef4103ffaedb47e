"""Why a control call got no answer, and when it stops waiting: the
socket's monitor tells a refused connection (nothing listens: a node
killed on its own machine) and a refused handshake (CURVE keys) from
silence. A status reading stops at either at once; a command waits its
timeout, as a node starting up binds within it, and then says why."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from zmqfail import config
from zmqfail.client.control import call, node_status
from zmqfail.errors import Unavailable
from zmqfail.netutil import free_base_port
from zmqfail.protocol import ControlReply

pytestmark = pytest.mark.timeout(60)

LONG = 20.0  # a timeout the fast answers must come well within


def nowhere() -> str:
    return f"tcp://127.0.0.1:{free_base_port(1)}"


def test_a_status_reading_of_a_port_nothing_listens_on_ends_at_once(tmp_path: Path) -> None:
    cfg = config.loads(config.render(2, free_base_port(20)), tmp_path)
    t0 = time.monotonic()
    st = node_status(cfg.node("a"), timeout=LONG)
    took = time.monotonic() - t0
    assert not st.reachable
    assert (
        st.error
        == f"no answer from {cfg.node('a').control}: connection refused: nothing listens there"
    )
    assert took < LONG / 2, took  # before: the whole timeout


def test_a_command_waits_its_timeout_and_says_why(zctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    where = nowhere()
    t0 = time.monotonic()
    with pytest.raises(Unavailable) as err:
        call(where, "cut", {}, timeout=0.3, ctx=zctx)
    assert time.monotonic() - t0 >= 0.3
    assert str(err.value) == (
        f"no answer from {where} within 0.3s (connection refused: nothing listens there)"
    )


@pytest.fixture
def late_node(zctx: zmq.Context[zmq.Socket[bytes]]) -> Iterator[str]:
    """An endpoint a fake node binds 0.3 s from now, then answers one call."""
    where = nowhere()
    stop = threading.Event()

    def serve() -> None:
        if stop.wait(0.3):
            return
        s: zmq.Socket[bytes] = zctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.bind(where)
        try:
            while not stop.is_set():
                if s.poll(20):
                    ident, _ = s.recv_multipart()
                    s.send_multipart([ident, ControlReply(True, {"up": 1}, "").encode()])
        finally:
            s.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield where
    stop.set()
    t.join(5)


def test_a_command_to_a_node_binding_late_is_answered(
    late_node: str, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """Refused first, then the node binds: a command still gets its answer
    (a fail-fast reading would have ended at the refusal)."""
    assert call(late_node, "status", {}, timeout=LONG, ctx=zctx) == {"up": 1}


@pytest.fixture
def curve_node(zctx: zmq.Context[zmq.Socket[bytes]]) -> Iterator[str]:
    """A ROUTER that takes CURVE clients only (it never answers)."""
    s: zmq.Socket[bytes] = zctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.LINGER, 0)
    public, secret = zmq.curve_keypair()
    s.curve_secretkey = secret
    s.curve_publickey = public
    s.curve_server = True
    where = nowhere()
    s.bind(where)
    yield where
    s.close()


def test_a_refused_handshake_ends_a_fail_fast_call_at_once(
    curve_node: str, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    t0 = time.monotonic()
    with pytest.raises(Unavailable) as err:
        call(curve_node, "status", {}, timeout=LONG, ctx=zctx, fail_fast=True)  # plain: no keys
    assert time.monotonic() - t0 < LONG / 2
    assert "refused the handshake" in str(err.value), err.value
    # Without fail_fast: the timeout, then the same reason.
    with pytest.raises(Unavailable, match=r"within 0\.3s .*refused the handshake"):
        call(curve_node, "status", {}, timeout=0.3, ctx=zctx)
