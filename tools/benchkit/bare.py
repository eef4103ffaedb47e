"""The bare ZeroMQ flows: zmqfail's normal-state socket design with nothing
else (no engine, no log, no failure detection), as a ceiling to judge the
real thing against.

Three processes each: a client, a "primary" (ROUTER for clients, PUSH records
to the backup, REQ commit and wait for the ack, then reply) and a "backup"
(PULL records, REP ack).

- per-message: the client is the project's ``Client``; one frame per request
  on every hop, one commit per batch of whatever arrived while the previous
  commit was out.
- batched: one frame per batch on every hop. The client sends every request
  its window lets out in one frame; the primary turns each request into its
  own record and its own reply, sends the records of what it read in one turn
  as one replication frame, and answers each client frame with one frame
  holding that frame's replies. Every request is still decoded and validated
  on its own, as the node does.

The batch frames are this bench's own, leaner than zmqfail's protocol 6 ones
(whose items are whole `req` and `rep` frames, each naming its session):
``[version, "reqs", client_id, [[msg_id, body], ...]]`` and
``[version, "reps", [[msg_id, status, result, epoch, server], ...]]``. The
flow keeps its own minimal batching client, so its figures stay comparable
with the runs before the library batched.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import zmq

from zmqfail import config
from zmqfail.cli.demo import random_order
from zmqfail.errors import ProtocolError
from zmqfail.protocol import (
    PROTOCOL_VERSION,
    STATUS_OK,
    Message,
    Register,
    ReplRecords,
    Reply,
    Request,
    SessionGrant,
    Welcome,
    decode,
)
from zmqfail.txlog.record import encode_record

from .meter import Meter, Timing

BATCH_REQUESTS = "reqs"
BATCH_REPLIES = "reps"
READ_FRAMES = 512  # frames read from the client socket per turn, as the node does
SERVER = "bare"
EPOCH = 1

_pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True).pack


# --- batch framing (pure) ------------------------------------------------------


def encode_requests(client_id: str, items: list[tuple[int, dict[str, Any]]]) -> bytes:
    """One client frame holding several requests of one client."""
    return _pack([PROTOCOL_VERSION, BATCH_REQUESTS, client_id, [[m, b] for m, b in items]])


def _unpack(frame: bytes, tag: str, arity: int) -> list[Any]:
    try:
        obj = msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"not a msgpack frame: {exc}") from None
    if not (type(obj) is list and len(obj) == arity and obj[:2] == [PROTOCOL_VERSION, tag]):
        raise ProtocolError(f"not a {tag} frame")
    if type(obj[-1]) is not list or not obj[-1]:
        raise ProtocolError(f"a {tag} frame holds a non-empty list")
    return obj


def decode_requests(frame: bytes) -> list[Request]:
    """Every request of a client frame, each validated as a lone `req` is;
    a frame with one bad request is refused whole."""
    _, _, client_id, items = _unpack(frame, BATCH_REQUESTS, 4)
    out = []
    for item in items:
        if type(item) is not list or len(item) != 2:
            raise ProtocolError("a batched request is [msg_id, body]")
        r = Request(client_id, item[0], item[1])
        r.validate()
        out.append(r)
    return out


def encode_replies(replies: list[list[Any]]) -> bytes:
    """One frame answering one client frame: [msg_id, status, result, epoch, server] each."""
    return _pack([PROTOCOL_VERSION, BATCH_REPLIES, replies])


def decode_replies(frame: bytes) -> list[Reply]:
    _, _, items = _unpack(frame, BATCH_REPLIES, 3)
    out = []
    for item in items:
        if type(item) is not list or len(item) != 5:
            raise ProtocolError("a batched reply is [msg_id, status, result, epoch, server]")
        r = Reply(*item)
        r.validate()
        out.append(r)
    return out


# --- processes -----------------------------------------------------------------

# The flows keep no replies for resends: the session they grant only has to
# let the client keep every bench window in flight.
GRANT_WINDOW = 1 << 16


def answer_client(msg: Message, server: str, active: bool) -> bytes:
    """What a bench server answers a client message that is not a request: a
    session to a `register`, and a `welcome` to a hello or ping."""
    if isinstance(msg, Register):
        return SessionGrant(msg.nonce, 1, GRANT_WINDOW, EPOCH, server).encode()
    return Welcome(server, EPOCH, active).encode()


def ready_frames(sock: zmq.Socket[bytes], limit: int = READ_FRAMES) -> Iterator[list[bytes]]:
    """The multipart messages waiting on ``sock``, at most ``limit`` of them."""
    for _ in range(limit):
        try:
            yield sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return


def poller(*socks: zmq.Socket[bytes]) -> zmq.Poller:
    p = zmq.Poller()
    for s in socks:
        p.register(s, zmq.POLLIN)
    return p


def _context() -> zmq.Context[zmq.Socket[bytes]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    ctx.setsockopt(zmq.LINGER, 0)
    return ctx


def backup(port: int, ready: Any) -> None:
    """Either flow's backup: take records, answer every commit."""
    ctx = _context()
    pull = ctx.socket(zmq.PULL)
    rep = ctx.socket(zmq.REP)
    pull.bind(f"tcp://127.0.0.1:{port + 1}")
    rep.bind(f"tcp://127.0.0.1:{port + 2}")
    ready.set()
    waiting = poller(pull, rep)
    while True:
        ev = dict(waiting.poll())
        if pull in ev:
            for _ in ready_frames(pull):
                pass
        if rep in ev:
            rep.recv()
            rep.send(b"ack")


def _primary_sockets(
    port: int,
) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes], zmq.Socket[bytes], zmq.Poller]:
    ctx = _context()
    fe = ctx.socket(zmq.ROUTER)
    fe.bind(f"tcp://127.0.0.1:{port}")
    push = ctx.socket(zmq.PUSH)
    req = ctx.socket(zmq.REQ)
    push.connect(f"tcp://127.0.0.1:{port + 1}")
    req.connect(f"tcp://127.0.0.1:{port + 2}")
    return fe, push, req, poller(fe, req)


def per_message_primary(port: int, ready: Any) -> None:
    """One frame per request on every hop; one commit per batch of arrivals."""
    fe, push, req, sockets = _primary_sockets(port)
    ready.set()
    held: list[tuple[bytes, bytes]] = []
    batch: list[tuple[bytes, bytes]] = []
    waiting = False
    while True:
        ev = dict(sockets.poll())
        if fe in ev:
            for ident, data in ready_frames(fe):
                r = decode(data)
                if not isinstance(r, Request):
                    fe.send_multipart((ident, answer_client(r, SERVER, True)))
                    continue
                push.send(data)
                batch.append((ident, Reply(r.msg_id, STATUS_OK, {}, EPOCH, SERVER).encode()))
        if req in ev:
            req.recv()
            waiting = False
            for ident, rep in held:
                fe.send_multipart((ident, rep))
            held = []
        if not waiting and batch:
            held, batch = batch, []
            req.send(b"commit")
            waiting = True


def batched_primary(port: int, ready: Any) -> None:
    """One frame per batch on every hop; each request its own record and reply."""
    fe, push, req, sockets = _primary_sockets(port)
    ready.set()
    lsn = 0
    held: list[tuple[bytes, list[list[Any]]]] = []
    batch: list[tuple[bytes, list[list[Any]]]] = []
    waiting = False
    while True:
        ev = dict(sockets.poll())
        if fe in ev:
            first, records = lsn + 1, []
            for ident, data in ready_frames(fe):
                replies = []
                for r in decode_requests(data):
                    lsn += 1
                    records.append(
                        encode_record(lsn, EPOCH, r.client_id, r.msg_id, r.body, [], STATUS_OK, {})
                    )
                    replies.append([r.msg_id, STATUS_OK, {}, EPOCH, SERVER])
                batch.append((ident, replies))
            if records:
                push.send(ReplRecords(SERVER, EPOCH, first, records).encode())
        if req in ev:
            req.recv()
            waiting = False
            for ident, replies in held:
                fe.send_multipart((ident, encode_replies(replies)))
            held = []
        if not waiting and batch:
            held, batch = batch, []
            req.send(b"commit")
            waiting = True


def drive_batched(endpoint: str, window: int, timing: Timing, seed: int) -> dict[str, Any]:
    """The batched flow's client: after each reply frame (and whatever else
    has arrived), one frame with as many new requests as the window frees."""
    rng = random.Random(seed)
    instruments = config.DEFAULT_INSTRUMENTS
    ctx = _context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(endpoint)
    client_id = f"batched-{os.getpid()}"
    next_id = 1
    free = window
    clock = time.perf_counter
    m = Meter(timing, clock())
    drain_end = m.end + timing.drain
    try:
        while True:
            now = clock()
            if m.running(now) and free:
                items = [(next_id + i, random_order(rng, instruments)) for i in range(free)]
                next_id += free
                sock.send(encode_requests(client_id, items))
                now = clock()
                for mid, _ in items:
                    m.on_sent(mid, now)
                free = 0
            elif not m.in_flight or now > drain_end:
                break
            if not sock.poll(500):
                continue
            for (frame,) in ready_frames(sock):
                now = clock()
                for rep in decode_replies(frame):
                    m.on_reply(rep.msg_id, now, rep.status == STATUS_OK)
                    free += 1
    finally:
        ctx.destroy(linger=0)
    return m.result()
