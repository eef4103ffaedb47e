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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import zmq

from zmqfail.config import ClusterConfig
from zmqfail.errors import NodeError
from zmqfail.security import Curve, Security, ServerKeys, allowed

if TYPE_CHECKING:
    from zmqfail.zaphandler import HandshakeWatch

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


class Authenticator:
    """The ZAP handler on `ctx` for the given allow-lists; `close()` ends it."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        allowed: Mapping[Curve, frozenset[bytes]],
        who: str,
    ) -> None:
        # pyzmq's authenticator thread imports asyncio (a tenth of a second
        # of CPU at every start): only a server that checks keys pays for it.
        from zmqfail.zaphandler import Handler

        self.gate = Gate({c.value: keys for c, keys in allowed.items()})
        self._handler = Handler(ctx, self.gate, who)
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
            from zmqfail.zaphandler import HandshakeWatch

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
