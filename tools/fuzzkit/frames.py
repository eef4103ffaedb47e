"""The bad input `tools/fuzz` sends: which families of bad frames go to
which ports, and how each family's frames are made from what the fuzzer
knows of the cluster (nearly right is the point). No sockets here."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from zmqfail.failover.state import Role, State
from zmqfail.protocol import (
    MAX_DEPTH,
    MAX_FRAME_BYTES,
    AckStatus,
    Channel,
    CommitAck,
    CommitRequest,
    ControlReply,
    ControlRequest,
    Heartbeat,
    Hello,
    Message,
    RecoverySignal,
    ReplRecords,
    Reply,
    Request,
    SnapshotImage,
    Welcome,
)
from zmqfail.txlog.record import TxRecord

KINDS = ("client", "control", "records", "ack", "heartbeat", "metrics")
CHANNEL = {
    "client": Channel.CLIENTS,
    "control": Channel.CONTROL,
    "records": Channel.REPL_RECORDS,
    "ack": Channel.REPL_ACK,
    "heartbeat": Channel.HEARTBEAT,
}
# Families of bad input, and the ports each one goes to.
FAMILIES: dict[str, tuple[str, ...]] = {
    "random": ("client", "control", "records", "ack"),
    "truncated": ("client", "control", "records", "ack"),
    "mutated": ("client", "control", "records", "ack"),
    "oversized": ("client", "control", "records", "ack"),
    "wrong-type": ("client", "control", "records", "ack"),
    "bad-requests": ("client",),
    "bad-control": ("control",),
    "stale-epoch": ("records", "ack"),
    "unknown-sender": ("records", "ack"),
    "unknown-sender-newer-epoch": ("records", "ack"),
    "multipart": ("client", "control", "records"),
    "rep-framing": ("ack",),
    "subscriptions": ("heartbeat",),
    "tcp-garbage": KINDS,
    "bad-http": ("metrics",),
}
# Requests an HTTP server must answer with an error (or drop), never die of.
BAD_HTTP = (
    b"GET /" + b"A" * 70_000 + b" HTTP/1.1\r\n\r\n",
    b"POST /metrics HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\nxx",
    b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: y\r\n" * 500 + b"\r\n",
    b"GET /metrics?" + b"%" * 5000 + b" HTTP/1.0\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello
    b"GET /metrics HTTP/9.9\r\n\r\n",
)
OVERSIZED_RECORDS = 4 << 20  # the records bound is 1 GiB: big, but under it


@dataclass(frozen=True, slots=True)
class Target:
    node: str
    kind: str
    endpoint: str


@dataclass(slots=True)
class Known:
    """What the fuzzer knows of the cluster, to make frames that are nearly right."""

    primary: str
    backup: str
    epoch: int
    lsn: int


def samples(k: Known, rng: random.Random) -> list[Message]:
    """One valid-looking message of every type."""
    rec = TxRecord(k.lsn + 1, k.epoch, "fz", 1, {"op": "new"}, [], "ok", {}).encode()
    return [
        Request(f"fz-{rng.randrange(1000)}", rng.randrange(1, 10**6), {"op": "status"}),
        Reply(1, "ok", {}, k.epoch, k.primary),
        Hello(f"fz-{rng.randrange(1000)}", ""),
        Welcome(k.primary, k.epoch, True),
        RecoverySignal(k.primary, k.epoch),
        ReplRecords(k.primary, k.epoch, k.lsn + 1, [rec]),
        SnapshotImage(k.primary, k.epoch, k.lsn, b"\x80", [[k.epoch, k.primary, 1, 1]]),
        CommitRequest(k.primary, k.epoch, k.lsn),
        CommitAck(k.backup, k.epoch, k.lsn, AckStatus.OK, 1, k.epoch),
        Heartbeat(
            k.primary,
            Role.PRIMARY,
            State.NORMAL,
            k.epoch,
            k.lsn,
            k.lsn,
            k.lsn,
            "main",
            [],
            "",
            1,
            [],
            0,
            "",
            0,
        ),
        ControlRequest("status", {}),
        ControlReply(True, {}, ""),
    ]


EXPECTED = {
    "client": (Request, Hello),
    "control": (ControlRequest,),
    "records": (ReplRecords, SnapshotImage),
    "ack": (CommitRequest,),
    "heartbeat": (Heartbeat,),
}


def _bad_body(rng: random.Random) -> dict[str, Any]:
    deep: Any = 1
    for _ in range(MAX_DEPTH + rng.randrange(1, 5)):
        deep = [deep]
    return rng.choice(
        [
            {
                "op": "new",
                "instrument": "ABC",
                "side": "buy",
                "type": "limit",
                "qty": 2**64 - 1,
                "price": "10.00",
            },
            {
                "op": "new",
                "instrument": "ABC",
                "side": "buy",
                "type": "limit",
                "qty": -5,
                "price": "1e9999",
            },
            {"op": "new", "instrument": "NOPE", "side": "up", "type": "x", "qty": "ten"},
            {"op": "cancel", "order_id": -(2**63)},
            {"op": "book", "instrument": "ABC", "depth": 2**63},
            {"op": "reports", "max": -1},
            {"op": rng.choice(["", "drop_table", "stop"]), "x": [None, 1.5, b"\x00"]},
            {"op": "new", "nested": deep},
            {},
        ]
    )


def make_frames(family: str, kind: str, rng: random.Random, k: Known) -> list[bytes]:
    """The message parts to send (for the ack port: what follows the REQ delimiter,
    except rep-framing, which is the raw envelope)."""
    good = samples(k, rng)
    if family == "random":
        return [rng.randbytes(rng.randrange(0, 600))]
    if family == "truncated":
        whole = rng.choice(good).encode()
        return [whole[: rng.randrange(len(whole))]]
    if family == "mutated":
        buf = bytearray(rng.choice(good).encode())
        for _ in range(rng.randrange(1, 4)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        return [bytes(buf)]
    if family == "oversized":
        limit = OVERSIZED_RECORDS if kind == "records" else MAX_FRAME_BYTES[CHANNEL[kind]] + 1
        return [Request("fz-big", 1, {"pad": "x" * limit}).encode()]
    if family == "wrong-type":
        wrong = [m for m in good if not isinstance(m, EXPECTED[kind])]
        return [rng.choice(wrong).encode()]
    if family == "bad-requests":
        return [
            Request(f"fz-{rng.randrange(100)}", rng.randrange(1, 2**63), _bad_body(rng)).encode()
        ]
    if family == "bad-control":
        choices: list[tuple[str, dict[str, Any]]] = [
            ("nope", {}),
            ("cut", {"link": "everything"}),
            ("cut", {"link": "main", "for": -1}),
            ("heal", {"link": 5}),
            ("status", {"digest": {"deep": [1]}}),
            ("x" * 128, {"a": None}),
        ]
        cmd, args = rng.choice(choices)
        return [ControlRequest(cmd, args).encode()]
    epoch = k.epoch
    sender = k.primary
    if family == "stale-epoch":
        epoch = rng.randrange(0, max(k.epoch, 1))
    elif family == "unknown-sender":
        sender = "mallory"
    elif family == "unknown-sender-newer-epoch":
        sender, epoch = "mallory", k.epoch + rng.randrange(1, 5)
    if family in ("stale-epoch", "unknown-sender", "unknown-sender-newer-epoch"):
        lsn = k.lsn + rng.randrange(0, 3)
        if kind == "ack":
            return [CommitRequest(sender, epoch, lsn).encode()]
        rec = TxRecord(lsn + 1, epoch, "fz", 1, {"op": "new"}, [], "ok", {}).encode()
        return [ReplRecords(sender, epoch, lsn + 1, [rec, rng.randbytes(20)]).encode()]
    if family == "multipart":
        return [rng.randbytes(rng.randrange(0, 40)) for _ in range(rng.randrange(2, 5))]
    if family == "rep-framing":
        return rng.choice(
            [
                [b"", b"x", b"y"],
                [b"x"],
                [b"x", b"", CommitRequest(k.primary, k.epoch, k.lsn).encode()],
                [CommitRequest(k.primary, k.epoch, k.lsn).encode()],  # a DEALER, no delimiter
                [b"", b""],
            ]
        )
    if family == "subscriptions":
        return [rng.choice([b"\x01", b"\x00", b""]) + rng.randbytes(rng.randrange(0, 30))]
    raise ValueError(f"unknown family {family}")
