"""The transaction record: the unit the log stores, mirrors and replays.

One client write request becomes one record holding the request itself
(client_id, msg_id, body), the changes it made to the application's tables
and queues, and the reply that was (or will be) sent. Applying ``changes`` to
a replica's application reproduces the primary's state exactly; the stored
reply is what the client's session answers a resend with.

A **register record** (msg_id 0, ``REGISTER``) opens a session for
client_id: body ``{"nonce": n}`` (the client's random number for this
registration), no changes; the session's id is the record's LSN. Records of
client_id "" are system records: their changes are applied, no session is
involved (none is written today).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from zmqfail.errors import ProtocolError
from zmqfail.protocol import INT_MAX, REPLY_STATUSES, _pack, check_tree, pack, plain_frame

_FIELDS = ("lsn", "epoch", "client_id", "msg_id", "body", "changes", "status", "result")

REGISTER = 0  # msg_id of a register record


def encode_record(
    lsn: int,
    epoch: int,
    client_id: str,
    msg_id: int,
    body: dict[str, Any],
    changes: list[Any],
    status: str,
    result: dict[str, Any],
) -> bytes:
    """The bytes of a TxRecord, without building one (the primary's hot path)."""
    values = (lsn, epoch, client_id, msg_id, body, changes, status, result)
    try:
        return _pack(values)
    except (OverflowError, ValueError, TypeError):
        return pack(values, _FIELDS, "transaction record")  # raises, naming the field


def _uint(v: object) -> bool:
    return type(v) is int and 0 <= v <= INT_MAX


@dataclass(frozen=True, slots=True)
class TxRecord:
    lsn: int
    epoch: int
    client_id: str
    msg_id: int
    body: dict[str, Any]
    changes: list[Any]
    status: str
    result: dict[str, Any]

    def encode(self) -> bytes:
        return encode_record(
            self.lsn,
            self.epoch,
            self.client_id,
            self.msg_id,
            self.body,
            self.changes,
            self.status,
            self.result,
        )

    @classmethod
    def decode(cls, data: bytes) -> TxRecord:
        """Validate as the wire protocol does: a record is replicated from a
        peer and read back from disk, and `log dump` must be able to print it."""
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
        except Exception as exc:
            raise ProtocolError(f"transaction record is not msgpack: {exc}") from None
        if type(obj) is not list or len(obj) != 8:
            raise ProtocolError("transaction record must be an array of 8 fields")
        lsn, epoch, client_id, msg_id, body, changes, status, result = obj
        ok = (
            _uint(lsn)
            and lsn > 0
            and _uint(epoch)
            and type(client_id) is str
            and _uint(msg_id)
            and type(body) is dict
            and type(changes) is list
            and type(status) is str
            and status in REPLY_STATUSES
            and type(result) is dict
        )
        if not ok:
            raise ProtocolError(f"transaction record has a field of the wrong type: {obj!r:.200}")
        if not plain_frame(data):
            for name, tree in (("body", body), ("changes", changes), ("result", result)):
                check_tree(tree, f"transaction record {name}")
        if msg_id == REGISTER and client_id and type(body.get("nonce")) is not int:
            raise ProtocolError(f"register record {lsn} has no integer nonce: {body!r:.100}")
        return cls(lsn, epoch, client_id, msg_id, body, changes, status, result)

    def to_json_obj(self) -> dict[str, Any]:
        """The shape `zmqfail log dump --json` prints, one object a line."""
        return {
            "lsn": self.lsn,
            "epoch": self.epoch,
            "client_id": self.client_id,
            "msg_id": self.msg_id,
            "body": self.body,
            "status": self.status,
            "result": self.result,
            "changes": self.changes,
        }
