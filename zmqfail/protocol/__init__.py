"""Wire messages of every zmqfail channel, as frozen dataclasses.

Every frame is one msgpack array ``[version, type, field...]``. Decoding checks
the version, the type tag, the field count and each field's type, so a node
hands its logic only well-formed messages and answers anything else with a
clear error (or drops and counts it where no reply is possible). Arrays, not
maps, because this is the hot path: a map costs a key string per field per
frame. ``docs/protocol.md`` is the human description of the same table.

The package holds one module per family of messages (client.py, servers.py,
witness.py, control.py), what they share (limits.py, base.py) and decoding
(codec.py); every name callers use is imported from here.
"""

from __future__ import annotations

from zmqfail.protocol.base import (
    AckStatus,
    Message,
    _pack,
    check_tree,
    decode_enum,
    pack,
    plain_frame,
)
from zmqfail.protocol.client import (
    Hello,
    Probe,
    RecoverySignal,
    Register,
    Reply,
    ReplyBatch,
    Request,
    RequestBatch,
    SessionGrant,
    Welcome,
)
from zmqfail.protocol.codec import (
    MESSAGE_TYPES,
    BadItem,
    batch_replies,
    batch_requests,
    decode,
    decode_all,
    decode_as,
    decode_request,
    encode_batch,
    encode_reply,
    encode_request,
    is_reply_frame,
    read_replies,
    read_requests,
)
from zmqfail.protocol.control import (
    ControlReply,
    ControlRequest,
)
from zmqfail.protocol.limits import (
    HWM,
    INT_MAX,
    INT_MIN,
    MAX_BATCH,
    MAX_DEPTH,
    MAX_FRAME_BYTES,
    MAX_ID_LEN,
    PROTOCOL_VERSION,
    READ_BUDGET,
    REPLY_BATCH_BYTES,
    REPLY_STATUSES,
    STATUS_ERROR,
    STATUS_EXPIRED,
    STATUS_NOT_ACTIVE,
    STATUS_OK,
    STATUS_REJECTED,
    STATUS_STALE,
    Channel,
    limit_socket,
    max_frame_bytes,
)
from zmqfail.protocol.servers import (
    CommitAck,
    CommitRequest,
    Goodbye,
    Heartbeat,
    ReplRecords,
    SnapshotImage,
)
from zmqfail.protocol.witness import (
    WitnessAnswer,
    WitnessAsk,
    WitnessKind,
)

__all__ = [
    "HWM",
    "INT_MAX",
    "INT_MIN",
    "MAX_BATCH",
    "MAX_DEPTH",
    "MAX_FRAME_BYTES",
    "MAX_ID_LEN",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "READ_BUDGET",
    "REPLY_BATCH_BYTES",
    "REPLY_STATUSES",
    "STATUS_ERROR",
    "STATUS_EXPIRED",
    "STATUS_NOT_ACTIVE",
    "STATUS_OK",
    "STATUS_REJECTED",
    "STATUS_STALE",
    "AckStatus",
    "BadItem",
    "Channel",
    "CommitAck",
    "CommitRequest",
    "ControlReply",
    "ControlRequest",
    "Goodbye",
    "Heartbeat",
    "Hello",
    "Message",
    "Probe",
    "RecoverySignal",
    "Register",
    "ReplRecords",
    "Reply",
    "ReplyBatch",
    "Request",
    "RequestBatch",
    "SessionGrant",
    "SnapshotImage",
    "Welcome",
    "WitnessAnswer",
    "WitnessAsk",
    "WitnessKind",
    "_pack",
    "batch_replies",
    "batch_requests",
    "check_tree",
    "decode",
    "decode_all",
    "decode_as",
    "decode_enum",
    "decode_request",
    "encode_batch",
    "encode_reply",
    "encode_request",
    "is_reply_frame",
    "limit_socket",
    "max_frame_bytes",
    "pack",
    "plain_frame",
    "read_replies",
    "read_requests",
]
