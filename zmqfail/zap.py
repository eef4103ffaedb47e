"""The ZAP handler of a server process: which CURVE keys get in, and the log
of those refused.

libzmq asks the handler (on inproc, in the socket's context) about every
new CURVE connection to a socket with a ZAP domain. The handler is pyzmq's
``ThreadAuthenticator``: a thread of its own, so a flood of handshakes never
takes a turn of the node's loop. What it answers is `Gate`'s decision, plain
Python with the clock passed in: a key in the channel's allow-list is let
in, any other is refused. A refused client retries its handshake every
reconnect interval, so a refusal is logged once per key and channel per
`LOG_EVERY` seconds, with how many were not logged in between.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import parse_monitor_message

from zmqfail.config import ClusterConfig
from zmqfail.errors import NodeError
from zmqfail.security import Curve, Security, ServerKeys, allowed

log = logging.getLogger("zmqfail.zap")

LOG_EVERY = 60.0  # seconds between two log lines about the same refused key
MAX_TRACKED = 10_000  # refused keys remembered for the log's rate limit; then forgotten


@dataclass
class Gate:
    """The allow-lists by channel, and what has been refused (no I/O)."""

    allowed: Mapping[str, frozenset[bytes]]
    refused: int = 0
    _last: dict[tuple[str, bytes], tuple[float, int]] = field(default_factory=dict)

    def decide(self, domain: str, key: bytes, now: float) -> tuple[bool, int | None]:
        """Whether `key` may connect on `domain`; when refused, the number of
        refusals of this key not yet logged (None: log nothing this time)."""
        if key in self.allowed.get(domain, frozenset()):
            return True, None
        return False, self.refuse(domain, key, now)

    def refuse(self, domain: str, key: bytes, now: float) -> int | None:
        """Count one refusal of `key` (b"": a peer that offered no CURVE key)
        on `domain`; return how many refusals of it went unlogged, or None
        when this one should not be logged either."""
        self.refused += 1
        if len(self._last) >= MAX_TRACKED and (domain, key) not in self._last:
            self._last.clear()  # a flood of fresh keys costs log lines, never unbounded memory
        at, unlogged = self._last.get((domain, key), (float("-inf"), 0))
        if now - at >= LOG_EVERY:
            self._last[(domain, key)] = (now, 0)
            return unlogged
        self._last[(domain, key)] = (at, unlogged + 1)
        return None


class _Handler(ThreadAuthenticator):
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


class Authenticator:
    """The ZAP handler on `ctx` for the given allow-lists; `close()` ends it."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        allowed: Mapping[Curve, frozenset[bytes]],
        who: str,
    ) -> None:
        self.gate = Gate({c.value: keys for c, keys in allowed.items()})
        self._handler = _Handler(ctx, self.gate, who)
        try:
            self._handler.start()
        except zmq.ZMQError as exc:
            # Only one handler per context: a second Node in one context.
            raise NodeError(f"cannot start the ZAP handler: {exc.strerror}") from None
        for channel in allowed:
            self._handler.configure_curve_callback(channel.value, self._handler)
        self._ctx = ctx
        self._who = who
        self._watch: HandshakeWatch | None = None

    def watch(self, socks: Mapping[Curve, zmq.Socket[bytes]]) -> None:
        """Also log the handshakes of these sockets that fail before ZAP is
        asked (see HandshakeWatch); only channels this handler guards."""
        guarded = {c.value: s for c, s in socks.items() if c.value in self.gate.allowed}
        if guarded and self._watch is None:
            self._watch = HandshakeWatch(self._ctx, guarded, self._who)

    @property
    def refused(self) -> int:
        return self.gate.refused + (self._watch.refused if self._watch is not None else 0)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
        self._handler.stop()


@contextlib.contextmanager
def stopped_on_failure(auth: Authenticator | None) -> Iterator[None]:
    """The rest of a start: a start that fails leaves no ZAP thread behind."""
    try:
        yield
    except BaseException:
        if auth is not None:
            auth.close()
        raise


def for_server(
    cfg: ClusterConfig, name: str, ctx: zmq.Context[zmq.Socket[bytes]]
) -> tuple[ServerKeys | None, Authenticator | None]:
    """A server's keys and its running ZAP handler (None, None: a plain
    cluster). Every key is read here, before a socket binds: a missing one is
    a one-line ConfigError and nothing was opened."""
    sec = cfg.security
    if sec is None or not sec.curve:
        return None, None
    servers = [n.name for n in cfg.nodes]
    dials = servers + (["witness"] if cfg.witness is not None and sec.on(Curve.WITNESS) else [])
    keys = ServerKeys.load(sec, name, dials)
    peers = frozenset(keys.publics[n] for n in servers if n != name)
    lists: dict[Curve, frozenset[bytes]] = {}
    if sec.on(Curve.CLIENTS):  # the other servers' probes come in here too
        lists[Curve.CLIENTS] = _clients(sec) | peers
    if sec.on(Curve.REPLICATION):
        lists[Curve.REPLICATION] = peers
    if sec.on(Curve.CONTROL):
        lists[Curve.CONTROL] = _operators(sec)
    return keys, (Authenticator(ctx, lists, name) if lists else None)


def for_witness(
    sec: Security | None, ctx: zmq.Context[zmq.Socket[bytes]]
) -> tuple[ServerKeys | None, Authenticator | None]:
    """The witness's keys and ZAP handler: every server key in ``keys_dir``
    and every operator may ask it (None, None: its channel is plain)."""
    if sec is None or not sec.on(Curve.WITNESS):
        return None, None
    keys = ServerKeys.load(sec, "witness", [])
    servers = allowed(sec.keys_dir, "[security] keys_dir") - {keys.pair.public}
    lists = {Curve.WITNESS: servers | _operators(sec)}
    return keys, Authenticator(ctx, lists, "witness")


def _clients(sec: Security) -> frozenset[bytes]:
    return allowed(sec.clients_allowed_dir, "[security] clients_allowed_dir")


def _operators(sec: Security) -> frozenset[bytes]:
    return allowed(sec.operators_allowed_dir, "[security] operators_allowed_dir")
