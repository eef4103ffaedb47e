"""Shards in the config and the routing of requests (issue 14, items 1-2):
the [shards] tables and their one-line errors, the crossed layout of
`config init --shards`, each application's routing key, and the router that
sends every key to exactly one shard (and a planted misrouting caught)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import run_zmqfail
from hypothesis import given
from hypothesis import strategies as st

from zmqfail import config
from zmqfail.apps import ledger, orders
from zmqfail.cli.main import cli
from zmqfail.cli.shardmix import for_clients
from zmqfail.client.aio import AsyncClient
from zmqfail.client.shards import Router, ShardedClient
from zmqfail.client.sync import Client
from zmqfail.config import loads, render, render_shards
from zmqfail.errors import ConfigError, RoutingError
from zmqfail.shards import ALL, ShardConfig, crossed

pytestmark = pytest.mark.timeout(60)


def two_by_two(tmp: Path, **kw: Any) -> config.ClusterConfig:
    return loads(render_shards(2, 2, 5700, **kw), tmp)


def shards_text(shards_toml: str, nodes: int = 4, extra: str = "") -> str:
    """A plain config of `nodes` nodes (a, b, ...) with [cluster] primary
    removed, `shards_toml` and `extra` appended."""
    text = render(nodes=nodes, base_port=5700).replace('primary = "a"', "")
    return text + extra + "\n" + shards_toml


GOOD = """
[shards.x]
nodes = ["a", "b"]
keys = ["ABC", "XYZ"]

[shards.y]
nodes = ["c", "d"]
primary = "d"
keys = ["DEF", "QQQ"]
"""


# ------------------------------------------------------------------ config


def test_a_config_without_shards_is_one_shard_owning_every_key(tmp_path: Path) -> None:
    cfg = loads(render(nodes=2, base_port=5700), tmp_path)
    assert cfg.sharded == ()
    (only,) = cfg.shards
    assert (only.name, only.primary, only.nodes, only.keys) == (ALL, "a", ("a", "b"), None)
    assert only.owns("ABC") and only.owns("anything")
    # The one shard's config and each node's are the config itself, unchanged.
    assert cfg.shard(ALL) is cfg
    assert cfg.for_node("b") is cfg
    with pytest.raises(ConfigError, match="no shard named 's1'"):
        cfg.shard("s1")


def test_shards_parse_into_failover_groups(tmp_path: Path) -> None:
    cfg = loads(shards_text(GOOD), tmp_path)
    assert [(s.name, s.primary, s.nodes) for s in cfg.shards] == [
        ("x", "a", ("a", "b")),
        ("y", "d", ("c", "d")),
    ]
    assert cfg.shards[0].keys == frozenset({"ABC", "XYZ"})
    y = cfg.shard("y")
    assert [n.name for n in y.nodes] == ["c", "d"] and y.primary == "d"
    assert y.sharded == () and y.name == "local/y"
    assert [p.name for p in y.peers("d")] == ["c"]  # a server's peers are its shard's
    assert cfg.for_node("c") == y
    assert cfg.shard_of("b").name == "x"


@pytest.mark.parametrize(
    ("shards_toml", "extra", "message"),
    [
        (
            GOOD.replace('keys = ["DEF", "QQQ"]', 'keys = ["DEF", "XYZ"]'),
            "",
            "key 'XYZ' is owned by two shards: x and y",
        ),
        (
            GOOD.replace('keys = ["DEF", "QQQ"]', 'keys = ["DEF", 7]').replace(
                'keys = ["ABC", "XYZ"]', 'keys = ["ABC", "7"]'
            ),
            "",
            "key '7' is owned by two shards: x and y",
        ),
        (GOOD.replace('nodes = ["c", "d"]', "nodes = []"), "", r"\[shards.y\] has no servers"),
        (GOOD.replace('nodes = ["c", "d"]', "keys2 = 1\nnodes = []"), "", "unknown key"),
        (GOOD.replace('primary = "d"', 'primary = "d"\nwitness = 1'), "", "witness"),
        (GOOD.replace('nodes = ["c", "d"]', 'nodes = ["b", "d"]'), "", "node b is in two"),
        (GOOD.replace('nodes = ["c", "d"]', 'nodes = ["d"]'), "", r"\[nodes.c\] is in no shard"),
        (GOOD.replace('nodes = ["c", "d"]', 'nodes = ["c", "z"]'), "", r"no \[nodes.z\]"),
        (GOOD.replace('primary = "d"', 'primary = "a"'), "", "primary 'a' is not one of"),
        (GOOD.replace('keys = ["DEF", "QQQ"]', "keys = []"), "", "keys must be a non-empty"),
        (GOOD.replace('keys = ["DEF", "QQQ"]', "keys = [true]"), "", "non-empty strings"),
        (GOOD.replace("[shards.y]", "[shards.Y]"), "", "shard names are lower-case"),
        ("[shards]\n", "", r"\[shards\] must hold one"),
    ],
)
def test_bad_shards_are_one_line_errors(
    tmp_path: Path, shards_toml: str, extra: str, message: str
) -> None:
    text = shards_text(shards_toml, extra=extra)
    with pytest.raises(ConfigError, match=message) as err:
        loads(text, tmp_path)
    assert "\n" not in str(err.value)


def test_shards_refuse_a_cluster_primary_and_a_witness(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[cluster\] primary does not apply"):
        loads(render(nodes=4, base_port=5700) + GOOD, tmp_path)
    witness = '\n[witness]\nendpoint = "tcp://127.0.0.1:5790"\n'
    with pytest.raises(ConfigError, match=r"\[witness\] with \[shards\] is not supported"):
        loads(shards_text(GOOD, extra=witness), tmp_path)


def test_an_app_without_a_routing_key_cannot_be_sharded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = types.ModuleType("keyless_app")
    mod.create = orders.create  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keyless_app", mod)
    plain = render(nodes=4, base_port=5700).replace('app = "orders"', 'app = "keyless_app:create"')
    assert loads(plain, tmp_path).app.ref == "keyless_app:create"  # unsharded: fine
    sharded = plain.replace('primary = "a"', "") + GOOD
    with pytest.raises(ConfigError, match="names no routing key"):
        loads(sharded, tmp_path)


# ------------------------------------------------------------------ layout


def test_config_init_layout_two_shards_crossed_on_two_machines(tmp_path: Path) -> None:
    cfg = two_by_two(tmp_path)
    s1, s2 = cfg.shards
    # Paragraph 71: each machine runs one shard's primary and the other's backup.
    assert (s1.name, s1.primary, s1.nodes) == ("s1", "s1-m1", ("s1-m1", "s1-m2"))
    assert (s2.name, s2.primary, s2.nodes) == ("s2", "s2-m2", ("s2-m2", "s2-m1"))
    hosts = {n.name: n.client.removeprefix("tcp://").rsplit(":", 1)[0] for n in cfg.nodes}
    assert hosts == {
        "s1-m1": "127.0.0.1",
        "s1-m2": "127.0.0.2",
        "s2-m2": "127.0.0.2",
        "s2-m1": "127.0.0.1",
    }
    assert all(n.main.records.startswith(f"tcp://{hosts[n.name]}:") for n in cfg.nodes)
    # The instruments are shared out: each owned by exactly one shard.
    assert s1.keys is not None and s2.keys is not None and not s1.keys & s2.keys
    assert s1.keys | s2.keys == set(config.DEFAULT_INSTRUMENTS)
    assert len({n.data_dir for n in cfg.nodes}) == 4


def test_config_init_layout_other_hosts_and_the_ledger(tmp_path: Path) -> None:
    cfg = loads(render_shards(3, 2, 5700, ["10.0.0.1", "10.0.0.2"], app="ledger"), tmp_path)
    assert [s.primary for s in cfg.shards] == ["s1-m1", "s2-m2", "s3-m1"]
    assert {n.client.split(":")[1] for n in cfg.nodes} == {"//10.0.0.1", "//10.0.0.2"}
    owned = [s.keys or frozenset() for s in cfg.shards]
    assert sum(map(len, owned)) == 100 == len(frozenset().union(*owned))
    with pytest.raises(ConfigError, match="1 host"):
        render_shards(2, 2, 5700, ["10.0.0.1"])
    with pytest.raises(ConfigError, match="only 4 routing key"):
        render_shards(5, 2, 5700)


@given(st.integers(1, 26), st.integers(2, 26))
def test_crossed_puts_each_shard_on_two_machines_one_primary(shards: int, machines: int) -> None:
    placed = crossed(shards, machines)
    for i in range(shards):
        mine = [p for p in placed if p.shard == f"s{i + 1}"]
        assert len(mine) == 2 and len({p.machine for p in mine}) == 2
        assert sum(p.primary for p in mine) == 1
    assert len({p.node for p in placed}) == 2 * shards
    # Primaries spread: no machine leads two shards more than another does.
    led = [sum(p.primary and p.machine == m for p in placed) for m in range(machines)]
    assert max(led) - min(led) <= 1


def test_config_init_and_check_on_the_command_line(tmp_path: Path) -> None:
    made = run_zmqfail("config", "init", "--dir", str(tmp_path), "--shards", "2", "--machines", "2")
    assert made.returncode == 0, made.stderr
    path = tmp_path / "zmqfail.toml"
    checked = run_zmqfail("config", "check", str(path))
    assert checked.returncode == 0, checked.stderr
    assert "2 shard(s) (s1: s1-m1, s1-m2, 2 key(s); s2: s2-m2, s2-m1, 2 key(s))" in checked.stdout
    # A tool that does not know shards refuses, in one line.
    book = run_zmqfail("client", "book", "ABC", "--config", str(path))
    assert book.returncode == 1
    assert book.stderr.strip().count("\n") == 0
    assert "does not understand shards yet" in book.stderr
    # One that does: an unknown shard, or none where one group is meant, is
    # one line and exit 1, before any server is asked.
    for argv, said in (
        (("status", "--shard", "s9"), "no shard named 's9' in the config (shards: s1, s2)"),
        (("watch", "--once", "--shard", "s9"), "no shard named 's9'"),
        (("switchover",), "the config has shards (s1, s2): name one with --shard NAME"),
        (("switchover", "--shard", "s1", "--to", "s2-m1"), "s2-m1 is a server of shard s2"),
        (("promote", "s1-m9"), "no node named 's1-m9'"),
        (("kill", "backup", "--signal", "STOP"), "name one with --shard NAME"),
        (("kill", "--machine", "10.9.9.9"), "no server of the config runs on '10.9.9.9'"),
        (("kill", "--machine", "127.0.0.1", "--signal", "STOP"), "sends KILL or TERM"),
        (("client", "bench", "--shard", "nope"), "no shard named 'nope'"),
        (("client", "bench", "--history", "h.jsonl"), "go with --shard NAME"),
        (("health", "--shard", "s9"), "no shard named 's9'"),
        (("health", "--shard", "s1", "--node", "s2-m1"), "s2-m1 is a server of shard s2"),
        (("pause", "--shard", "s9"), "no shard named 's9'"),
        (("resume", "--shard", "s9"), "no shard named 's9'"),
        (("history", "--shard", "s9"), "no shard named 's9'"),
        (("history", "--shard", "s2", "--node", "s1-m1"), "s1-m1 is a server of shard s1"),
    ):
        got = CliRunner().invoke(cli, [*argv, "--config", str(path)])
        assert got.exit_code == 1, (argv, got.output)
        assert got.stderr.count("\n") == 1 and said in got.stderr, (argv, got.stderr)
    unknown = run_zmqfail("node", "--config", str(path), "--name", "s9-m1")
    assert unknown.returncode == 1 and "no node named 's9-m1'" in unknown.stderr
    both = run_zmqfail("config", "init", "--dir", str(tmp_path / "w"), "--shards", "2", "--witness")
    assert both.returncode == 1 and "not supported yet" in both.stderr


# ----------------------------------------------------------------- routing


def test_each_app_names_its_routing_key() -> None:
    assert orders.routing_keys({"op": "new", "instrument": "ABC"}) == ("ABC",)
    assert orders.routing_keys({"op": "cancel", "order_id": 3, "instrument": "XYZ"}) == ("XYZ",)
    assert orders.routing_keys({"op": "reports"}) == ()
    assert orders.routing_keys({"op": "new", "instrument": 5}) == ()
    assert ledger.routing_keys({"op": "balance", "account": 7}) == ("7",)
    assert ledger.routing_keys({"op": "transfer", "from": 1, "to": 2, "id": "t"}) == ("1", "2")
    assert ledger.routing_keys({"op": "transfer", "from": 1, "to": True}) == ()
    assert ledger.routing_keys({"op": "total"}) == ()


def misrouted(router: Router, shards: tuple[ShardConfig, ...]) -> list[str]:
    """Every key the router sends somewhere other than its one owner."""
    bad = []
    for sh in shards:
        for key in sorted(sh.keys or ()):
            owners = [s.name for s in shards if s.owns(key)]
            got = router.route({"instrument": key})
            if owners != [sh.name] or got != sh.name:
                bad.append(f"{key}: owners {owners}, routed to {got}")
    return bad


partitions = st.lists(
    st.sets(st.text("ABCDEFGHIJ", min_size=1, max_size=3), min_size=1, max_size=6),
    min_size=1,
    max_size=5,
)


def as_shards(groups: list[set[str]]) -> tuple[ShardConfig, ...]:
    """Disjoint shards from the groups (a key kept by the first group naming it)."""
    taken: set[str] = set()
    out = []
    for i, g in enumerate(groups):
        mine = frozenset(g - taken)
        taken |= mine
        out.append(ShardConfig(f"s{i + 1}", f"n{i}", (f"n{i}",), mine))
    return tuple(s for s in out if s.keys)


@given(partitions)
def test_every_key_goes_to_exactly_its_one_shard(groups: list[set[str]]) -> None:
    shards = as_shards(groups)
    router = Router(shards, orders.routing_keys)
    assert misrouted(router, shards) == []
    with pytest.raises(RoutingError, match="no shard owns key 'ZZZZ'"):
        router.route({"instrument": "ZZZZ"})


class WrongRouter(Router):
    """Planted bug: the last key of the first shard is sent to the next shard."""

    def shard_of_key(self, key: str) -> str:
        first = self.shards[0]
        if first.keys and key == max(first.keys):
            return self.shards[1 % len(self.shards)].name
        return super().shard_of_key(key)


def test_the_routing_check_catches_a_misrouting_router(tmp_path: Path) -> None:
    cfg = two_by_two(tmp_path)
    assert misrouted(Router(cfg.shards, orders.routing_keys), cfg.shards) == []
    bad = misrouted(WrongRouter(cfg.shards, orders.routing_keys), cfg.shards)
    assert len(bad) == 1 and "routed to s2" in bad[0]


def test_the_router_refuses_no_key_and_cross_shard_work(tmp_path: Path) -> None:
    cfg = loads(render_shards(2, 2, 5700, app="ledger"), tmp_path)
    router = Router(cfg.shards, cfg.app.router())
    assert router.route({"op": "balance", "account": 1}) == "s1"
    assert router.route({"op": "transfer", "from": 1, "to": 3, "id": "t", "amount": 1}) == "s1"
    with pytest.raises(RoutingError, match="spans shards s1, s2"):
        router.route({"op": "transfer", "from": 1, "to": 2, "id": "t", "amount": 1})
    with pytest.raises(RoutingError, match="names no routing key"):
        router.route({"op": "total"})
    with pytest.raises(RoutingError, match="no shard owns key '101'"):
        router.route({"op": "open", "account": 101})
    # Unsharded: the one shard takes every key.
    plain = loads(render(nodes=2, base_port=5700), tmp_path)
    assert Router(plain.shards, orders.routing_keys).route({"instrument": "NOPE"}) == ALL


def test_a_refused_request_sends_nothing(tmp_path: Path) -> None:
    cfg = two_by_two(tmp_path)  # no server runs: a send would wait, not raise
    with ShardedClient(cfg, timeout=0.5) as sc:
        for body in ({"op": "new", "instrument": "NOPE"}, {"op": "reports"}):
            with pytest.raises(RoutingError):
                sc.request(body)
            with pytest.raises(RoutingError):
                sc.submit(body)
        assert sc.outstanding() == 0
        assert sc.poll(0.05) == []  # a shard never sent to is not polled, so not lost
        assert {c.client_id for c in sc.clients.values()} == {sc.client_id}
        assert all(c.session.next_msg_id == 1 for c in sc.clients.values())
        with pytest.raises(RoutingError, match="no shard named 'nope'"):
            sc.client("nope")
    # The client of each shard dials that shard's servers only.
    endpoints = {n.client for n in cfg.shard("s2").nodes}
    with ShardedClient(cfg) as sc:
        assert set(sc.client("s2").endpoints) == endpoints


def test_the_cluster_helper_gives_each_shard_a_view_sharing_its_processes(
    tmp_path: Path,
) -> None:
    from zmqfail.cluster import Cluster

    cfg = two_by_two(tmp_path)
    started: list[str] = []

    def spawn(name: str) -> Any:
        started.append(name)
        return types.SimpleNamespace(poll=lambda: 0, wait=lambda timeout=None: 0, pid=-1)

    whole = Cluster(cfg, spawn)
    s2 = whole.shard("s2")
    assert [n.name for n in s2.cfg.nodes] == ["s2-m2", "s2-m1"]
    s2.start()
    assert started == ["s2-m2", "s2-m1"]
    assert set(whole.procs) == {"s2-m2", "s2-m1"}  # one set of processes
    with pytest.raises(ConfigError, match="no node named 's1-m1'"):
        s2.start("s1-m1")


def test_a_plain_client_refuses_a_sharded_config(tmp_path: Path) -> None:
    """One Client on every shard's servers would take them for one pair."""
    cfg = two_by_two(tmp_path)
    with pytest.raises(ConfigError, match="ShardedClient"):
        Client(cfg)
    with pytest.raises(ConfigError, match="ShardedClient"):
        AsyncClient(cfg)
    Client(cfg.shard(cfg.shards[0].name)).close()  # one shard's view is a pair


def test_a_shards_bench_mix_asks_only_for_its_own_keys() -> None:
    cfg = loads(render_shards(2, 2, 5700), Path("/tmp"))
    for sh in cfg.shards:
        view = for_clients(cfg, sh.name)
        assert [n.name for n in view.nodes] == list(sh.nodes)
        mix = view.app.workload(3)
        bodies = [mix.next_body() for _ in range(300)]
        assert sh.keys is not None
        assert {b["instrument"] for b in bodies} == set(sh.keys)
        # The servers run the real app: the view's app is not for them.
        with pytest.raises(ConfigError, match="for its clients"):
            view.app.create()
    # A config without shards: its own app, untouched.
    plain = loads(render(2, 5700), Path("/tmp"))
    assert for_clients(plain, ALL) is plain
