"""A shard's share of the application's request mix, for `client bench --shard`.

The bench's clients draw requests from the application's mix
(``AppSpec.workload``), which spans every key. Against one shard only the
requests for the keys it owns make sense (the others would land on a server
that does not own them), so the bench's clients get a view of the shard's
config whose app is this module: its ``workload`` draws from the real mix and
keeps what routes to the shard. The servers run the real application; this
view is never given to a server (``create`` refuses).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from zmqfail.app import AppSpec, RoutingKeys, Workload
from zmqfail.config import ClusterConfig
from zmqfail.errors import ConfigError, ZmqfailError

DRAWS = 100_000  # draws without one request for the shard: its keys are not in the mix


def for_clients(whole: ClusterConfig, shard: str) -> ClusterConfig:
    """Shard `shard` of `whole` as its clients see it: its servers, and the
    app's mix narrowed to its keys (a shard owning every key: the app as is)."""
    group = whole.shard(shard)
    keys = next(sh.keys for sh in whole.shards if sh.name == shard)
    if keys is None:
        return group
    settings = {"app": group.app.ref, "settings": group.app.settings, "keys": sorted(keys)}
    return replace(group, app=AppSpec(f"{__name__}:create", settings))


class ShardMix:
    """The real mix, less what another shard owns."""

    def __init__(self, inner: Workload, keys_of: RoutingKeys, owned: frozenset[str]) -> None:
        self.inner, self.keys_of, self.owned = inner, keys_of, owned

    def next_body(self) -> dict[str, Any]:
        for _ in range(DRAWS):
            body = self.inner.next_body()
            keys = self.keys_of(body)
            if keys and all(k in self.owned for k in keys):
                return body
        raise ZmqfailError(f"the app's mix drew no request for keys {sorted(self.owned)[:5]}")

    def on_ok(self, body: dict[str, Any], result: dict[str, Any]) -> None:
        self.inner.on_ok(body, result)

    def is_write(self, body: dict[str, Any]) -> bool:
        return self.inner.is_write(body)


def workload(settings: dict[str, Any], seed: int) -> Workload:
    real = AppSpec(settings["app"], settings["settings"])
    return ShardMix(real.workload(seed), real.router(), frozenset(settings["keys"]))


def create(settings: dict[str, Any]) -> object:
    raise ConfigError("a shard's request mix is for its clients; its servers run the real app")
