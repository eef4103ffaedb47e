"""Messages between the servers and the witness."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from zmqfail.protocol.base import Message, _check, _check_id, _check_uint, _register
from zmqfail.protocol.limits import MAX_ID_LEN


class WitnessKind(enum.Enum):
    ELECT = "elect"  # let me lead at a new epoch
    LEASE = "lease"  # let me go on running alone at the epoch I lead


@_register
@dataclass(frozen=True, slots=True)
class WitnessAsk(Message):
    """Server -> witness. `epoch`: the epoch asked for (ELECT) or led (LEASE);
    `known`: the highest epoch the server knows of (a server that missed a
    newer epoch is refused: it may lack what was acknowledged in it);
    `nonce`: echoed in the answer, to match it to this ask."""

    TYPE: ClassVar[str] = "w_ask"
    server: str
    kind: str
    epoch: int
    known: int
    nonce: int

    def validate(self) -> None:
        _check_id(self.server, "server")
        _check(self.kind in _WITNESS_KINDS, f"kind must be one of {sorted(_WITNESS_KINDS)}")
        _check_uint(self.epoch, "epoch")
        _check_uint(self.known, "known")
        _check_uint(self.nonce, "nonce")


@_register
@dataclass(frozen=True, slots=True)
class WitnessAnswer(Message):
    """Witness -> server. `granted`: the election or lease; `epoch`, `leader`:
    what the witness holds now (a refused server learns the newer epoch from
    it); `lease_ms`: how long a granted lease lasts from the ask."""

    TYPE: ClassVar[str] = "w_answer"
    granted: bool
    epoch: int
    leader: str
    lease_ms: int
    nonce: int
    why: str

    def validate(self) -> None:
        _check(isinstance(self.granted, bool), "granted must be a boolean")
        _check_uint(self.epoch, "epoch")
        _check(isinstance(self.leader, str) and len(self.leader) <= MAX_ID_LEN, "leader")
        _check_uint(self.lease_ms, "lease_ms")
        _check_uint(self.nonce, "nonce")
        _check(isinstance(self.why, str) and len(self.why) <= 200, "why must be a short string")


_WITNESS_KINDS = frozenset(k.value for k in WitnessKind)
