"""The control socket: status for the operator tools, fault injection, stop,
operator control of failover (switchover, promote, pause, resume, history).
Decoding and answering live here; decisions are the core's (switchover,
promote, pause, resume, stop) or the link layer's (cut, heal, delay: faults
at the edge).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import zmq

from zmqfail.chaos import Direction
from zmqfail.core.node import NodeCore
from zmqfail.core.status import NodeStatus
from zmqfail.errors import ProtocolError
from zmqfail.node.digest import DigestJobs
from zmqfail.node.links import Channels
from zmqfail.protocol import ControlReply, ControlRequest, decode

MAX_DIGEST_JOBS = 4  # forked digests at once: more are refused, never queued


def _seconds(v: object) -> float | None:
    if v is None:
        return None
    if not isinstance(v, int | float) or isinstance(v, bool) or v <= 0:
        raise ProtocolError(f"'for' must be a positive number of seconds, got {v!r}")
    return float(v)


def _direction(v: object) -> Direction:
    try:
        return Direction.parse(v)
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None


class Control:
    def __init__(self, core: NodeCore, channels: Channels) -> None:
        self.core = core
        self.channels = channels
        self.digests = DigestJobs()
        self.bad_frames = 0
        self.curve_refused: Callable[[], int] = lambda: 0  # the ZAP handler's count

    def drain(self, now: float) -> None:
        sock = self.channels.control
        for _ in range(64):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                self.bad_frames += 1  # no one sure to answer: dropped and counted
                continue
            ident, payload = frames
            try:
                req = decode(payload)
                if not isinstance(req, ControlRequest):
                    raise ProtocolError(f"expected a control request, got {req.TYPE}")
                if self._digest_later(ident, req, now):
                    continue
                reply = ControlReply(True, self.handle(req.command, req.args, now), "")
            except ProtocolError as exc:
                self.bad_frames += 1
                reply = ControlReply(False, {}, str(exc))
            self.channels.send_control(ident, reply.encode())

    def _digest_later(self, ident: bytes, req: ControlRequest, now: float) -> bool:
        """A digest of large tables comes from a forked child (answered when it
        is done), so `status --digest` can never stall a primary into a false
        failover."""
        if req.command != "status":
            return False
        digest = req.args.get("digest", False)
        if not isinstance(digest, bool):
            raise ProtocolError(f"'digest' must be true or false, got {digest!r:.40}")
        proc = self.core.nlog.proc
        if not digest or self.digests.small(proc):
            return False
        if len(self.digests.jobs) >= MAX_DIGEST_JOBS:
            raise ProtocolError("busy: digests already being computed; ask again shortly")
        self.digests.start(proc, ident, self.status(now, False))
        return True

    def handle(self, command: str, args: dict[str, Any], now: float) -> dict[str, Any]:
        faults = self.channels.faults
        if command == "status":
            return self.status(now, bool(args.get("digest", False)))
        if command == "stop":
            self.core.stopping = True
            return {"stopping": True}
        if command == "switchover":
            to = args.get("to", "")
            if not isinstance(to, str):
                raise ProtocolError(f"'to' must be a node name, got {to!r:.40}")
            return self.core.operator.switchover(now, to)
        if command == "promote":
            force = args.get("force", False)
            if not isinstance(force, bool):
                raise ProtocolError(f"'force' must be true or false, got {force!r:.40}")
            return self.core.operator.promote(force, now)
        if command == "pause":
            return self.core.operator.pause(now)
        if command == "resume":
            return self.core.operator.resume(now)
        if command == "history":
            last = args.get("last", 0)
            if not isinstance(last, int) or isinstance(last, bool) or last < 0:
                raise ProtocolError(f"'last' must be a count of entries (0: all), got {last!r:.40}")
            entries = [e.to_wire() for e in self.core.operator.history()]
            return {"entries": entries[-last:] if last else entries}
        if command in ("cut", "heal"):
            link = args.get("link")
            if not isinstance(link, str):
                raise ProtocolError(f"'link' must be a channel name, got {link!r}")
            if command == "cut":
                way = _direction(args.get("direction", Direction.BOTH.value))
                faults.cut_link(link, _seconds(args.get("for")), now, way)
            else:
                faults.heal(link)
            return {"cut": sorted(faults.cut), "one_way": faults.one_way()}
        if command == "delay":
            link, ms = args.get("link"), args.get("ms")
            if not isinstance(link, str):
                raise ProtocolError(f"'link' must be main or failsafe, got {link!r}")
            if not isinstance(ms, int | float) or isinstance(ms, bool) or not 0 <= ms <= 10_000:
                raise ProtocolError(
                    f"'ms' must be a number of milliseconds from 0 to 10000, got {ms!r}"
                )
            faults.delay(link, float(ms), _seconds(args.get("for")), now)
            return {"delays_ms": self._delays()}
        raise ProtocolError(f"unknown control command {command!r}")

    def _delays(self) -> dict[str, int]:
        return {lk: round(d * 1000) for lk, d in sorted(self.channels.faults.delays.items())}

    def node_status(self, now: float) -> NodeStatus:
        """The core's status with what only the shell knows (pid, faults, framing)."""
        st = self.core.status(now)
        st.pid = os.getpid()
        st.cut_links = sorted(self.channels.faults.cut)
        st.cut_one_way = self.channels.faults.one_way()
        st.delays_ms = self._delays()
        st.counters["bad_frames"] += self.channels.bad_framing
        st.counters["undeliverable"] = self.channels.undeliverable
        st.counters["control_bad_frames"] = self.bad_frames
        st.counters["curve_refused"] = self.curve_refused()
        return st

    def status(self, now: float, digest: bool) -> dict[str, Any]:
        st = self.node_status(now)
        if digest:
            st.digest = self.core.nlog.proc.digest()
        return st.to_dict()

    def reap(self) -> None:
        for ident, st in self.digests.finished():
            self.channels.send_control(ident, ControlReply(True, st, "").encode())

    def close(self) -> None:
        self.digests.close()
