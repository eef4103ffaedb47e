"""A server's side of the witness (the third voter), without I/O.

It asks the witness for what the failover machine needs from it and turns
the answers into observations:

- while the machine asks to lead at a new epoch (`fs.asking`), an ELECT ask
  every third of a lease; a grant becomes `WitnessElected`, a refusal that
  names a newer epoch becomes `HigherEpoch` (a server that restarted alone
  learns the latest epoch here before it may lead);
- while it leads, a LEASE ask every third of a lease. The lease counts from
  when we asked (the witness counts from when it answered, later), minus a
  margin for clock rates, so we always believe it ends first. Running alone
  we acknowledge only while the lease is valid: a server cut from its peer
  and from the witness acknowledges nothing, and one the witness replaced
  learns the newer epoch from the refusal and steps down.

While the pair is whole the lease changes nothing (every acknowledgement
waits for the backup anyway), so losing the witness alone costs nothing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from zmqfail.errors import ProtocolError
from zmqfail.failover.state import FailoverState, HigherEpoch, Role, WitnessElected
from zmqfail.protocol import WitnessAnswer, WitnessAsk, WitnessKind, decode_as

MARGIN = 0.1  # of the lease: clock rates and the witness's own delay
LEADING = frozenset({"normal", "primary_only", "backup_only", "handoff"})


@dataclass(frozen=True, slots=True)
class _Asked:
    kind: WitnessKind
    epoch: int
    at: float


class WitnessClient:
    def __init__(self, name: str, lease: float) -> None:
        self.name = name
        self.lease = lease
        self.every = lease / 3
        self.valid_until = float("-inf")
        self.lease_epoch = 0
        self._nonces = itertools.count(1)
        self._asked: dict[int, _Asked] = {}
        self._next: dict[WitnessKind, float] = dict.fromkeys(WitnessKind, float("-inf"))
        self.asks = 0
        self.answers = 0
        self.refusals = 0
        self.bad_frames = 0
        self.last_refusal = ""

    def valid(self, epoch: int, now: float) -> bool:
        return self.lease_epoch == epoch and now < self.valid_until

    def tick(self, fs: FailoverState, now: float) -> list[bytes]:
        """The asks due now (encoded); old unanswered ones are forgotten."""
        out: list[bytes] = []
        for nonce, asked in list(self._asked.items()):
            if now - asked.at > self.lease:
                del self._asked[nonce]
        if fs.asking and now >= self._next[WitnessKind.ELECT]:
            out.append(self._ask(WitnessKind.ELECT, fs.asking, fs.epoch, now))
        leading = fs.role is Role.PRIMARY and fs.state.value in LEADING
        if leading and now >= self._next[WitnessKind.LEASE]:
            out.append(self._ask(WitnessKind.LEASE, fs.epoch, fs.epoch, now))
        if not leading:
            self.valid_until = float("-inf")
        return out

    def _ask(self, kind: WitnessKind, epoch: int, known: int, now: float) -> bytes:
        nonce = next(self._nonces)
        self._asked[nonce] = _Asked(kind, epoch, now)
        self._next[kind] = now + self.every
        self.asks += 1
        return WitnessAsk(self.name, kind.value, epoch, known, nonce).encode()

    def on_answer(
        self, data: bytes, fs: FailoverState, now: float
    ) -> WitnessElected | HigherEpoch | None:
        try:
            ans = decode_as(data, WitnessAnswer)
        except ProtocolError:
            self.bad_frames += 1
            return None
        asked = self._asked.pop(ans.nonce, None)
        if asked is None:
            return None  # an answer to an ask we forgot (too late) or never made
        self.answers += 1
        if ans.granted and ans.epoch == asked.epoch and ans.leader == self.name:
            until = asked.at + min(ans.lease_ms / 1000.0, self.lease) * (1 - MARGIN)
            if asked.epoch != self.lease_epoch or until > self.valid_until:
                self.lease_epoch, self.valid_until = asked.epoch, until
            if asked.kind is WitnessKind.ELECT:
                return WitnessElected(asked.epoch)
            return None
        self.refusals += 1
        self.last_refusal = ans.why
        if asked.kind is WitnessKind.LEASE and asked.epoch == self.lease_epoch:
            self.valid_until = float("-inf")  # replaced, or the witness forgot us
        if ans.epoch > fs.epoch:
            return HigherEpoch(ans.epoch, ans.leader or "witness")
        return None
