"""Operator side of a node's control socket (status, fault injection, stop).

A fresh DEALER per call with LINGER 0 and a deadline, so a dead or frozen
node costs the caller one timeout and never a hang.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import zmq

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


def call(
    where: str | NodeConfig | WitnessConfig,
    command: str,
    args: dict[str, Any] | None = None,
    timeout: float = 1.0,
    ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
) -> dict[str, Any]:
    """One control request to `where` (a node, the witness or an endpoint)."""
    endpoint, dial = target(where)
    c: zmq.Context[zmq.Socket[bytes]] = ctx or zmq.Context.instance()
    s: zmq.Socket[bytes] = c.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    # A DEALER blocks a send while it has no peer, and a failed handshake (a
    # key the node does not know, or none) tears down the one it had: without
    # a bound, such a call hung forever instead of saying no one answered.
    s.setsockopt(zmq.SNDTIMEO, max(1, int(timeout * 1000)))
    limit_socket(s, Channel.REPLIES)
    try:
        if dial is not None:
            dial.apply(s)
        s.connect(endpoint)
        try:
            s.send(ControlRequest(command, args or {}).encode())
        except zmq.Again:
            raise Unavailable(
                f"no answer from {endpoint} within {timeout}s (the request could not be sent)"
            ) from None
        if not s.poll(int(timeout * 1000)):
            raise Unavailable(f"no answer from {endpoint} within {timeout}s")
        try:
            rep = decode_as(s.recv(), ControlReply)
        except ProtocolError as exc:
            raise ZmqfailError(f"bad control reply from {endpoint}: {exc}") from None
        if not rep.ok:
            raise ControlRefused(endpoint, rep.error)
        return rep.result
    finally:
        s.close(linger=0)


def node_status(node: NodeConfig, digest: bool = False, timeout: float = 1.0) -> NodeStatus:
    """A node's typed status, or an unreachable one saying why (never raises
    for that): silent, an error reply, or a reply that does not decode as a
    status are all a node that cannot be used.

    The digest hashes every table (in a forked child on a large node): ask for
    it only when it is wanted, or a loaded node may not answer in time."""
    try:
        reply = call(node, "status", {"digest": digest}, timeout)
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
