"""What the witness decides, without I/O (the shell stores and sends).

Two servers alone cannot tell a dead peer from a cut cable: each may judge
the other gone and serve (split brain), and a server that restarts alone
cannot know that its peer led at a newer epoch meanwhile (the double
failure). The witness is the third vote. It keeps one durable fact, the
latest epoch it granted and to whom, and one soft one, a lease:

- **elect** (a server wants to lead at a new epoch, taking over or starting
  up): granted only above the stored epoch, only to a server that knows the
  stored epoch (one that missed it may lack what was acknowledged in it),
  and only while no other server holds a live lease. The new (epoch, leader)
  is stored durably *before* the answer goes out.
- **lease** (the leader runs alone and must keep proving nobody replaced
  it): granted only to the stored leader at the stored epoch; refused
  otherwise, and the answer tells the newer epoch so that server steps down.

A lease runs from when the witness granted it; the server counts it from
when it asked (earlier), minus a margin, so the server always believes its
lease ends before the witness does. After a restart the witness cannot know
whether its last leader still holds a lease: it treats it as holding one
for a full lease time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Granted:
    """The witness's durable fact."""

    epoch: int = 0
    leader: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    granted: bool
    epoch: int  # the stored epoch after this ask
    leader: str
    why: str


class Witness:
    def __init__(self, stored: Granted, lease: float, now: float) -> None:
        self.stored = stored
        self.lease = lease
        # As after a restart: the stored leader may hold a lease we forgot.
        self.holder = stored.leader
        self.until = now + lease if stored.leader else now
        self.elections = 0
        self.refusals = 0

    def live_holder(self, now: float) -> str:
        return self.holder if self.holder and now < self.until else ""

    def elect(self, server: str, epoch: int, known: int, now: float) -> Verdict:
        """The caller stores `self.stored` durably before it answers a grant."""
        s = self.stored
        holder = self.live_holder(now)
        if (epoch, server) == (s.epoch, s.leader):
            # Asked again (the answer was lost, or came late): the same grant.
            self.holder, self.until = server, now + self.lease
            return Verdict(True, epoch, server, "elected (again)")
        if epoch <= s.epoch:
            return self._refuse(f"epoch {epoch} is not above {s.epoch} (granted to {s.leader})")
        if known < s.epoch:
            return self._refuse(
                f"{server} knows epoch {known} only; {s.leader} led at {s.epoch} and "
                "may hold acknowledged records it lacks"
            )
        if holder and holder != server:
            return self._refuse(f"{holder} holds a lease for {self.until - now:.3f} s more")
        self.stored = Granted(epoch, server)
        self.holder, self.until = server, now + self.lease
        self.elections += 1
        return Verdict(True, epoch, server, "elected")

    def renew(self, server: str, epoch: int, now: float) -> Verdict:
        s = self.stored
        if (epoch, server) != (s.epoch, s.leader):
            return self._refuse(f"the leader is {s.leader or 'nobody'} at epoch {s.epoch}")
        self.holder, self.until = server, now + self.lease
        return Verdict(True, s.epoch, s.leader, "lease renewed")

    def _refuse(self, why: str) -> Verdict:
        self.refusals += 1
        return Verdict(False, self.stored.epoch, self.stored.leader, why)
