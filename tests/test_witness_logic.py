"""The witness's decisions on a fake clock: every grant and refusal, the
lease honoured after a restart, and a seeded checker of its promises (one
leader at a time, epochs only rising, no stale server elected, leases only to
the elected leader) that must catch each planted bug."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from zmqfail.witness.logic import Granted, Verdict, Witness

LEASE = 1.0
T0 = 100.0

Make = Callable[[Granted, float, float], Witness]


def fresh(make: Make = Witness, now: float = T0) -> Witness:
    return make(Granted(), LEASE, now)


# ------------------------------------------------------------------ grants


def test_a_fresh_witness_elects_the_first_server_and_gives_it_a_lease() -> None:
    w = fresh()
    assert w.live_holder(T0) == ""
    v = w.elect("a", 1, 0, T0)
    assert v == Verdict(True, 1, "a", "elected")
    assert w.stored == Granted(1, "a")
    assert w.live_holder(T0 + LEASE - 0.001) == "a"
    assert w.live_holder(T0 + LEASE) == ""  # the lease ends exactly a lease after the grant
    assert (w.elections, w.refusals) == (1, 0)


def test_the_leader_renews_its_lease_from_each_ask() -> None:
    w = fresh()
    w.elect("a", 1, 0, T0)
    v = w.renew("a", 1, T0 + 0.9)
    assert v == Verdict(True, 1, "a", "lease renewed")
    assert w.live_holder(T0 + 1.8) == "a"
    assert w.live_holder(T0 + 1.9) == ""
    # A leader whose lease ran out may renew it: nobody was elected meanwhile.
    assert w.renew("a", 1, T0 + 5.0).granted
    assert w.live_holder(T0 + 5.5) == "a"
    assert w.stored == Granted(1, "a")


def test_the_leader_itself_may_be_elected_again_while_it_holds_the_lease() -> None:
    w = fresh()
    w.elect("a", 1, 0, T0)
    assert w.elect("a", 2, 1, T0 + 0.1).granted
    assert w.stored == Granted(2, "a")


def test_another_server_is_elected_once_the_lease_ran_out() -> None:
    w = fresh()
    w.elect("a", 1, 0, T0)
    v = w.elect("b", 2, 1, T0 + LEASE)
    assert v == Verdict(True, 2, "b", "elected")
    assert w.live_holder(T0 + LEASE) == "b"


def test_the_same_election_asked_again_is_granted_again() -> None:
    # The answer was lost or came late: the same server asks for the same epoch.
    w = fresh()
    w.elect("a", 1, 0, T0)
    v = w.elect("a", 1, 0, T0 + 2 * LEASE)
    assert v == Verdict(True, 1, "a", "elected (again)")
    assert w.stored == Granted(1, "a")
    assert w.live_holder(T0 + 2.5 * LEASE) == "a"  # a lease from the repeated ask
    assert (w.elections, w.refusals) == (1, 0)  # one election, not two
    # Only that server at that epoch: anyone else at it is refused.
    _refused(w, w.elect("b", 1, 1, T0 + 5 * LEASE), "epoch 1 is not above 1")


def test_an_election_may_skip_epochs() -> None:
    w = Witness(Granted(3, "a"), LEASE, T0)
    assert w.elect("a", 7, 3, T0).granted
    assert w.stored == Granted(7, "a")


# ---------------------------------------------------------------- refusals


def _refused(w: Witness, v: Verdict, why: str) -> None:
    """A refusal names the reason, tells the stored fact and changes nothing."""
    assert not v.granted
    assert why in v.why, v.why
    assert (v.epoch, v.leader) == (w.stored.epoch, w.stored.leader)


def test_refused_an_epoch_not_above_the_stored_one() -> None:
    w = fresh()
    w.elect("a", 2, 0, T0)
    later = T0 + 10 * LEASE  # no lease in the way
    for epoch in (0, 1, 2):
        _refused(w, w.elect("b", epoch, 2, later), f"epoch {epoch} is not above 2")
    assert w.stored == Granted(2, "a")
    assert w.live_holder(later) == ""
    assert (w.elections, w.refusals) == (1, 3)


def test_refused_a_stale_server_that_missed_the_stored_epoch() -> None:
    # The double failure: b led at 2 and died; a, which last knew epoch 1,
    # restarts alone and asks to lead. It may lack what b acknowledged.
    w = Witness(Granted(2, "b"), LEASE, T0)
    later = T0 + 10 * LEASE
    v = w.elect("a", 3, 1, later)
    _refused(w, v, "a knows epoch 1 only; b led at 2")
    assert w.stored == Granted(2, "b")
    assert w.live_holder(later) == ""  # no lease was handed out by the refusal
    assert w.elect("a", 3, 2, later).granted  # once it knows epoch 2 it may lead


def test_refused_an_election_while_another_server_holds_a_lease() -> None:
    # Split brain: a runs alone on its lease; b, cut from a, wants to take over.
    w = fresh()
    w.elect("a", 1, 0, T0)
    w.renew("a", 1, T0 + 0.5)
    v = w.elect("b", 2, 1, T0 + 1.2)
    _refused(w, v, "a holds a lease for 0.300 s more")
    assert w.stored == Granted(1, "a")
    assert w.live_holder(T0 + 1.2) == "a"  # the refusal did not touch a's lease
    assert w.elect("b", 2, 1, T0 + 1.5).granted


def test_refused_a_lease_to_a_server_that_is_not_the_stored_leader() -> None:
    w = fresh()
    w.elect("a", 1, 0, T0)
    w.elect("b", 2, 1, T0 + LEASE)
    # a was deposed: its renewal at epoch 1 is refused and tells it epoch 2.
    v = w.renew("a", 1, T0 + LEASE + 0.1)
    _refused(w, v, "the leader is b at epoch 2")
    assert (v.epoch, v.leader) == (2, "b")
    # Right epoch, wrong server; right server, wrong epoch: both refused.
    _refused(w, w.renew("a", 2, T0 + LEASE + 0.1), "the leader is b at epoch 2")
    _refused(w, w.renew("b", 1, T0 + LEASE + 0.1), "the leader is b at epoch 2")
    assert w.live_holder(T0 + LEASE + 0.1) == "b"
    assert w.live_holder(T0 + 2 * LEASE) == ""  # refusals extended nobody's lease


def test_refused_a_lease_when_nobody_was_ever_elected() -> None:
    w = fresh()
    for server, epoch in (("a", 0), ("a", 1)):
        _refused(w, w.renew(server, epoch, T0), "the leader is nobody at epoch 0")
    assert w.live_holder(T0) == ""


# ----------------------------------------------------------------- restart


def test_after_a_restart_the_stored_leader_is_taken_to_hold_a_lease() -> None:
    # The witness cannot know whether it renewed a's lease just before it
    # died: it honours one for a full lease time from its start.
    w = Witness(Granted(4, "a"), LEASE, T0)
    assert w.live_holder(T0) == "a"
    _refused(w, w.elect("b", 5, 4, T0 + LEASE - 0.001), "a holds a lease")
    assert w.elect("b", 5, 4, T0 + LEASE).granted


def test_a_restart_with_nothing_granted_holds_no_lease() -> None:
    w = fresh()
    assert w.live_holder(T0) == ""
    assert w.elect("b", 1, 0, T0).granted


# ----------------------------------------------- the checker and its bugs
# A seeded run of asks from three servers on a fake clock, with restarts of
# the witness, judged against the promises the servers rely on.


@dataclass
class Run:
    problems: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)  # what happened, by kind


def run(make: Make, seed: int, steps: int = 400) -> Run:
    rng = random.Random(seed)
    servers = ("a", "b", "c")
    now = T0
    w = make(Granted(), LEASE, now)
    known = dict.fromkeys(servers, 0)  # the highest epoch each server heard of
    leader: tuple[int, str] = (0, "")  # the last election granted, as the servers saw it
    until: dict[str, float] = {}  # the end of each server's granted lease (witness time)
    r = Run()
    for step in range(steps):
        now += rng.choice((0.0, 0.05, 0.2, 0.4, 1.1))
        s = rng.choice(servers)
        roll = rng.random()
        if roll < 0.05:  # the witness restarts from its store
            w = make(w.stored, LEASE, now)
            r.counts["restart"] += 1
            continue
        if roll < 0.55:
            epoch = max(known[s], rng.choice((0, 1, 2))) + rng.choice((0, 1, 1, 2))
            claimed = known[s] - rng.choice((0, 0, 1)) if known[s] else 0
            v = w.elect(s, epoch, claimed, now)
            again = v.granted and (epoch, s) == leader  # a lost answer, asked for again
            r.counts[
                "election again" if again else "election" if v.granted else "refused election"
            ] += 1
            if v.granted and not again:
                where = f"step {step}: election of {s} at {epoch}"
                if epoch <= leader[0]:
                    r.problems.append(f"{where}: not above the granted {leader[0]}")
                if claimed < leader[0]:
                    r.problems.append(
                        f"{where}: it knew {claimed} only, {leader[1]} led at {leader[0]}"
                    )
                for other, end in until.items():
                    if other != s and end > now:
                        r.problems.append(f"{where}: {other}'s lease runs {end - now:.3f} s more")
                leader = (epoch, s)
            if v.granted:
                until[s] = now + LEASE
        else:
            epoch = known[s]
            v = w.renew(s, epoch, now)
            r.counts["lease" if v.granted else "refused lease"] += 1
            if v.granted:
                if (epoch, s) != leader:
                    r.problems.append(f"step {step}: lease to {s} at {epoch}, leader is {leader}")
                until[s] = now + LEASE
        known[s] = max(known[s], v.epoch)
        if (v.epoch, v.leader) != (w.stored.epoch, w.stored.leader):
            r.problems.append(f"step {step}: the answer says {v.epoch}/{v.leader}, not {w.stored}")
    return r


class _ElectsOverALiveLease(Witness):
    def live_holder(self, now: float) -> str:
        return ""  # forgets that someone else runs alone on its lease


class _ElectsAStaleServer(Witness):
    def elect(self, server: str, epoch: int, known: int, now: float) -> Verdict:
        return super().elect(server, epoch, max(known, self.stored.epoch), now)


class _ElectsTheSameEpochTwice(Witness):
    def elect(self, server: str, epoch: int, known: int, now: float) -> Verdict:
        if epoch == self.stored.epoch and epoch > 0:
            self.stored = Granted(epoch - 1, self.stored.leader)
        return super().elect(server, epoch, min(known, self.stored.epoch), now)


class _LeasesToAnyone(Witness):
    def renew(self, server: str, epoch: int, now: float) -> Verdict:
        if epoch != self.stored.epoch:
            return super().renew(server, epoch, now)
        self.holder, self.until = server, now + self.lease
        return Verdict(True, self.stored.epoch, self.stored.leader, "lease renewed")


class _ForgetsTheLeaseOnRestart(Witness):
    def __init__(self, stored: Granted, lease: float, now: float) -> None:
        super().__init__(stored, lease, now)
        self.until = now


SEEDS = range(20)


def test_the_witness_keeps_its_promises() -> None:
    total: Counter[str] = Counter()
    for seed in SEEDS:
        r = run(Witness, seed)
        assert r.problems == [], (seed, r.problems[:5])
        total += r.counts
    # Not vacuous: every kind of answer, and restarts, happen many times.
    kinds = ("election", "refused election", "lease", "refused lease", "restart")
    assert all(total[k] >= 50 for k in kinds), total
    assert total["election again"] >= 10, total


@pytest.mark.parametrize(
    ("bug", "symptom"),
    [
        (_ElectsOverALiveLease, "lease runs"),
        (_ElectsAStaleServer, "only"),
        (_ElectsTheSameEpochTwice, "not above the granted"),
        (_LeasesToAnyone, "leader is"),
        (_ForgetsTheLeaseOnRestart, "lease runs"),
    ],
)
def test_the_checker_catches_a_planted_bug(bug: Make, symptom: str) -> None:
    found = [p for seed in SEEDS for p in run(bug, seed).problems]
    assert any(symptom in v for v in found), found[:5]
