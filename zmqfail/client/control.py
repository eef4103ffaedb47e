"""Operator side of a node's control socket (status, fault injection, stop).

A fresh DEALER per call with LINGER 0 and a deadline, so a dead or frozen
node costs the caller one timeout and never a hang. The socket's monitor
says why nothing answered: a connection refused (nothing listens there) or
a handshake the node refused (CURVE keys). A status reading stops at
either at once, since no answer can come within its timeout: a node
killed on its own machine costs `zmqfail status` no wait at all; a node
behind a cut cable still costs the timeout.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from zmqfail.config import ClusterConfig, NodeConfig, WitnessConfig
from zmqfail.core.status import STATUS_KEYS, NodeStatus
from zmqfail.errors import ProtocolError, Unavailable, ZmqfailError
from zmqfail.protocol import Channel, ControlReply, ControlRequest, decode_as, limit_socket
from zmqfail.security import Curve, Dial

__all__ = ["STATUS_KEYS", "call", "cluster_status", "node_status"]


class ControlRefused(ZmqfailError):
    """The node answered and refused the command (nothing changed there);
    `reason` is its one line, without the endpoint."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"{endpoint}: {reason}")
        self.reason = reason


def target(where: str | NodeConfig | WitnessConfig) -> tuple[str, Dial | None]:
    """The control endpoint of a node or the witness, and the operator's CURVE
    keys for it when the cluster secures that channel (read now: a missing
    key is a ConfigError). A bare endpoint is dialled plain."""
    if isinstance(where, str):
        return where, None
    sec = where.security
    if isinstance(where, NodeConfig):
        endpoint, channel, name = where.control, Curve.CONTROL, where.name
    else:
        endpoint, channel, name = where.endpoint, Curve.WITNESS, "witness"
    if sec is None or not sec.on(channel):
        return endpoint, None
    return endpoint, Dial(sec.operator_pair(), sec.server_public(name))


_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
# What the dialling socket's monitor is asked for: enough to tell a refused
# connection (retried before ever connecting) from a refused handshake.
_DIAL_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED | _HANDSHAKE_FAILED


class _Dialling:
    """What the monitor of a call's socket has said so far."""

    def __init__(self, s: zmq.Socket[bytes]) -> None:
        self.mon: zmq.Socket[bytes] = s.get_monitor_socket(_DIAL_EVENTS)
        self.connected = False
        self.why = ""  # why no answer can come: "" while nothing says so

    def read(self) -> None:
        while self.mon.poll(0):
            event = recv_monitor_message(self.mon)["event"]
            if event == zmq.EVENT_CONNECTED:
                self.connected = True
            elif event & _HANDSHAKE_FAILED:
                self.why = "it refused the handshake (CURVE: a key it does not take, or none)"
            elif event == zmq.EVENT_CONNECT_RETRIED and not self.connected:
                self.why = "connection refused: nothing listens there"

    def close(self, s: zmq.Socket[bytes]) -> None:
        try:
            with contextlib.suppress(zmq.ZMQError):
                s.disable_monitor()
        finally:
            self.mon.close(linger=0)


def call(
    where: str | NodeConfig | WitnessConfig,
    command: str,
    args: dict[str, Any] | None = None,
    timeout: float = 1.0,
    ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
    fail_fast: bool = False,
) -> dict[str, Any]:
    """One control request to `where` (a node, the witness or an endpoint).
    With `fail_fast` a refused connection or handshake ends the call at
    once; otherwise the call waits its timeout (a node starting up binds
    within it) and says why at the end."""
    endpoint, dial = target(where)
    c: zmq.Context[zmq.Socket[bytes]] = ctx or zmq.Context.instance()
    s: zmq.Socket[bytes] = c.socket(zmq.DEALER)
    dialling: _Dialling | None = None
    try:
        s.setsockopt(zmq.LINGER, 0)
        # A DEALER blocks a send while it has no peer, and a failed handshake
        # (a key the node does not know, or none) tears down the one it had:
        # without a bound, such a call hung forever instead of saying no one
        # answered.
        s.setsockopt(zmq.SNDTIMEO, max(1, int(timeout * 1000)))
        limit_socket(s, Channel.REPLIES)
        dialling = _Dialling(s)
        if dial is not None:
            dial.apply(s)
        s.connect(endpoint)
        try:
            s.send(ControlRequest(command, args or {}).encode())
        except zmq.Again:
            dialling.read()
            raise Unavailable(
                f"no answer from {endpoint} within {timeout}s (the request could not be "
                f"sent{'; ' + dialling.why if dialling.why else ''})"
            ) from None
        _await_reply(s, dialling, endpoint, timeout, fail_fast)
        try:
            rep = decode_as(s.recv(), ControlReply)
        except ProtocolError as exc:
            raise ZmqfailError(f"bad control reply from {endpoint}: {exc}") from None
        if not rep.ok:
            raise ControlRefused(endpoint, rep.error)
        return rep.result
    finally:
        if dialling is not None:
            dialling.close(s)
        s.close(linger=0)


def _await_reply(
    s: zmq.Socket[bytes], dialling: _Dialling, endpoint: str, timeout: float, fail_fast: bool
) -> None:
    """Until the reply is readable; Unavailable at the deadline, or at once
    when `fail_fast` and the monitor says none can come."""
    poller = zmq.Poller()
    poller.register(s, zmq.POLLIN)
    poller.register(dialling.mon, zmq.POLLIN)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left > 0 and s in dict(poller.poll(math.ceil(left * 1000))):
            return
        dialling.read()
        if fail_fast and dialling.why:
            raise Unavailable(f"no answer from {endpoint}: {dialling.why}")
        if time.monotonic() >= deadline:
            why = f" ({dialling.why})" if dialling.why else ""
            raise Unavailable(f"no answer from {endpoint} within {timeout}s{why}")


def node_status(node: NodeConfig, digest: bool = False, timeout: float = 1.0) -> NodeStatus:
    """A node's typed status, or an unreachable one saying why (never raises
    for that): silent, an error reply, or a reply that does not decode as a
    status are all a node that cannot be used.

    The digest hashes every table (in a forked child on a large node): ask for
    it only when it is wanted, or a loaded node may not answer in time."""
    try:
        reply = call(node, "status", {"digest": digest}, timeout, fail_fast=True)
    except ZmqfailError as exc:
        return NodeStatus.unreachable(node.name, str(exc))
    try:
        return NodeStatus.from_wire(reply)
    except ProtocolError as exc:
        return NodeStatus.unreachable(node.name, f"bad status from {node.control}: {exc}")


def cluster_status(
    cfg: ClusterConfig,
    digest: bool = False,
    timeout: float = 1.0,
    read: Callable[[NodeConfig, bool, float], NodeStatus] | None = None,
) -> list[NodeStatus]:
    """Every node's status in config order, all asked at once, so each silent
    node costs one timeout in parallel rather than one each in turn. A
    missing or unreadable operator key is a ConfigError here, not a row of
    unreachable nodes. `read` reads one node (`node_status` unless given: the
    cluster helper answers for the nodes it knows are dead)."""
    one = node_status if read is None else read
    for n in cfg.nodes:
        target(n)
    if len(cfg.nodes) == 1:
        return [one(cfg.nodes[0], digest, timeout)]
    with ThreadPoolExecutor(len(cfg.nodes), thread_name_prefix="status") as pool:
        return list(pool.map(lambda n: one(n, digest, timeout), cfg.nodes))
