"""The transaction record: the unit the log stores, mirrors and replays.

One client write request becomes one record holding the request itself
(client_id, msg_id, body), the changes it made to the tables and queues, and
the reply that was (or will be) sent. Applying ``changes`` to a replica's
engine reproduces the primary's state exactly; the stored reply is what the
dedup table answers a resend with. System records (client_id "") carry events
that are not client requests, such as an epoch change at takeover.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from zmqfail.errors import ProtocolError
from zmqfail.protocol import _pack


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
    return _pack([lsn, epoch, client_id, msg_id, body, changes, status, result])


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
        return _pack(
            [
                self.lsn,
                self.epoch,
                self.client_id,
                self.msg_id,
                self.body,
                self.changes,
                self.status,
                self.result,
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> TxRecord:
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
        except Exception as exc:
            raise ProtocolError(f"transaction record is not msgpack: {exc}") from None
        if not isinstance(obj, list) or len(obj) != 8:
            raise ProtocolError("transaction record must be an array of 8 fields")
        lsn, epoch, client_id, msg_id, body, changes, status, result = obj
        ok = (
            isinstance(lsn, int)
            and lsn > 0
            and isinstance(epoch, int)
            and epoch >= 0
            and isinstance(client_id, str)
            and isinstance(msg_id, int)
            and msg_id >= 0
            and isinstance(body, dict)
            and isinstance(changes, list)
            and isinstance(status, str)
            and isinstance(result, dict)
        )
        if not ok:
            raise ProtocolError(f"transaction record has a field of the wrong type: {obj!r:.200}")
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
