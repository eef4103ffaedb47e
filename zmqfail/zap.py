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
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import zmq
from zmq.auth.thread import ThreadAuthenticator

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
        self.refused += 1
        if len(self._last) >= MAX_TRACKED and (domain, key) not in self._last:
            self._last.clear()  # a flood of fresh keys costs log lines, never unbounded memory
        at, unlogged = self._last.get((domain, key), (float("-inf"), 0))
        if now - at >= LOG_EVERY:
            self._last[(domain, key)] = (now, 0)
            return False, unlogged
        self._last[(domain, key)] = (at, unlogged + 1)
        return False, None


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

    @property
    def refused(self) -> int:
        return self.gate.refused

    def close(self) -> None:
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
