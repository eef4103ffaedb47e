"""Cluster configuration: render/load round trips, the embedded default, and a
ConfigError naming the problem for every kind of invalid file."""

from __future__ import annotations

import copy
import re
import string
import tomllib
from pathlib import Path
from typing import Any

import pytest

from zmqfail.apps.orders import OrdersConfig
from zmqfail.apps.orders.settings import parse as orders_settings
from zmqfail.config import (
    DEFAULT_INSTRUMENTS,
    ENDPOINT_OFFSETS,
    AppSpec,
    ClusterConfig,
    FailoverConfig,
    FlushConfig,
    NodeConfig,
    SessionsConfig,
    load,
    load_default,
    loads,
    parse,
    render,
)
from zmqfail.errors import ConfigError, ZmqfailError
from zmqfail.tablecheck import check_keys

pytestmark = pytest.mark.timeout(30)

BASE = 5700


def port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def host(endpoint: str) -> str:
    return endpoint.removeprefix("tcp://").rsplit(":", 1)[0]


def node_ports(n: NodeConfig) -> dict[str, int]:
    return {
        "client": port(n.client),
        "control": port(n.control),
        "main_records": port(n.main.records),
        "main_ack": port(n.main.ack),
        "main_heartbeat": port(n.main.heartbeat),
        "failsafe_records": port(n.failsafe.records),
        "failsafe_ack": port(n.failsafe.ack),
        "failsafe_heartbeat": port(n.failsafe.heartbeat),
    }


def raw_config(nodes: int = 2) -> dict[str, Any]:
    """The parsed TOML of a rendered cluster, to be broken by each test."""
    return tomllib.loads(render(nodes, BASE))


def parse_error(raw: dict[str, Any], tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        parse(raw, tmp_path)
    return str(info.value)


# --- render / loads round trip --------------------------------------------


@pytest.mark.parametrize(("count", "base"), [(1, 5700), (2, 5700), (3, 20000), (26, 40000)])
def test_render_round_trip(tmp_path: Path, count: int, base: int) -> None:
    cfg = loads(render(count, base), tmp_path)
    assert isinstance(cfg, ClusterConfig)
    names = [n.name for n in cfg.nodes]
    assert names == list(string.ascii_lowercase[:count])
    assert cfg.primary == "a"
    assert cfg.name == "local"
    assert cfg.path is None
    for i, n in enumerate(cfg.nodes):
        p = base + 10 * i
        assert node_ports(n) == {
            "client": p,
            "control": p + 1,
            "main_records": p + 2,
            "main_ack": p + 3,
            "main_heartbeat": p + 4,
            "failsafe_records": p + 5,
            "failsafe_ack": p + 6,
            "failsafe_heartbeat": p + 7,
        }
        assert node_ports(n) == {k: p + off for k, off in ENDPOINT_OFFSETS.items()}
        assert n.client == f"tcp://127.0.0.1:{p}"
        assert n.data_dir == tmp_path / n.name
        assert n.link("main") is n.main
        assert n.link("failsafe") is n.failsafe
    all_ports = [pt for n in cfg.nodes for pt in node_ports(n).values()]
    assert len(all_ports) == len(set(all_ports)) == 8 * count


def test_render_policies_match_dataclass_defaults(tmp_path: Path) -> None:
    cfg = loads(render(2, BASE), tmp_path)
    assert cfg.flush == FlushConfig()
    assert cfg.failover == FailoverConfig()
    assert cfg.sessions == SessionsConfig()
    assert cfg.app.name == "orders"
    assert orders_settings(cfg.app.settings) == OrdersConfig()
    assert orders_settings(cfg.app.settings).instruments == DEFAULT_INSTRUMENTS


@pytest.mark.parametrize("app", ["orders", "ledger"])
def test_render_each_shipped_app(tmp_path: Path, app: str) -> None:
    cfg = loads(render(2, BASE, app=app), tmp_path)
    assert cfg.app.name == app
    cfg.app.create()  # its own settings, as rendered, are accepted


def test_render_refuses_unknown_app() -> None:
    with pytest.raises(ConfigError, match="--app must be one of ledger, orders"):
        render(2, BASE, app="nope")


def test_render_hosts_and_name(tmp_path: Path) -> None:
    text = render(2, BASE, host="10.0.0.1", failsafe_host="10.9.0.1", name="prod")
    cfg = loads(text, tmp_path)
    assert cfg.name == "prod"
    a = cfg.node("a")
    assert host(a.client) == "10.0.0.1"
    assert host(a.main.records) == host(a.main.ack) == host(a.main.heartbeat) == "10.0.0.1"
    assert {host(a.failsafe.records), host(a.failsafe.ack), host(a.failsafe.heartbeat)} == {
        "10.9.0.1"
    }
    assert host(a.control) == "127.0.0.1"  # control stays on loopback


def test_failsafe_host_defaults_to_host(tmp_path: Path) -> None:
    cfg = loads(render(1, BASE, host="10.0.0.1"), tmp_path)
    assert host(cfg.nodes[0].failsafe.ack) == "10.0.0.1"


def test_load_resolves_data_dir_against_file_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cdir = tmp_path / "cluster"
    cdir.mkdir()
    path = cdir / "zmqfail.toml"
    path.write_text(render(2, BASE), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load(Path("..") / "cluster" / "zmqfail.toml")
    assert cfg.path == path.resolve()
    assert cfg.node("a").data_dir == cdir.resolve() / "a"
    assert cfg.node("b").data_dir == cdir.resolve() / "b"
    assert cfg == load(str(path))  # str paths work too


def test_absolute_and_nested_data_dirs(tmp_path: Path) -> None:
    raw = raw_config()
    absolute = tmp_path / "abs" / "a-data"
    raw["nodes"]["a"]["data_dir"] = str(absolute)
    raw["nodes"]["b"]["data_dir"] = "data/b"
    cfg = parse(raw, tmp_path / "base")
    assert cfg.node("a").data_dir == absolute
    assert cfg.node("b").data_dir == tmp_path / "base" / "data" / "b"


def test_data_dir_defaults_to_node_name(tmp_path: Path) -> None:
    raw = raw_config()
    del raw["nodes"]["b"]["data_dir"]
    assert parse(raw, tmp_path).node("b").data_dir == tmp_path / "b"


def test_load_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cwd = Path.cwd()
    assert cwd == tmp_path.resolve()
    cfg = load_default()
    assert [n.name for n in cfg.nodes] == ["a", "b"]
    assert cfg.primary == "a"
    assert cfg.name == "default"
    assert cfg.node("a").data_dir == cwd / "zmqfail-data" / "a"
    assert cfg.node("b").data_dir == cwd / "zmqfail-data" / "b"
    assert port(cfg.node("a").client) == 5700
    assert port(cfg.node("b").client) == 5710


def test_explicit_values_are_read(tmp_path: Path) -> None:
    raw = raw_config(3)
    raw["cluster"]["primary"] = "c"
    raw["flush"]["interval_ms"] = 7
    raw["failover"]["heartbeat_misses"] = 9
    raw["app"]["instruments"] = ["A", "B.C", "Z9"]
    raw["app"]["price_decimals"] = 8
    raw["sessions"]["max_sessions"] = 3
    cfg = parse(raw, tmp_path, tmp_path / "x.toml")
    assert cfg.primary == "c"
    assert cfg.flush.interval_ms == 7
    assert cfg.flush.max_records == FlushConfig().max_records
    assert cfg.failover.heartbeat_misses == 9
    assert orders_settings(cfg.app.settings).instruments == ("A", "B.C", "Z9")
    assert orders_settings(cfg.app.settings).price_decimals == 8
    assert cfg.sessions == SessionsConfig(max_sessions=3)
    assert cfg.path == tmp_path / "x.toml"


def test_optional_sections_may_be_omitted(tmp_path: Path) -> None:
    raw = raw_config()
    for key in ("app", "sessions", "flush", "failover", "cluster"):
        del raw[key]
    cfg = parse(raw, tmp_path)
    assert cfg.name == "zmqfail"
    assert cfg.primary == "a"  # the first node
    assert cfg.flush == FlushConfig()
    assert cfg.app == AppSpec("orders", {})  # the order engine, its defaults
    assert cfg.sessions == SessionsConfig()


# --- node lookup -----------------------------------------------------------


def test_node_and_peers(tmp_path: Path) -> None:
    cfg = loads(render(3, BASE), tmp_path)
    assert cfg.node("b").name == "b"
    assert [n.name for n in cfg.peers("a")] == ["b", "c"]
    assert [n.name for n in cfg.peers("b")] == ["a", "c"]
    assert all(n.name != "c" for n in cfg.peers("c"))
    assert len(cfg.peers("c")) == 2


def test_unknown_node_lists_known_nodes(tmp_path: Path) -> None:
    cfg = loads(render(3, BASE), tmp_path)
    with pytest.raises(ConfigError) as info:
        cfg.node("zz")
    msg = str(info.value)
    assert "'zz'" in msg
    assert "a, b, c" in msg
    assert issubclass(ConfigError, ZmqfailError)


# --- errors ------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load(missing)
    assert str(missing) in str(info.value)


def test_unreadable_path_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path)  # a directory


def test_non_utf8_file_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b"\xff\xfe[cluster]\n")
    with pytest.raises(ConfigError):
        load(path)


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        loads("[cluster\nname = 1", tmp_path)
    path = tmp_path / "broken.toml"
    path.write_text("x = = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid TOML") as info:
        load(path)
    assert "broken.toml" in str(info.value)


@pytest.mark.parametrize("text", ["", "[cluster]\nname = 'x'\n", "[nodes]\n"])
def test_no_nodes(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"no \[nodes\.NAME\]"):
        loads(text, tmp_path)


@pytest.mark.parametrize("bad", ["A", "1a", "a b", "a.b", "-a", "a" * 33, "é"])
def test_bad_node_name(tmp_path: Path, bad: str) -> None:
    raw = raw_config()
    raw["nodes"][bad] = raw["nodes"].pop("b")
    msg = parse_error(raw, tmp_path)
    assert f"[nodes.{bad}]" in msg
    assert "node names" in msg


def test_node_name_limits_accepted(tmp_path: Path) -> None:
    raw = raw_config()
    long_name = "z" + "9_-" * 10 + "x"  # 32 characters
    assert len(long_name) == 32
    raw["nodes"][long_name] = raw["nodes"].pop("b")
    assert parse(raw, tmp_path).node(long_name).data_dir == tmp_path / "b"


def test_node_not_a_table(tmp_path: Path) -> None:
    raw = raw_config()
    raw["nodes"]["c"] = 5
    assert "[nodes.c] must be a table" in parse_error(raw, tmp_path)


@pytest.mark.parametrize("key", ["client", "control"])
def test_missing_endpoint(tmp_path: Path, key: str) -> None:
    raw = raw_config()
    del raw["nodes"]["b"][key]
    msg = parse_error(raw, tmp_path)
    assert f"[nodes.b] {key}" in msg
    assert "None" in msg


@pytest.mark.parametrize("link", ["main", "failsafe"])
@pytest.mark.parametrize("key", ["records", "ack", "heartbeat"])
def test_missing_link_endpoint(tmp_path: Path, link: str, key: str) -> None:
    raw = raw_config()
    del raw["nodes"]["a"][link][key]
    msg = parse_error(raw, tmp_path)
    assert f"[nodes.a] {link} lacks {key}" in msg


@pytest.mark.parametrize("link", ["main", "failsafe"])
def test_missing_link_table(tmp_path: Path, link: str) -> None:
    raw = raw_config()
    del raw["nodes"]["a"][link]
    assert f"[nodes.a] {link} must be a table" in parse_error(raw, tmp_path)


@pytest.mark.parametrize(
    "bad",
    [
        "127.0.0.1:5700",
        "tcp://127.0.0.1",
        "tcp://127.0.0.1:",
        "tcp://127.0.0.1:port",
        "udp://127.0.0.1:5700",
        "tcp://127.0.0.1:123456",
        "tcp://:5700",
        "tcp://a b:5700",
        "",
        5700,
        ["tcp://127.0.0.1:5700"],
    ],
)
def test_malformed_endpoint(tmp_path: Path, bad: object) -> None:
    raw = raw_config()
    raw["nodes"]["a"]["control"] = bad
    msg = parse_error(raw, tmp_path)
    assert "[nodes.a] control" in msg
    assert "must be an endpoint" in msg
    assert repr(bad) in msg


@pytest.mark.parametrize("bad", ["tcp://127.0.0.1:0", "tcp://127.0.0.1:65536", "tcp://h:99999"])
def test_endpoint_port_out_of_range(tmp_path: Path, bad: str) -> None:
    raw = raw_config()
    raw["nodes"]["b"]["main"]["ack"] = bad
    msg = parse_error(raw, tmp_path)
    assert "[nodes.b] main.ack" in msg
    assert "out of range" in msg


def test_endpoint_port_bounds_accepted(tmp_path: Path) -> None:
    raw = raw_config()
    raw["nodes"]["a"]["control"] = "tcp://*:1"
    raw["nodes"]["b"]["control"] = "tcp://localhost:65535"
    cfg = parse(raw, tmp_path)
    assert cfg.node("a").control == "tcp://*:1"
    assert cfg.node("b").control == "tcp://localhost:65535"


def test_duplicate_endpoint_across_nodes(tmp_path: Path) -> None:
    raw = raw_config()
    dup = raw["nodes"]["a"]["main"]["records"]
    raw["nodes"]["b"]["failsafe"]["heartbeat"] = dup
    msg = parse_error(raw, tmp_path)
    assert dup in msg
    assert "used twice" in msg
    assert "a.main.records" in msg
    assert "b.failsafe.heartbeat" in msg


def test_duplicate_endpoint_within_a_node(tmp_path: Path) -> None:
    raw = raw_config()
    raw["nodes"]["a"]["control"] = raw["nodes"]["a"]["client"]
    msg = parse_error(raw, tmp_path)
    assert "a.client" in msg
    assert "a.control" in msg


@pytest.mark.parametrize("section", ["flush", "failover", "sessions"])
def test_unknown_key_in_section(tmp_path: Path, section: str) -> None:
    raw = raw_config()
    raw[section]["bogus_key"] = 5
    msg = parse_error(raw, tmp_path)
    assert f"[{section}]" in msg
    assert "unknown key(s) bogus_key" in msg


def test_unknown_keys_one_message_for_every_table(tmp_path: Path) -> None:
    """Every table names all its unknown keys and the known ones alike (one
    helper, tablecheck.check_keys); a table of known keys passes."""
    with pytest.raises(ConfigError) as info:
        check_keys(
            "[flush]", {"zeta": 1, "interval_ms": 5, "alpha": 2}, ["max_bytes", "interval_ms"]
        )
    assert str(info.value) == "[flush] unknown key(s) alpha, zeta (known: interval_ms, max_bytes)"
    check_keys("[flush]", {"interval_ms": 5}, ["max_bytes", "interval_ms"])
    raw = tomllib.loads(render(2, BASE, witness=True, secure=True))
    tables = "cluster nodes.b sessions flush failover retention witness security app"
    for path in tables.split():
        broken = copy.deepcopy(raw)
        table = broken
        for part in path.split("."):
            table = table[part]
        table["bogus_key"] = 1
        msg = parse_error(broken, tmp_path)
        assert re.search(r"unknown key\(s\) bogus_key \(known: [a-z_]+(, [a-z_]+)*\)$", msg), msg


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("flush", "interval_ms"),
        ("flush", "max_records"),
        ("flush", "segment_bytes"),
        ("failover", "heartbeat_interval_ms"),
        ("failover", "client_timeout_ms"),
        ("sessions", "window"),
        ("sessions", "max_sessions"),
        ("app", "price_decimals"),
        ("app", "max_closed_orders"),
    ],
)
@pytest.mark.parametrize("value", [0, -1, True, False, 1.5, "10", [1]])
def test_non_positive_or_non_int_value(
    tmp_path: Path, section: str, key: str, value: object
) -> None:
    raw = raw_config()
    raw[section][key] = value
    msg = parse_error(raw, tmp_path)
    assert f"[{section}] {key} must be a positive integer" in msg
    assert repr(value) in msg


def test_bool_where_int_expected_via_toml(tmp_path: Path) -> None:
    text = re.sub(r"heartbeat_misses = \d+", "heartbeat_misses = true", render(2, BASE))
    assert "heartbeat_misses = true" in text
    with pytest.raises(ConfigError, match="heartbeat_misses must be a positive integer"):
        loads(text, tmp_path)


def test_price_decimals_upper_bound(tmp_path: Path) -> None:
    raw = raw_config()
    raw["app"]["price_decimals"] = 9
    assert "price_decimals must be at most 8" in parse_error(raw, tmp_path)


@pytest.mark.parametrize("primary", ["zz", "A", "", 1])
def test_primary_not_a_node(tmp_path: Path, primary: object) -> None:
    raw = raw_config()
    raw["cluster"]["primary"] = primary
    msg = parse_error(raw, tmp_path)
    assert "[cluster] primary" in msg
    assert repr(primary) in msg


@pytest.mark.parametrize("primary", [["a"], {"name": "a"}], ids=["array", "table"])
def test_unhashable_primary_is_config_error(tmp_path: Path, primary: object) -> None:
    raw = raw_config()
    raw["cluster"]["primary"] = primary
    parse_error(raw, tmp_path)


@pytest.mark.parametrize("name", ["", 5])
def test_bad_cluster_name(tmp_path: Path, name: object) -> None:
    raw = raw_config()
    raw["cluster"]["name"] = name
    assert "[cluster] name" in parse_error(raw, tmp_path)


@pytest.mark.parametrize(
    "instruments",
    [["abc"], ["A B"], ["1AB"], ["ABCDEFGHIJKLM"], [""], [1], [], "ABC", ["ABC", None]],
)
def test_bad_instrument_symbols(tmp_path: Path, instruments: object) -> None:
    raw = raw_config()
    raw["app"]["instruments"] = instruments
    assert "[app] instruments must be a list of symbols" in parse_error(raw, tmp_path)


def test_duplicate_instrument(tmp_path: Path) -> None:
    raw = raw_config()
    raw["app"]["instruments"] = ["ABC", "XYZ", "ABC"]
    assert "lists a symbol twice" in parse_error(raw, tmp_path)


@pytest.mark.parametrize("table", ["extra", "node", "flushes"])
def test_unknown_top_level_table(tmp_path: Path, table: str) -> None:
    raw = raw_config()
    raw[table] = {}
    msg = parse_error(raw, tmp_path)
    assert "unknown top-level" in msg
    assert table in msg


@pytest.mark.parametrize("section", ["cluster", "nodes", "app", "sessions", "flush", "failover"])
def test_section_not_a_table(tmp_path: Path, section: str) -> None:
    raw = raw_config()
    raw[section] = 3
    assert f"[{section}] must be a table" in parse_error(raw, tmp_path)


def test_parse_does_not_modify_its_input(tmp_path: Path) -> None:
    raw = raw_config()
    before = copy.deepcopy(raw)
    parse(raw, tmp_path)
    assert raw == before


@pytest.mark.parametrize("nodes", [0, 27, -1])
def test_render_refuses_node_count(nodes: int) -> None:
    with pytest.raises(ConfigError, match="--nodes must be between 1 and 26"):
        render(nodes, BASE)


@pytest.mark.parametrize(("nodes", "base"), [(2, 65530), (1, 65535), (26, 65300), (2, 1023)])
def test_render_refuses_ports_out_of_range(nodes: int, base: int) -> None:
    with pytest.raises(ConfigError, match="65535"):
        render(nodes, base)


def test_render_accepts_highest_fitting_base(tmp_path: Path) -> None:
    base = 65535 - 10 * 2
    cfg = loads(render(2, base), tmp_path)
    assert max(pt for n in cfg.nodes for pt in node_ports(n).values()) <= 65535
    assert port(cfg.node("b").failsafe.heartbeat) == base + 17


def test_the_example_config_in_etc_loads() -> None:
    cfg = load(Path(__file__).resolve().parent.parent / "etc" / "zmqfail.toml")
    assert cfg.app.name == "orders" and cfg.sessions == SessionsConfig()
    assert orders_settings(cfg.app.settings) == OrdersConfig()


def test_old_engine_table_is_one_line_saying_where_it_went(tmp_path: Path) -> None:
    raw = raw_config()
    raw["engine"] = {"dedup_window": 1024}
    msg = parse_error(raw, tmp_path)
    assert "\n" not in msg and "[app]" in msg and "[sessions] window" in msg


@pytest.mark.parametrize(
    "ref",
    [
        "nope",
        "no_such_module:create",
        "zmqfail.app:nothing_here",
        "zmqfail.apps.ledger.settings:LedgerConfig",  # builds something, not an application
        5,
    ],
)
def test_bad_app_reference_is_one_line(tmp_path: Path, ref: object) -> None:
    raw = raw_config()
    raw["cluster"]["app"] = ref
    msg = parse_error(raw, tmp_path)
    assert "\n" not in msg and "[cluster] app" in msg
