"""What an etcd cluster playing the witness does for one ask, without I/O.

The built-in witness keeps (epoch, leader) on its disk and a lease in its
memory. With etcd both live in two keys per failover group:

- ``<base>/granted``: the durable fact, in the witness store's own format
  (store.py: JSON with a crc). It changes only in a transaction that
  compares its mod revision with the one the decision was made on, so an
  epoch is granted once, to one server: of two servers asking at once, the
  second transaction fails, is read again and refused.
- ``<base>/lease``: the name of the server holding the running-alone lease,
  attached to an etcd lease that etcd itself expires. The key exists exactly
  while someone may still count on a lease; it only ever names the stored
  leader (it is written in the same transaction as ``granted``, or for the
  stored leader alone).

The rules are logic.py's (`judge_elect`, `judge_renew`) applied to one
consistent read of both keys; this module turns a verdict into the etcd step
that makes it true (`plan`), and says what to answer once that step is done.
A grant is answered only after etcd confirmed the step: a transaction that
failed, or a keep-alive of a lease that had already expired, means the keys
moved under us, and the shell reads them again (`MAX_TRIES`), or answers
nothing (the server asks again; no answer is no grant and no lease).

The lease's safety: the server counts its lease from when it asked, minus a
margin (core/witness.py); the etcd lease is granted or kept alive after the
ask arrived, for at least `lease_ms` (etcd's leases are whole seconds and
never shorter than asked), so etcd holds the key, and refuses every other
server's election, for longer than the server believes it holds the lease.
"""

from __future__ import annotations

from dataclasses import dataclass

from zmqfail.protocol import WitnessAsk, WitnessKind
from zmqfail.witness.logic import Granted, Verdict, judge_elect, judge_renew

MAX_TRIES = 3  # reads per ask when the keys move under us; then no answer


@dataclass(frozen=True, slots=True)
class Seen:
    """One consistent read (one etcd revision) of a group's two keys."""

    granted: Granted
    granted_rev: int = 0  # mod revision of the granted key; 0: absent (epoch 0)
    holder: str = ""  # the lease key's value; "": no live lease
    lease_id: int = 0  # the etcd lease that key is attached to
    holder_rev: int = 0  # mod revision of the lease key; 0: absent


@dataclass(frozen=True, slots=True)
class Answer:
    """Nothing to ask etcd: answer `verdict` now (a refusal)."""

    verdict: Verdict


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """The lease key already names the asker: keep its etcd lease alive, and
    grant only if etcd says that lease still lived."""

    lease_id: int
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class Write:
    """One transaction, if neither key moved since `seen`: store `granted`
    (None: unchanged) and put the lease key naming `holder` on a fresh etcd
    lease. Grant only if the transaction succeeded."""

    seen: Seen
    granted: Granted | None
    holder: str
    verdict: Verdict

    def guards(self) -> tuple[tuple[str, int], ...]:
        """The mod revisions the transaction requires ("granted", "lease");
        0: the key must be absent. Without the first, two servers that read
        the same epoch could both be elected at the next one."""
        return (("granted", self.seen.granted_rev), ("lease", self.seen.holder_rev))


Step = Answer | KeepAlive | Write


def plan(ask: WitnessAsk, seen: Seen) -> Step:
    g = seen.granted
    if ask.kind == WitnessKind.ELECT.value:
        ok, why = judge_elect(g, seen.holder, ask.server, ask.epoch, ask.known)
    else:
        ok, why = judge_renew(g, ask.server, ask.epoch)
    if not ok:
        return Answer(Verdict(False, g.epoch, g.leader, why))
    verdict = Verdict(True, ask.epoch, ask.server, why)
    new = Granted(ask.epoch, ask.server)
    if new != g:  # a new election: the fact and the lease change together
        return Write(seen, new, ask.server, verdict)
    if seen.holder == ask.server and seen.lease_id:
        return KeepAlive(seen.lease_id, verdict)
    if seen.holder:  # never written so (the key names only the leader): never taken
        return Answer(Verdict(False, g.epoch, g.leader, f"{seen.holder} holds a lease"))
    # The stored leader asks again after its lease ran out: nobody was
    # elected meanwhile (the fact is unchanged), so it may hold one again.
    return Write(seen, None, ask.server, verdict)
