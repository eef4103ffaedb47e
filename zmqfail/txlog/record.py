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

from typing import TYPE_CHECKING, Any

import msgpack
import msgspec

from zmqfail.errors import ProtocolError
from zmqfail.protocol import INT_MAX, REPLY_STATUSES, check_tree
from zmqfail.protocol.base import check_decoded
from zmqfail.protocol.typed import (
    DECODE_ERRORS,
    PlainValue,
    Positive,
    Status,
    UInt,
    check_map,
    encode_checked,
    plain_trees,
    why,
)

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
    return encode_checked(values, _FIELDS, "transaction record")


def _uint(v: object) -> bool:
    return type(v) is int and 0 <= v <= INT_MAX


class _AnyTrees(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """A record's fields with free-form trees, checked after decoding: how
    a record whose trees are not plain as typed (bytes, deep) is read."""

    lsn: Positive
    epoch: UInt
    client_id: str  # "" for system records
    msg_id: UInt
    body: dict[str, Any]
    changes: list[Any]
    if TYPE_CHECKING:  # any str to build one (validated where decoded, as before)
        status: str
    else:
        status: Status
    result: dict[str, Any]


class TxRecord(_AnyTrees, frozen=True):
    """A msgspec struct: its decoder checks every field's type while reading
    the array (protocol.typed), the trees too when they are plain as
    `PlainValue` types them (an order's), and it is what the log and the
    backup hold, with no copy into another object."""

    if not TYPE_CHECKING:
        body: dict[str, PlainValue]
        changes: list[PlainValue]
        result: dict[str, PlainValue]

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
            rec = _decoder.decode(data)
        except DECODE_ERRORS:
            rec = _decode_any(data)
        body = rec.body
        if rec.msg_id == REGISTER and rec.client_id and type(body.get("nonce")) is not int:
            raise ProtocolError(f"register record {rec.lsn} has no integer nonce: {body!r:.100}")
        return rec

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


_decoder = msgspec.msgpack.Decoder(TxRecord)
_any_decoder = msgspec.msgpack.Decoder(_AnyTrees)


def _decode_any(data: bytes) -> TxRecord:
    """A record the typed decoder refused, read with free-form trees and
    checked as it was before they were typed: the same refusals, the same
    errors."""
    try:
        rec = _any_decoder.decode(data)
    except DECODE_ERRORS as exc:
        _refuse(data)  # the error msgpack's reading gives, as before
        raise why(exc, _FIELDS, "transaction record") from None
    if not plain_trees(data, 2, 2):
        check_map(rec.body, "transaction record body")
        check_decoded(rec.changes, "transaction record changes")
        check_map(rec.result, "transaction record result")
    return TxRecord(*msgspec.structs.astuple(rec))


def _refuse(data: bytes) -> None:
    """Raise the ProtocolError the msgpack reading of a record raised before
    msgspec read them, when it does (the caller raises msgspec's otherwise)."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:
        raise ProtocolError(f"transaction record is not msgpack: {exc}") from None
    if type(obj) is not list or len(obj) != 8:
        raise ProtocolError("transaction record must be an array of 8 fields")
    lsn, epoch, client_id, msg_id, body, changes, status, result = obj
    if not (
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
    ):
        raise ProtocolError(f"transaction record has a field of the wrong type: {obj!r:.200}")
    for name, tree in (("body", body), ("changes", changes), ("result", result)):
        check_tree(tree, f"transaction record {name}")
