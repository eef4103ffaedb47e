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

from zmqfail.protocol import WitnessAnswer

MAX_WHY = 200  # WitnessAnswer.why's bound on decoding


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


def judge_elect(
    stored: Granted, holder: str, server: str, epoch: int, known: int
) -> tuple[bool, str]:
    """(granted, why) for an election, given the stored fact and the server
    holding a live lease ("" for none). The one copy of the rules: the
    built-in witness and the etcd adapter (etcdplan.py) both ask it."""
    s = stored
    if (epoch, server) == (s.epoch, s.leader):
        # Asked again (the answer was lost, or came late): the same grant.
        return True, "elected (again)"
    if epoch <= s.epoch:
        return False, f"epoch {epoch} is not above {s.epoch} (granted to {s.leader})"
    if known < s.epoch:
        return False, (
            f"{server} knows epoch {known} only; {s.leader} led at {s.epoch} and "
            "may hold acknowledged records it lacks"
        )
    if holder and holder != server:
        return False, f"{holder} holds a lease"
    return True, "elected"


def judge_renew(stored: Granted, server: str, epoch: int) -> tuple[bool, str]:
    """(granted, why) for a lease: only the stored leader at the stored epoch."""
    if (epoch, server) != (stored.epoch, stored.leader):
        return False, f"the leader is {stored.leader or 'nobody'} at epoch {stored.epoch}"
    return True, "lease renewed"


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
        holder = self.live_holder(now)
        ok, why = judge_elect(self.stored, holder, server, epoch, known)
        if not ok:
            if why.endswith("holds a lease"):
                why += f" for {self.until - now:.3f} s more"
            return self._refuse(why)
        if why == "elected":
            self.stored = Granted(epoch, server)
            self.elections += 1
        self.holder, self.until = server, now + self.lease
        return Verdict(True, epoch, server, why)

    def renew(self, server: str, epoch: int, now: float) -> Verdict:
        ok, why = judge_renew(self.stored, server, epoch)
        if not ok:
            return self._refuse(why)
        self.holder, self.until = server, now + self.lease
        return Verdict(True, epoch, server, why)

    def _refuse(self, why: str) -> Verdict:
        self.refusals += 1
        return Verdict(False, self.stored.epoch, self.stored.leader, why)


def reply(v: Verdict, nonce: int, lease_ms: int) -> WitnessAnswer:
    """The answer to the ask `nonce` (a lease only with a grant)."""
    return WitnessAnswer(
        v.granted, v.epoch, v.leader, lease_ms if v.granted else 0, nonce, v.why[:MAX_WHY]
    )
