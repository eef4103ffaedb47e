"""CurveZMQ without a cluster: key files, the [security] table, the ZAP gate."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq.auth
from conftest import run_zmqfail

from zmqfail import config
from zmqfail.client.control import call
from zmqfail.client.sync import Client
from zmqfail.errors import ConfigError
from zmqfail.security import Curve, generate, loopback
from zmqfail.zap import LOG_EVERY, MAX_TRACKED, Gate


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_keys_generate_writes_pairs_with_modes_and_never_overwrites(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    old = os.umask(0)  # the modes must not depend on the caller's umask
    try:
        r = run_zmqfail("keys", "generate", str(d), "a", "client")
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    for name in ("a", "client"):
        assert _mode(d / f"{name}.key_secret") == 0o600
        assert _mode(d / f"{name}.key") == 0o644
        public, secret = zmq.auth.load_certificate(d / f"{name}.key_secret")
        assert secret is not None and len(secret) == 40
        assert zmq.auth.load_certificate(d / f"{name}.key") == (public, None)
    before = (d / "a.key_secret").read_bytes()
    again = run_zmqfail("keys", "generate", str(d), "b", "a")
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "a.key" in again.stderr and "exists" in again.stderr
    assert (d / "a.key_secret").read_bytes() == before
    assert not (d / "b.key").exists()  # checked before anything is written


def test_config_init_secure_writes_a_cluster_with_its_keys(tmp_path: Path) -> None:
    r = run_zmqfail("config", "init", "--dir", str(tmp_path), "--secure", "--witness")
    assert r.returncode == 0, r.stderr
    cfg = config.load(tmp_path / "zmqfail.toml")
    sec = cfg.security
    assert sec is not None and sec.curve == frozenset(Curve)
    assert cfg.nodes[0].security == sec and cfg.witness is not None and cfg.witness.security == sec
    for name in ("a", "b", "witness"):
        assert _mode(tmp_path / "keys" / "servers" / f"{name}.key_secret") == 0o600
        assert len(sec.server_pair(name).secret) == 40
    assert sec.client_pair().public != sec.operator_pair().public
    check = run_zmqfail("config", "check", str(tmp_path / "zmqfail.toml"))
    assert check.returncode == 0 and "CurveZMQ on clients, control, replication" in check.stdout


def test_the_default_config_stays_plain() -> None:
    assert config.load_default().security is None
    assert "[security]" not in config.DEFAULT_TOML


def _secure_text(tmp_path: Path, extra: str = "") -> str:
    return config.render(secure=True) + extra


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('curve = ["clients"', 'curve = ["clients", "telepathy"'), "curve must be a list of"),
        (("[security]", "[security]\nkeyz_dir = 'x'"), "unknown key(s) keyz_dir"),
        (("client_key = ", "client_key = 5 #"), "client_key must be a path"),
        (
            ('curve = ["clients", "replication", "control"]', 'curve = ["clients"]'),
            "is not on loopback",
        ),
    ],
)
def test_security_table_errors_are_one_line(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    text = config.render(secure=True).replace(*edit, 1)
    if "loopback" in message:
        text = text.replace('control = "tcp://127.0.0.1:', 'control = "tcp://0.0.0.0:', 1)
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path / "c.toml")
    assert message in str(info.value) and "\n" not in str(info.value)
    r = run_zmqfail("config", "check", str(tmp_path / "c.toml"))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and message in r.stderr


def test_missing_or_unreadable_keys_are_one_line_config_errors(tmp_path: Path) -> None:
    (tmp_path / "zmqfail.toml").write_text(config.render(secure=True))
    cfg = config.load(tmp_path / "zmqfail.toml")  # parsing reads no key
    with pytest.raises(ConfigError, match=r"client key .* does not exist \(`zmqfail keys"):
        Client(cfg)
    with pytest.raises(ConfigError, match=r"operator key .* does not exist"):
        call(cfg.nodes[0], "status")
    r = run_zmqfail("status", "--config", str(tmp_path / "zmqfail.toml"))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "operator key" in r.stderr
    keys = tmp_path / "keys" / "clients"
    generate(keys, "client")
    (keys / "client.key_secret").write_text("not a key\n")
    with pytest.raises(ConfigError, match=r"client\.key_secret is not a ZeroMQ key file"):
        Client(cfg)
    (keys / "client.key_secret").unlink()
    (keys / "client.key").rename(keys / "client.key_secret")  # a public key where a pair goes
    with pytest.raises(ConfigError, match=r"holds no secret key \(give the .key_secret file\)"):
        Client(cfg)
    if os.geteuid() != 0:  # root reads anything
        generate(keys, "other")
        (keys / "other.key_secret").chmod(0)
        (keys / "client.key_secret").unlink()
        (keys / "other.key_secret").rename(keys / "client.key_secret")
        with pytest.raises(ConfigError, match="not readable"):
            Client(cfg)


def test_a_node_without_its_key_stops_with_one_line_before_touching_data(tmp_path: Path) -> None:
    (tmp_path / "zmqfail.toml").write_text(config.render(secure=True))
    r = run_zmqfail("node", "--config", str(tmp_path / "zmqfail.toml"), "--name", "a")
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert "server a's secret key" in r.stderr and "does not exist" in r.stderr
    assert not (tmp_path / "a").exists()


def test_an_empty_allow_list_is_refused(tmp_path: Path) -> None:
    from zmqfail.zap import for_server

    (tmp_path / "zmqfail.toml").write_text(config.render(secure=True))
    cfg = config.load(tmp_path / "zmqfail.toml")
    for name in ("a", "b"):
        generate(tmp_path / "keys" / "servers", name)
    (tmp_path / "keys" / "clients").mkdir()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        with pytest.raises(ConfigError, match=r"holds no \*\.key file: nobody could connect"):
            for_server(cfg, "a", ctx)
    finally:
        ctx.destroy(linger=0)


def test_loopback_endpoints() -> None:
    assert loopback("tcp://127.0.0.1:5701") and loopback("tcp://localhost:1")
    assert loopback("tcp://[::1]:5701")
    assert not loopback("tcp://0.0.0.0:5701") and not loopback("tcp://10.0.0.2:5701")
    assert not loopback("tcp://db-host:5701")


def test_gate_allows_listed_keys_and_logs_refusals_once_a_minute() -> None:
    good, bad = b"g" * 40, b"b" * 40
    gate = Gate({"clients": frozenset({good}), "replication": frozenset()})
    assert gate.decide("clients", good, 0.0) == (True, None)
    assert gate.decide("replication", good, 0.0) == (False, 0)  # allowed per channel only
    assert gate.decide("clients", bad, 0.0) == (False, 0)  # first refusal: logged
    assert gate.decide("clients", bad, 1.0) == (False, None)  # retries: counted, not logged
    assert gate.decide("clients", bad, 2.0) == (False, None)
    assert gate.decide("clients", bad, LOG_EVERY) == (False, 2)  # then one line with the count
    assert gate.decide("control", bad, 0.0) == (False, 0)  # an unknown domain lets no one in
    assert gate.refused == 6
    for i in range(MAX_TRACKED + 5):  # fresh keys from a flood: remembered, but boundedly
        gate.decide("clients", i.to_bytes(40, "big"), 0.0)
    assert len(gate._last) <= MAX_TRACKED
