"""The threads of a server that checks keys: pyzmq's ZAP authenticator, told
by `zap.Gate` which keys to let in, and the watch of handshakes that fail
before ZAP is asked.

A module of its own because `zmq.auth.thread` and `zmq.utils.monitor` import
asyncio: `zap.Authenticator` imports it only when a server checks keys, so a
plain cluster's nodes start without it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import parse_monitor_message

from zmqfail.zap import Gate

log = logging.getLogger("zmqfail.zap")


class Handler(ThreadAuthenticator):
    """pyzmq's authenticator, telling `Gate` where a handshake came from."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], gate: Gate, who: str) -> None:
        super().__init__(ctx, log=logging.getLogger("zmqfail.zap.pyzmq"))
        self.gate = gate
        self.who = who
        self.address = "?"

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # Frames: version, request id, domain, address, identity, mechanism, ...
        if len(msg) > 3:
            self.address = msg[3].decode("utf-8", "replace")
        await super().handle_zap_message(msg)

    def callback(self, domain: str, key: bytes) -> bool:
        ok, unlogged = self.gate.decide(domain, key, time.monotonic())
        if unlogged is not None:
            more = f" ({unlogged} more refusals since the last line)" if unlogged else ""
            log.warning(
                "%s: refused a %s connection from %s: key %s is not allowed%s",
                self.who,
                domain,
                self.address,
                key.decode("ascii", "replace"),
                more,
            )
        return ok


_FAILED = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL


class HandshakeWatch:
    """The refusals ZAP never sees. A peer that offers no CURVE key (a client
    or an operator tool run without keys) fails the handshake on the security
    mechanism, before libzmq asks the handler, so without this the server
    would refuse it in silence. A thread reads the watched sockets' monitor
    events and logs each failed handshake, rate-limited like `Gate`'s lines
    (one Gate of its own: no state shared with the ZAP thread)."""

    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], socks: Mapping[str, zmq.Socket[bytes]], who: str
    ) -> None:
        self.gate = Gate({})
        self.who = who
        self._stop = threading.Event()
        self._domains: dict[str, str] = {}
        for domain, sock in socks.items():
            address = f"inproc://zmqfail-handshakes-{id(self)}-{domain}"
            sock.monitor(address, _FAILED)  # from the socket's own thread, as libzmq requires
            self._domains[address] = domain
        self._thread = threading.Thread(
            target=self._run, args=(ctx,), name="zmqfail-handshakes", daemon=True
        )
        self._thread.start()

    def _run(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        poller = zmq.Poller()
        pairs: dict[zmq.Socket[bytes], str] = {}
        try:
            for address, domain in self._domains.items():
                pair = ctx.socket(zmq.PAIR)
                pair.setsockopt(zmq.LINGER, 0)
                pair.connect(address)
                poller.register(pair, zmq.POLLIN)
                pairs[pair] = domain
            while not self._stop.is_set():
                for pair, _ in poller.poll(100):
                    self._on_event(pairs[pair], pair.recv_multipart())
        except zmq.ZMQError as exc:  # the context ended under us: nothing left to watch
            log.debug("%s: handshake watch ends: %s", self.who, exc)
        finally:
            for pair in pairs:
                pair.close(linger=0)

    def _on_event(self, domain: str, frames: list[bytes]) -> None:
        try:
            event = parse_monitor_message(frames)
        except Exception:  # not ours to judge: libzmq wrote it
            return
        # Rate-limited per cause: a burst of one kind of failure (a client
        # refused by ZAP may fail its handshake too) must not hide another.
        value = int(event["value"])
        unlogged = self.gate.refuse(domain, b"%x" % value, time.monotonic())
        if unlogged is None:
            return
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            why = "the peer offered no CURVE key (a client or tool without keys?)"
        elif value < 0x10000000:  # an errno: the peer went away mid-handshake
            # A peer without keys sees our CURVE greeting and hangs up too, often
            # before ours sees its NULL one: then this is all libzmq tells.
            why = (
                f"the handshake failed ({os.strerror(value)}; a client or tool "
                "without keys hangs up like this)"
            )
        else:
            why = f"the handshake failed (libzmq protocol error 0x{value:x})"
        more = f" ({unlogged} more since the last line)" if unlogged else ""
        endpoint = event["endpoint"]
        where = endpoint.decode("utf-8", "replace") if isinstance(endpoint, bytes) else endpoint
        log.warning("%s: refused a %s connection on %s: %s%s", self.who, domain, where, why, more)

    @property
    def refused(self) -> int:
        return self.gate.refused

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
