"""The protocol's version, reply statuses, and the limits of every
channel: frame bounds and high-water marks (docs/protocol.md, "Limits")."""

from __future__ import annotations

import enum
from typing import Any

import zmq

# 2: heartbeats and snapshot images carry the epoch history.
# 3: client sessions (register, session; req names its session).
# 4: heartbeats carry a candidacy and a grant (leading at a new epoch).
# 5: lost acknowledgements: `rep` says whether its request is in the log,
#    `hello` names the client's session and the highest such msg_id it was
#    answered, `welcome` and `recovered` what the server knows of that session.
# 6: batches on the client channel: `reqs` (a client's requests in one frame)
#    and `reps` (the replies one client is owed in one frame).
# 7: in-sync generations: a primary's heartbeat lists every backup it admitted
#    or dropped with that backup's incarnation and generation (`admitted`), a
#    backup's names the newest generation it holds itself to (`gen_of`, `gen`),
#    every heartbeat its sender's `incarnation`, and `welcome` carries the
#    generation (`gen`) in answer to a peer's probe.
PROTOCOL_VERSION = 7

# Reply statuses. "ok" and "rejected" are final answers of the application;
# the others say the request was not processed here. After "stale" and
# "expired" the outcome of an earlier send of the request is unknown.
STATUS_OK = "ok"
STATUS_REJECTED = "rejected"
STATUS_ERROR = "error"
STATUS_NOT_ACTIVE = "not_active"
STATUS_STALE = "stale"
STATUS_EXPIRED = "expired"  # the session it names is gone: register again
REPLY_STATUSES = frozenset(
    {STATUS_OK, STATUS_REJECTED, STATUS_ERROR, STATUS_NOT_ACTIVE, STATUS_STALE, STATUS_EXPIRED}
)

MAX_ID_LEN = 128

# --- limits (docs/protocol.md, "Limits": what happens at each one) ---------
# msgpack carries integers from -2**63 to 2**64 - 1; anything else cannot be
# encoded, so it is refused with a ProtocolError rather than an OverflowError.
INT_MIN = -(1 << 63)
INT_MAX = (1 << 64) - 1
# Containers inside a map field (body, result, args, a record's changes), the
# field itself being level 1. Real messages use at most 4 levels; without a
# bound a 1,000-level body decodes (msgpack allows 1,024) and then breaks every
# recursive reader after it (json in `log dump`, digests).
MAX_DEPTH = 32
# Requests in one `reqs` frame and replies in one `reps` frame. A client sends
# at most its window (256 by default) at once; the client channel's frame
# bound (64 KiB) is met long before this by real orders (~100 bytes each).
# A larger batch is refused whole, before any of it is processed.
MAX_BATCH = 1024
# A server closes a `reps` frame once it holds this many bytes (one larger
# reply still goes, alone): a `reports` answer can be ~1 MiB, and a batch of
# them must stay far below the client's 256 MiB frame bound.
REPLY_BATCH_BYTES = 1 << 20


class Channel(enum.Enum):
    """The kinds of socket a node receives on, each with its own frame bound."""

    CLIENTS = "clients"  # ROUTER frontend: req, hello
    CONTROL = "control"  # ROUTER: ctl
    REPL_ACK = "repl_ack"  # REP (commit) on a backup, REQ (ack) on a primary
    HEARTBEAT = "heartbeat"  # SUB
    REPL_RECORDS = "repl_records"  # PULL: records batches and snapshot images
    REPLIES = "replies"  # DEALER of a client or an operator tool: replies, control replies


# The largest frame (message part) each channel accepts. Bounds on what the
# frames really carry, with a wide margin: a request body is a few hundred
# bytes, a heartbeat lists at most 26 nodes, a commit or an ack is ~40 bytes.
MAX_FRAME_BYTES: dict[Channel, int] = {
    Channel.CLIENTS: 64 << 10,
    Channel.CONTROL: 64 << 10,
    Channel.REPL_ACK: 4 << 10,
    # A heartbeat also carries the epoch history (about 30 bytes a term).
    Channel.HEARTBEAT: 64 << 10,
    # A batch of records may hold the whole RAM log (flush.max_memory_bytes,
    # 64 MiB by default) and a snapshot image the whole tables: this one must
    # be configurable and is far larger.
    Channel.REPL_RECORDS: 1 << 30,
    # What a server answers: a reply (a `reports` of 10,000 fills is ~1 MiB) or
    # a control reply (`history` sends the whole failover history, ~200 bytes
    # an entry). Bounded so that a rogue or broken server cannot make a client
    # or tool allocate gigabytes.
    Channel.REPLIES: 256 << 20,
}

# High-water marks (messages queued per connection, each way) that
# ``limit_socket`` sets; sockets that need another value set it after. A node
# never blocks on a send: at the mark the frame is dropped (a client reply is
# counted as undeliverable and answered again on the resend; a lost push or
# commit shows as a gap). Past the receive mark libzmq stops reading that
# connection, so the sender is held back by TCP (docs/protocol.md, "Limits").
HWM: dict[Channel, int] = {
    Channel.CLIENTS: 100_000,  # many clients, each with a window of requests in flight
    Channel.CONTROL: 1_000,
    Channel.REPL_ACK: 64,  # one commit in flight per link
    Channel.HEARTBEAT: 1_000,
    Channel.REPL_RECORDS: 10_000,
    Channel.REPLIES: 100_000,
}


# How many bytes a node reads from one socket per turn of its loop: a flood of
# large frames then delays it by milliseconds, not into a false failover.
READ_BUDGET = 4 << 20


def max_frame_bytes(channel: Channel, records_bytes: int | None = None) -> int:
    """The frame bound of ``channel``; ``records_bytes`` overrides the records one."""
    if channel is Channel.REPL_RECORDS and records_bytes is not None:
        if records_bytes < MAX_FRAME_BYTES[Channel.CLIENTS]:
            raise ValueError(f"records frame bound {records_bytes} is too small to be useful")
        return records_bytes
    return MAX_FRAME_BYTES[channel]


def limit_socket(sock: zmq.Socket[Any], channel: Channel, records_bytes: int | None = None) -> int:
    """Set ZMQ_MAXMSGSIZE and the high-water marks on a socket that receives
    ``channel``'s frames.

    libzmq then drops a larger frame and closes that connection before a byte
    reaches the node (a connecting peer reconnects by itself). Returns the bound.
    """
    n = max_frame_bytes(channel, records_bytes)
    sock.setsockopt(zmq.MAXMSGSIZE, n)
    sock.setsockopt(zmq.SNDHWM, HWM[channel])
    sock.setsockopt(zmq.RCVHWM, HWM[channel])
    return n
