"""An in-memory etcd speaking the v3 JSON gateway's dialect, for unit tests of
witness/etcd.py: the few calls it makes (a transaction of ranges or of
compares and puts, lease grant, keep-alive and revoke), int64 fields as
strings and false or zero fields left out, as the gateway answers. Its clock
is the test's (`now`): a lease expires when `now` passes its deadline, and
takes its keys with it."""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass
from typing import Any


@dataclass
class _Kv:
    value: bytes
    mod: int
    lease: int


class FakeEtcd:
    def __init__(self) -> None:
        self.now = 0.0
        self.rev = 1
        self.kvs: dict[bytes, _Kv] = {}
        self.leases: dict[int, tuple[int, float]] = {}  # id -> (ttl, expires at)
        self._ids = itertools.count(7_000_000_000_000_000_001)
        self.down = False
        self.calls: list[str] = []

    # --------------------------------------------------------- the client side
    base_url = "fake://etcd"

    def get_url(self, path: str) -> str:
        return path

    def post(self, url: str, json: dict[str, Any]) -> dict[str, Any]:
        if self.down:
            raise ConnectionError("connection refused")
        self._expire()
        self.calls.append(url)
        handler = {
            "/kv/txn": self._txn,
            "/lease/grant": self._grant,
            "/lease/keepalive": self._keepalive,
            "/kv/lease/revoke": self._revoke,
        }[url]
        return handler(json)

    # ------------------------------------------------------------------ server
    def _expire(self) -> None:
        for lid, (_, until) in list(self.leases.items()):
            if self.now >= until:
                self._drop(lid)

    def _drop(self, lid: int) -> None:
        del self.leases[lid]
        gone = [k for k, kv in self.kvs.items() if kv.lease == lid]
        for k in gone:
            del self.kvs[k]
        if gone:
            self.rev += 1

    def _grant(self, body: dict[str, Any]) -> dict[str, Any]:
        lid, ttl = next(self._ids), int(body["TTL"])
        self.leases[lid] = (ttl, self.now + ttl)
        return {"ID": str(lid), "TTL": str(ttl)}

    def _keepalive(self, body: dict[str, Any]) -> dict[str, Any]:
        lid = int(body["ID"])
        if lid not in self.leases:
            return {"result": {"ID": str(lid)}}  # no TTL: expired
        ttl = self.leases[lid][0]
        self.leases[lid] = (ttl, self.now + ttl)
        return {"result": {"ID": str(lid), "TTL": str(ttl)}}

    def _revoke(self, body: dict[str, Any]) -> dict[str, Any]:
        lid = int(body["ID"])
        if lid in self.leases:
            self._drop(lid)
        return {}

    def _txn(self, body: dict[str, Any]) -> dict[str, Any]:
        ok = all(self._holds(c) for c in body.get("compare", []))
        ops = body.get("success" if ok else "failure", [])
        out = []
        wrote = False
        for op in ops:
            if "request_range" in op:
                kv = self.kvs.get(base64.b64decode(op["request_range"]["key"]))
                rng: dict[str, Any] = {}
                if kv is not None:
                    k = op["request_range"]["key"]
                    item = {"key": k, "value": base64.b64encode(kv.value).decode()}
                    item["mod_revision"] = str(kv.mod)
                    if kv.lease:
                        item["lease"] = str(kv.lease)
                    rng = {"kvs": [item], "count": "1"}
                out.append({"response_range": rng})
            else:
                put = op["request_put"]
                lid = int(put.get("lease", 0))
                assert not lid or lid in self.leases, "etcd refuses a put on a lease it lacks"
                key = base64.b64decode(put["key"])
                self.kvs[key] = _Kv(base64.b64decode(put["value"]), self.rev + 1, lid)
                wrote = True
                out.append({"response_put": {}})
        if wrote:
            self.rev += 1
        got: dict[str, Any] = {"responses": out}
        if ok:
            got["succeeded"] = True
        return got

    def _holds(self, c: dict[str, Any]) -> bool:
        assert c["target"] == "MOD" and c["result"] == "EQUAL", c
        kv = self.kvs.get(base64.b64decode(c["key"]))
        return (kv.mod if kv else 0) == int(c["mod_revision"])
