"""CurveZMQ: who may talk to a server, on which channel, and the key files.

ZeroMQ's own CURVE mechanism encrypts a connection and proves both ends'
keys; the ZAP handler in each server process (``zmqfail/zap.py``) then
decides which client keys it lets in. This module holds what is not I/O on
sockets: the ``[security]`` table, reading and writing key files, and how a
socket is set up as a CURVE server or client. Keys are read when a process
needs them, not when the config is parsed: a client's host holds only the
client's secret key, a server's host only its own.

Key files are ZeroMQ's certificate format (``zmq.auth.load_certificate``
reads them): ``NAME.key`` holds a public key, ``NAME.key_secret`` the pair,
and is readable by its owner only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from zmqfail.errors import ConfigError
from zmqfail.tablecheck import check_keys

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


class Curve(StrEnum):
    """The channels CURVE can be switched on for, each a ZAP domain of its own."""

    CLIENTS = "clients"  # client frontends (and the servers' probes of each other's)
    REPLICATION = "replication"  # records, commit acks and heartbeats, both links
    CONTROL = "control"  # operator tools: status, cut, stop, switchover
    WITNESS = "witness"  # the witness's one socket (servers' asks and operators' status)


@dataclass(frozen=True, slots=True)
class KeyPair:
    public: bytes  # Z85, 40 characters
    secret: bytes


@dataclass(frozen=True, slots=True)
class Security:
    """The ``[security]`` table, paths resolved against the config's directory."""

    curve: frozenset[Curve]
    keys_dir: Path  # every server's NAME.key (and, on its own host, NAME.key_secret)
    clients_allowed_dir: Path  # public keys of the clients a frontend lets in
    operators_allowed_dir: Path  # public keys of the operator tools control lets in
    client_key: Path  # this host's client key pair (clients, bench, demo)
    operator_key: Path  # this host's operator key pair (status, kill, switchover...)

    def on(self, channel: Curve) -> bool:
        return channel in self.curve

    def server_pair(self, name: str) -> KeyPair:
        return load_pair(self.keys_dir / f"{name}.key_secret", f"server {name}'s secret key")

    def server_public(self, name: str) -> bytes:
        return load_public(self.keys_dir / f"{name}.key", f"server {name}'s public key")

    def client_pair(self) -> KeyPair:
        return load_pair(self.client_key, "the client key ([security] client_key)")

    def operator_pair(self) -> KeyPair:
        return load_pair(self.operator_key, "the operator key ([security] operator_key)")


@dataclass(frozen=True, slots=True)
class Dial:
    """What a connecting socket needs: its own pair and the server's public key."""

    pair: KeyPair
    server: bytes

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.pair.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.pair.secret)


@dataclass(frozen=True, slots=True)
class ServerKeys:
    """A server's (or the witness's) keys: its own pair and the public keys
    of everyone it dials, by name. Channels not in ``curve`` stay plain."""

    sec: Security
    pair: KeyPair
    publics: dict[str, bytes]

    @classmethod
    def load(cls, sec: Security, me: str, others: list[str]) -> ServerKeys:
        pair = sec.server_pair(me)  # its own first: the one that is most likely missing
        return cls(sec, pair, {n: sec.server_public(n) for n in others if n != me})

    def serve(self, sock: zmq.Socket[bytes], channel: Curve) -> None:
        if self.sec.on(channel):
            serve(sock, self.pair, channel)

    def dial(self, sock: zmq.Socket[bytes], channel: Curve, peer: str) -> None:
        if self.sec.on(channel):
            Dial(self.pair, self.publics[peer]).apply(sock)


def serve(sock: zmq.Socket[bytes], pair: KeyPair, channel: Curve) -> None:
    """Make `sock` a CURVE server whose clients the ZAP handler judges in
    `channel`'s domain. Before bind: a connection accepted first would be plain."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, pair.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, pair.secret)
    sock.setsockopt(zmq.ZAP_DOMAIN, channel.value.encode())


# ---------------------------------------------------------------- key files
def _load(path: Path, what: str) -> tuple[bytes | None, bytes | None]:
    if not path.is_file():  # pyzmq says only "invalid certificate file"
        raise ConfigError(f"{what}: {path} does not exist (`zmqfail keys generate`)")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except PermissionError:
        raise ConfigError(f"{what}: {path} is not readable by this user") from None
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"{what}: {path} is not a ZeroMQ key file") from None
    if public is None or len(public) != 40:
        raise ConfigError(f"{what}: {path} holds no public key")
    return public, secret


def load_pair(path: Path, what: str) -> KeyPair:
    public, secret = _load(path, what)
    if secret is None or len(secret) != 40:
        raise ConfigError(f"{what}: {path} holds no secret key (give the .key_secret file)")
    assert public is not None
    return KeyPair(public, secret)


def load_public(path: Path, what: str) -> bytes:
    public, _ = _load(path, what)
    assert public is not None
    return public


def allowed(directory: Path, what: str) -> frozenset[bytes]:
    """The public keys of every NAME.key in `directory` (an empty one is an
    error: it would lock everyone out, which is never what was meant)."""
    try:
        files = sorted(directory.glob("*.key"))
    except OSError as exc:  # pragma: no cover - glob swallows most
        raise ConfigError(f"{what}: cannot list {directory}: {exc.strerror}") from None
    if not directory.is_dir():
        raise ConfigError(f"{what}: {directory} is not a directory")
    keys = frozenset(load_public(f, what) for f in files)
    if not keys:
        raise ConfigError(f"{what}: {directory} holds no *.key file: nobody could connect")
    return keys


def _write(path: Path, mode: int, kind: str, keys: dict[str, bytes]) -> None:
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    lines = [
        f"#   zmqfail CURVE {kind} key, generated {stamp}",
        *(
            ["#   Secret: keep this file on its own host, readable by its owner only."]
            if "secret-key" in keys
            else []
        ),
        "",
        "metadata",
        "curve",
        *(f'    {k} = "{v.decode("ascii")}"' for k, v in keys.items()),
        "",
    ]
    # O_EXCL: never replace a key someone relies on; the mode is set at
    # creation, so a secret is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write("\n".join(lines))
    os.chmod(path, mode)  # the umask may have taken bits away from the public file


def generate(directory: Path, name: str) -> tuple[Path, Path]:
    """A new key pair: DIR/NAME.key (public) and DIR/NAME.key_secret (0600).
    Refuses to replace existing files."""
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"a key name is a plain file name, got {name!r}")
    public_path, secret_path = directory / f"{name}.key", directory / f"{name}.key_secret"
    for p in (public_path, secret_path):
        if p.exists():
            raise ConfigError(f"{p} exists; a key is never overwritten (remove it first)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        public, secret = zmq.curve_keypair()
        _write(secret_path, SECRET_MODE, "secret", {"public-key": public, "secret-key": secret})
        _write(public_path, PUBLIC_MODE, "public", {"public-key": public})
    except OSError as exc:
        raise ConfigError(f"cannot write keys in {directory}: {exc.strerror}") from None
    return public_path, secret_path


def generate_cluster(keys: Path, servers: list[str]) -> list[Path]:
    """The key layout a secured config names: servers/NAME for each server
    (and the witness), clients/client, operators/operator."""
    made: list[Path] = []
    for directory, names in (
        (keys / "servers", servers),
        (keys / "clients", ["client"]),
        (keys / "operators", ["operator"]),
    ):
        for name in names:
            made += generate(directory, name)
    return made


# -------------------------------------------------------------- the table
DEFAULTS = {
    "keys_dir": "keys/servers",
    "clients_allowed_dir": "keys/clients",
    "operators_allowed_dir": "keys/operators",
    "client_key": "keys/clients/client.key_secret",
    "operator_key": "keys/operators/operator.key_secret",
}


def parse(sec: dict[str, Any], base_dir: Path) -> Security:
    check_keys("[security]", sec, ("curve", *DEFAULTS))
    names = [c.value for c in Curve]
    raw = sec.get("curve", [])
    if not isinstance(raw, list) or not all(isinstance(c, str) and c in names for c in raw):
        raise ConfigError(f"[security] curve must be a list of {', '.join(names)}, got {raw!r}")
    paths: dict[str, Path] = {}
    for key, default in DEFAULTS.items():
        v = sec.get(key, default)
        if not isinstance(v, str) or not v:
            raise ConfigError(f"[security] {key} must be a path")
        p = Path(v).expanduser()
        paths[key] = p if p.is_absolute() else base_dir / p
    return Security(frozenset(Curve(c) for c in raw), **paths)


def loopback(endpoint: str) -> bool:
    """Whether a tcp:// endpoint listens on this host only."""
    host = endpoint.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_control(sec: Security | None, controls: dict[str, str]) -> None:
    """In a secured cluster a control socket open to the network must be
    secured too: it can stop a server. (A plain cluster is a demo or a lab;
    its control endpoints are taken as written.)"""
    if sec is None or sec.on(Curve.CONTROL):
        return
    for name, endpoint in controls.items():
        if not loopback(endpoint):
            raise ConfigError(
                f'[nodes.{name}] control {endpoint} is not on loopback: add "control" '
                "to [security] curve, or bind it to 127.0.0.1"
            )


def render(witness: bool) -> list[str]:
    """The ``[security]`` table `config init --secure` writes."""
    chans = ["clients", "replication", "control", *(["witness"] if witness else [])]
    listed = ", ".join(f'"{c}"' for c in chans)
    return [
        "",
        "[security]              # CurveZMQ: encryption and keys (docs/security.md)",
        f"curve = [{listed}]",
        'keys_dir = "keys/servers"              # each server: NAME.key, and its own .key_secret',
        'clients_allowed_dir = "keys/clients"   # *.key: the clients a frontend lets in',
        'operators_allowed_dir = "keys/operators"  # *.key: the tools control lets in',
        'client_key = "keys/clients/client.key_secret"        # this host\'s client key',
        'operator_key = "keys/operators/operator.key_secret"  # this host\'s operator key',
    ]
