"""etcd as the witness: the node's side, the shell around etcdplan.py.

The node's core emits encoded `WitnessAsk` frames and takes encoded
`WitnessAnswer` frames, the same with etcd as with the built-in witness.
`EtcdWitness` carries each ask out against etcd on a thread of its own (an
etcd request takes a network round trip, and an unreachable etcd takes a
timeout: never on the node's loop) and hands each answer back through an
inproc PULL socket that the loop polls like the witness's DEALER. The queue
of asks is bounded: when full (etcd slow or down) further asks are dropped
and counted; the core asks again every third of a lease anyway, and no
answer is no grant and no lease.

`EtcdKeys` is the only code that talks to etcd, through etcd3gw (the v3 JSON
gateway, on etcd 3.4 and later; see docs/etcd.md for why this client): one
read of both keys as a transaction (one revision), a keep-alive, a grant of
an etcd lease, one compare-and-put transaction.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import logging
import math
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

import zmq

from zmqfail.config import ClusterConfig
from zmqfail.errors import ConfigError, ProtocolError, WitnessError
from zmqfail.protocol import WitnessAsk, decode_as
from zmqfail.witness import store
from zmqfail.witness.etcdplan import MAX_TRIES, Answer, KeepAlive, Seen, Write, plan
from zmqfail.witness.logic import Granted, Verdict, reply

if TYPE_CHECKING:
    from etcd3gw.client import Etcd3Client

log = logging.getLogger("zmqfail.witness.etcd")

ADVICE = (
    "no ask is answered from a guess (it could elect a server that missed an epoch); "
    "with both servers paired in the normal state, delete the group's keys (docs/etcd.md)"
)
QUEUE = 16  # asks waiting for etcd; beyond, dropped (they are repeated)
_ids = itertools.count(1)


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s)


class EtcdDown(WitnessError):
    """No etcd member answered in time: this ask gets no answer."""


def group_base(cfg: ClusterConfig) -> str:
    """The failover group's keys: <prefix>/<cluster name>[/<shard>] (a shard's
    config is named cluster/shard, config.ClusterConfig.shard)."""
    assert cfg.witness is not None and cfg.witness.etcd is not None
    return f"{cfg.witness.etcd.prefix}/{cfg.name}"


def _client_class() -> type[Etcd3Client]:
    try:
        from etcd3gw.client import Etcd3Client
    except ImportError:
        raise ConfigError(
            "[witness] etcd needs the etcd3gw package, which is not installed: "
            "pip install 'zmqfail[etcd]'"
        ) from None
    return Etcd3Client


class EtcdKeys:
    """A failover group's two keys in etcd. Every method raises EtcdDown when
    no member answers; members are tried in turn, the last good one first.
    `clients`: etcd3gw clients (`connect`), or a test's stand-in with `post`
    and `get_url`."""

    def __init__(self, clients: list[Any], base: str) -> None:
        self.clients = clients
        self.granted_key = f"{base}/granted"
        self.lease_key = f"{base}/lease"
        self._first = 0

    @classmethod
    def connect(cls, endpoints: tuple[str, ...], base: str, timeout: float) -> EtcdKeys:
        client = _client_class()
        import requests  # etcd3gw's own dependency

        clients = []
        for url in endpoints:
            host, port = url.removeprefix("http://").rsplit(":", 1)
            session = requests.Session()
            session.trust_env = False  # straight to etcd, whatever http_proxy says
            c = client(host, int(port), timeout=timeout, api_path="/v3/", session=session)
            clients.append(c)
        return cls(clients, base)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        errors = []
        n = len(self.clients)
        for i in range(n):
            k = (self._first + i) % n
            c = self.clients[k]
            try:
                got: dict[str, Any] = c.post(c.get_url(path), json=body)
            except Exception as exc:  # etcd3gw's errors, requests', a bad body: all "down"
                errors.append(f"{c.base_url}: {str(exc)[:120]}")
                continue
            self._first = k
            return got
        raise EtcdDown("; ".join(errors))

    def read(self) -> Seen:
        ranges = [{"request_range": {"key": _b64(k)}} for k in (self.granted_key, self.lease_key)]
        got = self._post("/kv/txn", {"success": ranges})
        kvs = [r.get("response_range", {}).get("kvs", []) for r in got.get("responses", [])]
        if len(kvs) != 2:
            raise WitnessError(f"etcd answered a read of two keys with {got!r:.200}")
        granted, rev = Granted(), 0
        if kvs[0]:
            kv = kvs[0][0]
            where = f"etcd key {self.granted_key}"
            granted = store.decode(_unb64(kv.get("value", "")), where, ADVICE)
            rev = int(kv["mod_revision"])
        holder, lease_id, hrev = "", 0, 0
        if kvs[1]:
            kv = kvs[1][0]
            holder = _unb64(kv.get("value", "")).decode("utf-8", "replace")
            lease_id, hrev = int(kv.get("lease", 0)), int(kv["mod_revision"])
        return Seen(granted, rev, holder, lease_id, hrev)

    def keep_alive(self, lease_id: int) -> bool:
        """Whether the etcd lease still lived (and now lives a full TTL more)."""
        got = self._post("/lease/keepalive", {"ID": lease_id})
        return int(got.get("result", {}).get("TTL", 0)) > 0

    def write(self, step: Write, ttl: int) -> bool:
        """The transaction of `step` on a fresh etcd lease of `ttl` seconds;
        whether it was applied (False: a key moved since the read)."""
        lease_id = int(self._post("/lease/grant", {"TTL": ttl})["ID"])
        named = {"granted": self.granted_key, "lease": self.lease_key}
        compare = [
            {"key": _b64(named[k]), "target": "MOD", "result": "EQUAL", "mod_revision": rev}
            for k, rev in step.guards()
        ]
        lease = {"key": _b64(self.lease_key), "value": _b64(step.holder), "lease": lease_id}
        puts = [{"request_put": lease}]
        if step.granted is not None:
            value = store.encode(step.granted)
            puts.append({"request_put": {"key": _b64(self.granted_key), "value": _b64(value)}})
        got = self._post("/kv/txn", {"compare": compare, "success": puts})
        if not got.get("succeeded"):
            with contextlib.suppress(WitnessError):
                self._post("/kv/lease/revoke", {"ID": lease_id})  # holds no key
            return False
        return True


def carry_out(frame: bytes, keys: EtcdKeys, ttl: int, lease_ms: int) -> bytes | None:
    """The encoded answer to one encoded ask, or None (no answer)."""
    try:
        ask = decode_as(frame, WitnessAsk)
    except ProtocolError as exc:
        log.error("etcd witness: dropped an ask that does not decode: %s", exc)
        return None
    try:
        for _ in range(MAX_TRIES):
            verdict = _try(ask, keys, ttl)
            if verdict is not None:
                return reply(verdict, ask.nonce, lease_ms).encode()
        log.warning("etcd witness: keys kept moving; %s's ask goes unanswered", ask.server)
    except EtcdDown as exc:
        log.warning("etcd witness: etcd unreachable (%s); no answer", exc)
    except WitnessError as exc:
        log.error("etcd witness: %s; no answer", exc)
    return None


def _try(ask: WitnessAsk, keys: EtcdKeys, ttl: int) -> Verdict | None:
    """One read and the step it calls for; None: the keys moved, read again."""
    step = plan(ask, keys.read())
    if isinstance(step, Answer):
        v = step.verdict
        log.warning("etcd refused %s %s at epoch %d: %s", ask.kind, ask.server, ask.epoch, v.why)
        return v
    if isinstance(step, KeepAlive):
        return step.verdict if keys.keep_alive(step.lease_id) else None
    if not keys.write(step, ttl):
        return None
    if step.granted is not None:
        log.info("etcd elected %s at epoch %d", ask.server, ask.epoch)
    return step.verdict


class EtcdWitness:
    """The asks of one node, carried out against etcd on a thread."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        cfg: ClusterConfig,
        keys: EtcdKeys | None = None,
        start: bool = True,
    ) -> None:
        w = cfg.witness
        assert w is not None and w.etcd is not None
        self.lease_ms = w.lease_ms
        self.ttl = math.ceil(w.lease_ms / 1000)
        # An answer later than a third of a lease is late for the next ask too.
        timeout = w.lease_ms / 3000
        self.keys = keys or EtcdKeys.connect(w.etcd.endpoints, group_base(cfg), timeout)
        self.dropped = 0
        self.unanswered = 0
        self._asks: queue.Queue[tuple[float, bytes]] = queue.Queue(QUEUE)
        self._stop = threading.Event()
        where = f"inproc://zmqfail-etcd-{next(_ids)}"
        self.answers: zmq.Socket[bytes] = ctx.socket(zmq.PULL)
        self.answers.setsockopt(zmq.LINGER, 0)
        self.answers.bind(where)
        self._push: zmq.Socket[bytes] = ctx.socket(zmq.PUSH)  # used by the thread only
        self._push.setsockopt(zmq.LINGER, 0)
        self._push.connect(where)
        self._thread = threading.Thread(target=self._run, name="etcd-witness", daemon=True)
        if start:  # (a test of the queue's bound starts none)
            self._thread.start()

    def submit(self, frame: bytes) -> None:
        """From the loop: never blocks."""
        try:
            self._asks.put_nowait((time.monotonic(), frame))
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                at, frame = self._asks.get(timeout=0.1)
            except queue.Empty:
                continue
            if time.monotonic() - at > self.lease_ms / 1000:
                self.unanswered += 1  # the core has forgotten this ask
                continue
            try:
                out = carry_out(frame, self.keys, self.ttl, self.lease_ms)
            except Exception:  # an answer etcd should never give: this ask only
                log.exception("etcd witness: an ask failed unexpectedly; no answer")
                out = None
            if out is None:
                self.unanswered += 1
            else:
                with contextlib.suppress(zmq.ZMQError):
                    self._push.send(out, zmq.NOBLOCK)
        self._push.close(linger=0)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * self.lease_ms / 1000 + 1)
        else:
            self._push.close(linger=0)
        self.answers.close(linger=0)
