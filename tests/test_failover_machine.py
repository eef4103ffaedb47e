"""The failover state machine (zmqfail.failover.machine) with a fake clock.

Every (state, event type) pair of TRANSITIONS is stepped through (checked
mechanically by the last test), every other pair is refused without changing
the state, and the Binary Star rules are checked one by one: startup choice,
takeover only on silence plus a fresh client vote, the most up-to-date live
backup, fencing by epochs, the primary's in-sync bookkeeping, switchover and
stop. Two hypothesis tests drive random event sequences through one machine
and through two machines joined by a lossy, partitionable simulated network.
"""

from __future__ import annotations

import random
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from conftest import example_scale, examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmqfail.failover.machine import TRANSITIONS, diagram, step
from zmqfail.failover.state import (
    Action,
    BackupsInSync,
    ClientVote,
    Event,
    FailoverState,
    HandoffTimeout,
    HigherEpoch,
    IllegalTransition,
    Pause,
    PeerActive,
    PeerCandidate,
    PeerGrant,
    PeerProgress,
    PeerSilent,
    PrimaryGone,
    PrimaryReachable,
    Promote,
    Resume,
    Role,
    StartupDone,
    State,
    Stop,
    Switchover,
    Unlisted,
    WitnessElected,
    initial,
)

# One xdist worker runs the whole module: test_zz_every_table_entry_exercised
# checks what the tests before it stepped, in this process.
pytestmark = [pytest.mark.timeout(60), pytest.mark.xdist_group("failover_machine")]

# Binary-exact times, so clock arithmetic on floats is exact.
T0 = 1000.0

EVENT_TYPES: tuple[type, ...] = typing.get_args(Event)
BACKUP_STATES = (State.STARTING, State.STANDBY, State.SYNCING, State.FENCED)
SERVING = (State.NORMAL, State.PRIMARY_ONLY, State.BACKUP_ONLY, State.HANDOFF)

# (state, event type) pairs stepped through by go(), for the last test.
STEPPED: set[tuple[State, type]] = set()


def go(s: FailoverState, e: Event, now: float) -> tuple[FailoverState, list[Action]]:
    """step(), recording which table entry was exercised."""
    new, actions = step(s, e, now)
    STEPPED.add((s.state, type(e)))
    return new, actions


def go_s(s: FailoverState, e: Event, now: float) -> FailoverState:
    return go(s, e, now)[0]


# ------------------------------------------------------------ state builders
def starting(
    name: str = "b",
    peers: tuple[str, ...] = ("a", "c"),
    epoch: int = 1,
    preferred: bool = False,
    was_active: bool = False,
    vote_window: float = 1.0,
    may_lead: bool = False,
    lead_alone: bool = False,
) -> FailoverState:
    return initial(
        name,
        peers,
        epoch,
        preferred,
        was_active,
        T0,
        vote_window,
        may_lead=may_lead,
        lead_alone=lead_alone,
    )


def standby() -> FailoverState:
    s = go_s(starting(), StartupDone(), T0 + 2)
    assert (s.state, s.role) == (State.STANDBY, Role.BACKUP)
    return s


def syncing(epoch: int = 1) -> FailoverState:
    s = go_s(starting(epoch=epoch), PeerActive("a", epoch), T0 + 1)
    assert (s.state, s.role, s.primary) == (State.SYNCING, Role.BACKUP, "a")
    return s


def normal_backup(
    name: str = "b",
    peers: tuple[str, ...] = ("a", "c"),
    epoch: int = 1,
    vote_window: float = 1.0,
) -> FailoverState:
    s = starting(name, peers, epoch, vote_window=vote_window)
    s = go_s(s, PeerActive("a", epoch, in_sync=(name,)), T0 + 1)
    assert (s.state, s.role, s.primary, s.epoch) == (State.NORMAL, Role.BACKUP, "a", epoch)
    return s


def primary_only(
    name: str = "a", peers: tuple[str, ...] = ("b", "c"), epoch: int = 1
) -> FailoverState:
    s = go_s(starting(name, peers, epoch, preferred=True), StartupDone(), T0 + 2)
    assert (s.state, s.role) == (State.PRIMARY_ONLY, Role.PRIMARY)
    return s


def normal_primary(
    name: str = "a", peers: tuple[str, ...] = ("b", "c"), in_sync: tuple[str, ...] = ("b",)
) -> FailoverState:
    s = go_s(primary_only(name, peers), BackupsInSync(in_sync), T0 + 3)
    assert (s.state, s.role, s.in_sync) == (State.NORMAL, Role.PRIMARY, in_sync)
    return s


def backup_only() -> FailoverState:
    s = normal_backup()
    s = go_s(s, PeerSilent("a"), T0 + 2)
    s = go_s(s, PrimaryGone("a"), T0 + 2.5)
    assert (s.state, s.role, s.epoch) == (State.BACKUP_ONLY, Role.PRIMARY, 2)
    return s


def fenced() -> FailoverState:
    s = go_s(primary_only(), HigherEpoch(2, "b"), T0 + 4)
    assert (s.state, s.role, s.epoch) == (State.FENCED, Role.BACKUP, 2)
    return s


def handoff() -> FailoverState:
    s = go_s(normal_primary(), Switchover(), T0 + 4)
    assert (s.state, s.role, s.handoff_to) == (State.HANDOFF, Role.PRIMARY, "b")
    return s


def stopped() -> FailoverState:
    s = go_s(starting(), Stop(), T0 + 1)
    assert s.state is State.STOPPED
    return s


BUILDERS: dict[str, Callable[[], FailoverState]] = {
    "starting": starting,
    "standby": standby,
    "syncing": syncing,
    "normal_backup": normal_backup,
    "normal_primary": normal_primary,
    "primary_only": primary_only,
    "backup_only": backup_only,
    "fenced": fenced,
    "handoff": handoff,
    "stopped": stopped,
}
ACTIVE_BUILDERS = ("primary_only", "backup_only", "normal_primary", "handoff")


def builder_for(state: State, ev: type) -> Callable[[], FailoverState]:
    if state is State.NORMAL:
        primary_side = ev in (Switchover, BackupsInSync)
        return normal_primary if primary_side else normal_backup
    return BUILDERS[state.value]


def sample(ev: type, s: FailoverState) -> Event:
    """A plausible event of type `ev` for a server in state `s`."""
    other = s.primary or s.peers[0]
    samples: dict[type, Event] = {
        StartupDone: StartupDone(),
        PeerActive: PeerActive(other, s.epoch + 1),
        PeerSilent: PeerSilent(other),
        PrimaryGone: PrimaryGone(other),
        PrimaryReachable: PrimaryReachable(other),
        WitnessElected: WitnessElected(s.epoch + 1),
        ClientVote: ClientVote(),
        BackupsInSync: BackupsInSync((s.peers[0],)),
        HigherEpoch: HigherEpoch(s.epoch + 3, s.peers[-1]),
        PeerProgress: PeerProgress(s.peers[-1], s.epoch, 0, True),
        PeerCandidate: PeerCandidate(other, s.epoch + 1, s.epoch, 99),
        PeerGrant: PeerGrant(other, s.name, s.epoch + 1),
        Switchover: Switchover(),
        Promote: Promote(force=True),
        Pause: Pause(),
        Resume: Resume(),
        HandoffTimeout: HandoffTimeout(),
        Unlisted: Unlisted(),
        Stop: Stop(),
    }
    return samples[ev]


def test_event_types_are_all_known() -> None:
    assert set(EVENT_TYPES) == {
        StartupDone,
        PeerActive,
        PeerSilent,
        PrimaryGone,
        PrimaryReachable,
        WitnessElected,
        ClientVote,
        BackupsInSync,
        HigherEpoch,
        PeerProgress,
        PeerCandidate,
        PeerGrant,
        Switchover,
        Promote,
        Pause,
        Resume,
        HandoffTimeout,
        Unlisted,
        Stop,
    }
    assert {k[1] for k in TRANSITIONS} <= set(EVENT_TYPES)


# --------------------------------------------------- 1. every table entry
TABLE_KEYS = sorted(TRANSITIONS, key=lambda k: (k[0].value, k[1].__name__))


@pytest.mark.parametrize(
    ("state", "ev"), TABLE_KEYS, ids=[f"{s.value}-{e.__name__}" for s, e in TABLE_KEYS]
)
def test_table_entry(state: State, ev: type) -> None:
    s = builder_for(state, ev)()
    assert s.state is state
    before = replace(s)
    new, actions = go(s, sample(ev, s), T0 + 10)
    _handler, targets = TRANSITIONS[(state, ev)]
    assert new.state in (state, *targets)
    assert s == before  # the input is never modified
    if new.state is not state:
        assert new.since == T0 + 10
    else:
        assert new.since == s.since
    assert all(isinstance(a, Action) for a in actions)


# ------------------------------------------------------------ 2. refusals
ILLEGAL = [
    (name, ev)
    for name, build in BUILDERS.items()
    for ev in EVENT_TYPES
    if (State.NORMAL if name.startswith("normal") else State(name), ev) not in TRANSITIONS
]


def test_illegal_list_is_complete() -> None:
    states = {State.NORMAL if n.startswith("normal") else State(n) for n in BUILDERS}
    assert states == set(State)
    n_normal_illegal = sum(1 for ev in EVENT_TYPES if (State.NORMAL, ev) not in TRANSITIONS)
    expected = len(State) * len(EVENT_TYPES) - len(TRANSITIONS) + n_normal_illegal
    assert len(ILLEGAL) == expected


@pytest.mark.parametrize(("name", "ev"), ILLEGAL, ids=[f"{n}-{e.__name__}" for n, e in ILLEGAL])
def test_refused(name: str, ev: type) -> None:
    s = BUILDERS[name]()
    before = replace(s)
    with pytest.raises(IllegalTransition):
        step(s, sample(ev, s), T0 + 10)
    assert s == before


def test_switchover_without_in_sync_backup_is_refused() -> None:
    # (NORMAL, Switchover) is in the table, but a backup in NORMAL has no
    # in-sync backups of its own: the handler refuses.
    s = normal_backup()
    before = replace(s)
    with pytest.raises(IllegalTransition):
        step(s, Switchover(), T0 + 5)
    assert s == before
    # A primary alone never reaches NORMAL, so PRIMARY_ONLY refuses it by table.
    p = primary_only()
    with pytest.raises(IllegalTransition):
        step(p, Switchover(), T0 + 5)
    assert p == primary_only()


def test_states_are_frozen() -> None:
    s = starting()
    with pytest.raises(AttributeError):
        s.state = State.NORMAL  # type: ignore[misc]


# -------------------------------------------------------------- 3. startup
def test_initial() -> None:
    s = starting(epoch=0)
    assert (s.state, s.role, s.epoch, s.since) == (State.STARTING, Role.BACKUP, 1, T0)
    assert not s.active
    assert (s.was_active, s.may_lead) == (False, False)
    # A server that may lead served, so its log may also need a resync.
    s = starting(may_lead=True)
    assert (s.was_active, s.may_lead) == (True, True)


def test_startup_preferred_fresh_becomes_primary() -> None:
    s = starting("a", ("b", "c"), preferred=True)
    new, actions = go(s, StartupDone(), T0 + 2)
    assert actions == [Action.BECOME_PRIMARY]
    assert (new.state, new.role, new.epoch) == (State.PRIMARY_ONLY, Role.PRIMARY, 1)
    assert new.was_active
    assert new.active
    assert new.since == T0 + 2


def test_startup_non_preferred_waits_in_standby() -> None:
    new, actions = go(starting(), StartupDone(), T0 + 2)
    assert actions == []
    assert (new.state, new.role, new.was_active) == (State.STANDBY, Role.BACKUP, False)
    assert not new.active


@pytest.mark.parametrize("first", ["a", "b", ""])
def test_a_fresh_pair_started_at_once_elects_the_configured_primary(first: str) -> None:
    """a and b start fresh together; b is the configured primary. a hears b
    idle and holding as much, so only a tie decides: it goes the configured
    primary's way (by name only when none is configured), so a does not ask
    to lead before b's own start-up makes b primary (crossed shards put the
    two primaries on two machines by configuring them so)."""
    a = replace(initial("a", ("b",), 1, first == "a", False, T0, first=first), last_epoch=1)
    a = go_s(a, PeerProgress("b", 1, 0, True), T0 + 0.5)
    a = go_s(a, StartupDone(), T0 + 2)
    stands = a.candidate != 0 or a.role is Role.PRIMARY
    assert stands is (first != "b"), a
    b = replace(initial("b", ("a",), 1, first == "b", False, T0, first=first), last_epoch=1)
    b = go_s(b, PeerCandidate("a", 2, 1, 0), T0 + 1)
    assert (b.granted == ("a", 2)) is (first != "b"), b.granted


def test_startup_formerly_active_alone_resumes_at_a_new_epoch() -> None:
    # Meta "active" and "alone": it was the last active server it knows of and
    # every acknowledgement it gave waited for its own disk.
    s = starting("b", ("a", "c"), epoch=4, may_lead=True, lead_alone=True)
    new, actions = go(s, StartupDone(), T0 + 2)
    assert actions == [Action.BECOME_PRIMARY]
    assert (new.state, new.role, new.epoch, new.was_active, new.may_lead) == (
        State.PRIMARY_ONLY,
        Role.PRIMARY,
        5,
        True,
        True,
    )


def test_startup_formerly_active_paired_waits_for_its_peers() -> None:
    # It led in the normal state: its backup may hold acknowledged records it
    # lost (power loss of both). It leads only once it hears every peer and
    # holds the most (audit case 2).
    s = replace(starting("b", ("a", "c"), epoch=4, may_lead=True), last_lsn=10)
    new, actions = go(s, StartupDone(), T0 + 2)
    assert (new.state, new.role, actions) == (State.STANDBY, Role.BACKUP, [])
    for peer, lsn in (("a", 12), ("c", 3)):
        new = go_s(new, PeerProgress(peer, 4, lsn, True), T0 + 3)
    assert (new.state, new.role) == (State.STANDBY, Role.BACKUP)  # a holds more
    new = go_s(new, PeerProgress("a", 4, 9, True), T0 + 4)
    assert (new.state, new.candidate) == (State.STANDBY, 5)  # it asks its peers
    for peer in ("a", "c"):
        new = go_s(new, PeerGrant(peer, "b", 5), T0 + 4)
    assert (new.state, new.role, new.epoch) == (State.PRIMARY_ONLY, Role.PRIMARY, 5)


def test_startup_needing_resync_only_waits() -> None:
    # Meta "resync" without "active": it served once but someone led after it.
    s = starting("b", ("a", "c"), epoch=4, was_active=True)
    new, actions = go(s, StartupDone(), T0 + 2)
    assert (new.state, new.role, actions) == (State.STANDBY, Role.BACKUP, [])


@pytest.mark.parametrize("who", ["preferred", "may_lead"])
def test_startup_defers_to_a_live_peer_holding_more(who: str) -> None:
    s = starting("a", ("b", "c"), preferred=who == "preferred", may_lead=who == "may_lead")
    s = replace(s, last_lsn=10)
    ahead = go_s(s, PeerProgress("b", 1, 11, True), T0 + 0.5)
    new, actions = go(ahead, StartupDone(), T0 + 2)
    assert (new.state, new.role, actions) == (State.STANDBY, Role.BACKUP, [])
    # A peer at a higher epoch holds more whatever its LSN.
    ahead = go_s(s, PeerProgress("c", 2, 0, True), T0 + 0.5)
    assert go_s(ahead, StartupDone(), T0 + 2).state is State.STANDBY


@pytest.mark.parametrize(
    "report", [("b", 1, 11, False), ("b", 1, 10, True), ("b", 1, 3, True), ("c", 0, 99, True)]
)
def test_startup_leads_when_no_live_peer_holds_more(report: tuple[str, int, int, bool]) -> None:
    s = replace(starting("a", ("b", "c"), preferred=True), last_lsn=10)
    s = go_s(s, PeerProgress(*report), T0 + 0.5)
    new, actions = go(s, StartupDone(), T0 + 2)
    assert (new.state, new.role, actions) == (
        State.PRIMARY_ONLY,
        Role.PRIMARY,
        [Action.BECOME_PRIMARY],
    )


@pytest.mark.parametrize("preferred", [False, True])
def test_startup_hearing_primary_follows(preferred: bool) -> None:
    s = starting("b", ("a", "c"), preferred=preferred)
    new, actions = go(s, PeerActive("a", 3), T0 + 1)
    assert actions == [Action.FOLLOW]
    assert (new.state, new.role, new.primary, new.epoch) == (State.SYNCING, Role.BACKUP, "a", 3)
    assert new.since == T0 + 1
    # A later StartupDone is not legal any more: the choice is made.
    with pytest.raises(IllegalTransition):
        step(new, StartupDone(), T0 + 3)


def test_startup_hearing_primary_listing_us_in_sync_is_normal() -> None:
    new, actions = go(starting(), PeerActive("a", 1, in_sync=("c", "b")), T0 + 1)
    assert actions == [Action.FOLLOW]
    assert (new.state, new.primary) == (State.NORMAL, "a")


def test_startup_formerly_active_hearing_higher_epoch_follows() -> None:
    # FOLLOW keeps only what the primary's history shares (the node checks it).
    s = starting("b", ("a", "c"), epoch=2, was_active=True)
    new, actions = go(s, PeerActive("a", 3), T0 + 1)
    assert actions == [Action.FOLLOW]
    assert (new.state, new.role, new.epoch, new.primary) == (State.SYNCING, Role.BACKUP, 3, "a")
    assert not new.was_active


def test_startup_formerly_active_follows_at_equal_epoch() -> None:
    s = starting("b", ("a", "c"), epoch=2, was_active=True)
    new, actions = go(s, PeerActive("a", 2, in_sync=("b",)), T0 + 1)
    assert actions == [Action.FOLLOW]
    assert (new.state, new.was_active, new.may_lead) == (State.NORMAL, False, False)


def test_restarted_leader_learning_a_higher_epoch_does_not_lead_at_it() -> None:
    # a led at epoch 1 and restarted (meta active). Meanwhile b took over at epoch 2
    # and c follows b. During a's startup window a hears only c: a backup heartbeat
    # at epoch 2 (HigherEpoch), not b itself. a must not then serve at epoch 2.
    s = replace(starting("a", ("b", "c"), epoch=1, may_lead=True), last_lsn=50)
    s = go_s(s, HigherEpoch(2, "c"), T0 + 0.25)
    assert s.epoch == 2
    s = go_s(s, PeerProgress("c", 2, 40, True), T0 + 0.5)
    new, _ = go(s, StartupDone(), T0 + 2)
    # It would serve its epoch-1 log as epoch 2, at the same epoch as b; at equal
    # epochs b (later name) steps down in favour of a and its acked records are lost.
    assert not (new.active and new.epoch == 2)


def test_fresh_first_primary_learning_a_higher_epoch_does_not_lead_at_it() -> None:
    # a's data dir is fresh (the preferred first primary of a new cluster), but b
    # already led at epoch 2 and is now a standby: a hears b's epoch during its
    # startup window. Serving at epoch 2 with an empty log would sit beside b's
    # history at the same epoch (found by the random sequences with a Pause).
    s = go_s(starting("a", ("b", "c"), preferred=True), HigherEpoch(2, "b"), T0 + 0.25)
    assert (s.epoch, s.preferred) == (2, False)
    new, _ = go(s, StartupDone(), T0 + 2)
    assert not new.active and new.role is Role.BACKUP


def test_startup_ignores_stale_primary() -> None:
    s = starting(epoch=3)
    new, actions = go(s, PeerActive("a", 2), T0 + 1)
    assert (new, actions) == (s, [])


def test_startup_observations_change_nothing() -> None:
    s = starting()
    new, actions = go(s, PeerSilent("a"), T0 + 1)
    assert (new, actions) == (s, [])
    new, actions = go(s, ClientVote(), T0 + 1)
    assert actions == []
    assert new.state is State.STARTING
    assert new.vote_at == T0 + 1
    new, actions = go(s, PeerProgress("c", 1, 5, True), T0 + 1)
    assert actions == []
    assert new.progress == (("c", 1, 5, True, False),)


# ------------------------------------------------------------- 4. takeover
def assert_took_over(old: FailoverState, new: FailoverState, actions: list[Action]) -> None:
    assert actions == [Action.TAKE_OVER, Action.RECOVERY_SIGNAL]
    assert (new.state, new.role, new.epoch) == (State.BACKUP_ONLY, Role.PRIMARY, old.epoch + 1)
    assert new.active
    assert new.was_active
    assert (new.primary, new.primary_silent, new.primary_gone) == ("", False, False)


def test_takeover_when_silent_on_the_links_and_gone_on_the_client_network() -> None:
    """Step 420 "ok": no client is needed (a backup with no client connected
    took over never before)."""
    s = normal_backup()
    s1, actions = go(s, PeerSilent("a"), T0 + 10)
    assert (s1.state, actions, s1.primary_silent, s1.primary_gone) == (
        State.NORMAL,
        [Action.FLUSH],
        True,
        False,
    )
    assert not s1.active
    s2, actions = go(s1, PrimaryGone("a"), T0 + 10.1)
    assert_took_over(s1, s2, actions)
    assert s2.since == T0 + 10.1
    assert not s2.primary_gone


def test_a_client_vote_never_deposes_a_primary() -> None:
    """The audit's loss: a client that briefly heard nothing voted against a
    live primary cut from its backup, and both served."""
    s = go_s(normal_backup(), PeerSilent("a"), T0 + 10)
    for t in (10.0, 10.1, 11.0, 30.0):
        s, actions = go(s, ClientVote(), T0 + t)
        assert (s.state, s.role, s.epoch, actions) == (State.NORMAL, Role.BACKUP, 1, [])


def test_link_failure_makes_the_backup_wait_not_lead() -> None:
    """Step 420 "link failure": the primary answers over the client network, so
    it runs alone and acknowledges what we lack: we may not take over any more,
    not even if it dies later, until we have followed it again."""
    s = go_s(normal_backup(), PeerSilent("a"), T0 + 10)
    new, actions = go(s, PrimaryReachable("a"), T0 + 10.1)
    assert actions == [Action.FLUSH]
    assert (new.state, new.role, new.primary, new.primary_silent) == (
        State.STANDBY,
        Role.BACKUP,
        "",
        False,
    )
    later, actions = go(new, PrimaryGone("a"), T0 + 20)
    assert (later, actions) == (new, [])
    back, actions = go(new, PeerActive("a", 1, in_sync=()), T0 + 21)
    assert (back.state, back.primary, actions) == (State.SYNCING, "a", [Action.FOLLOW])


def test_step_420_verdicts_on_another_peer_change_nothing() -> None:
    s = go_s(normal_backup(), PeerSilent("a"), T0 + 10)
    for e in (PrimaryGone("c"), PrimaryReachable("c")):
        new, actions = go(s, e, T0 + 10.1)
        assert (new, actions) == (s, [])


def test_primary_gone_alone_is_enough() -> None:
    # The agent feeds PeerSilent first, but the rule does not depend on it.
    s = normal_backup()
    new, actions = go(s, PrimaryGone("a"), T0 + 10)
    assert_took_over(s, new, actions)


def test_silence_alone_flushes_and_waits() -> None:
    """Step 420, link failure: the primary may be alive and serving its clients."""
    s = normal_backup()
    new, actions = go(s, PeerSilent("a"), T0 + 10)
    assert actions == [Action.FLUSH]
    assert (new.state, new.role, new.epoch, new.primary) == (State.NORMAL, Role.BACKUP, 1, "a")
    assert new.since == s.since


def test_vote_alone_does_nothing() -> None:
    s = normal_backup()
    for t in (10.0, 10.5, 11.0, 20.0):
        s, actions = go(s, ClientVote(), T0 + t)
        assert actions == []
        assert (s.state, s.role, s.epoch) == (State.NORMAL, Role.BACKUP, 1)


def test_silence_of_another_peer_is_not_the_primarys() -> None:
    s = go_s(normal_backup(), ClientVote(), T0 + 10)
    new, actions = go(s, PeerSilent("c"), T0 + 10.25)
    assert (new, actions) == (s, [])


def test_primary_heard_again_clears_silence() -> None:
    s = go_s(normal_backup(), PeerSilent("a"), T0 + 10)
    s = go_s(s, PeerActive("a", 1, in_sync=("b",)), T0 + 10.5)
    assert not s.primary_silent
    new, actions = go(s, ClientVote(), T0 + 11)
    assert (new.state, actions) == (State.NORMAL, [])


def test_syncing_backup_whose_primary_goes_silent_never_takes_over() -> None:
    s = go_s(syncing(), ClientVote(), T0 + 10)
    assert s.state is State.SYNCING
    new, actions = go(s, PeerSilent("a"), T0 + 10.25)
    assert actions == [Action.FLUSH]
    assert (new.state, new.role, new.epoch) == (State.STANDBY, Role.BACKUP, 1)
    for t in (10.5, 10.75, 11.0):
        new, actions = go(new, ClientVote(), T0 + t)
        assert (new.state, new.role, actions) == (State.STANDBY, Role.BACKUP, [])
        new, actions = go(new, PeerSilent("a"), T0 + t)
        assert (new.state, actions) == (State.STANDBY, [])


def test_syncing_silence_of_other_peer_ignored() -> None:
    s = syncing()
    new, actions = go(s, PeerSilent("c"), T0 + 5)
    assert (new, actions) == (s, [])


def test_standby_never_takes_over() -> None:
    s = standby()
    for t in (3.0, 3.5, 4.0):
        s, actions = go(s, ClientVote(), T0 + t)
        assert actions == []
        s, actions = go(s, PeerSilent("a"), T0 + t)
        assert actions == []
        s, actions = go(s, PeerProgress("c", 1, 0, False), T0 + t)
        assert actions == []
        assert (s.state, s.role, s.epoch) == (State.STANDBY, Role.BACKUP, 1)


def test_standby_follows_a_primary_that_shows_up() -> None:
    s = standby()
    new, actions = go(s, PeerActive("a", 2, in_sync=()), T0 + 5)
    assert actions == [Action.FOLLOW]
    assert (new.state, new.primary, new.epoch) == (State.SYNCING, "a", 2)


def test_syncing_catches_up_and_falls_behind() -> None:
    s = syncing()
    s, actions = go(s, PeerActive("a", 1, in_sync=("b",)), T0 + 2)
    assert (s.state, actions) == (State.NORMAL, [])  # same primary: no new FOLLOW
    s, actions = go(s, PeerActive("a", 1, in_sync=()), T0 + 3)
    assert (s.state, actions) == (State.SYNCING, [])


def test_backup_switches_to_new_primary() -> None:
    s = normal_backup()
    new, actions = go(s, PeerActive("c", 2), T0 + 5)
    assert actions == [Action.FOLLOW]
    assert (new.state, new.primary, new.epoch) == (State.SYNCING, "c", 2)


# ------------------------------------------------------ 5. several backups
def silent_and_gone(s: FailoverState, now: float) -> FailoverState:
    s = go_s(s, PeerSilent("a"), now)
    s = go_s(s, PrimaryGone("a"), now)
    return s


def test_better_live_backup_takes_precedence() -> None:
    s = replace(normal_backup(), last_lsn=40)
    s, actions = go(s, PeerProgress("c", 1, 50, True), T0 + 5)
    assert actions == []
    s = silent_and_gone(s, T0 + 10)
    assert (s.state, s.role, s.epoch) == (State.NORMAL, Role.BACKUP, 1)


def test_higher_epoch_beats_higher_lsn() -> None:
    s = replace(normal_backup(), last_lsn=90)
    s = go_s(s, PeerProgress("c", 2, 10, True), T0 + 5)
    s = silent_and_gone(s, T0 + 10)
    assert s.state is State.NORMAL


def test_worse_backup_does_not_block() -> None:
    s = replace(normal_backup(), last_lsn=40)
    s = go_s(s, PeerProgress("c", 1, 39, True), T0 + 5)
    s1 = go_s(s, PeerSilent("a"), T0 + 10)
    new, actions = go(s1, PrimaryGone("a"), T0 + 10)
    assert_took_over(s1, new, actions)


def test_dead_better_backup_does_not_block() -> None:
    s = replace(normal_backup(), last_lsn=40)
    s = go_s(s, PeerProgress("c", 1, 50, False), T0 + 5)
    s1 = go_s(s, PeerSilent("a"), T0 + 10)
    new, actions = go(s1, PrimaryGone("a"), T0 + 10)
    assert_took_over(s1, new, actions)


def test_better_backup_dying_lets_us_take_over_on_its_progress() -> None:
    s = replace(normal_backup(), last_lsn=40)
    s = go_s(s, PeerProgress("c", 1, 50, True), T0 + 5)
    s = silent_and_gone(s, T0 + 10)
    assert s.state is State.NORMAL
    new, actions = go(s, PeerProgress("c", 1, 50, False), T0 + 10.5)
    assert_took_over(s, new, actions)
    # Only the latest report of a peer counts.
    assert new.progress == (("c", 1, 50, False, False),)


def test_tie_is_broken_by_name_order() -> None:
    # b and c equally up to date: b (lower name) takes over, c does not.
    b = replace(normal_backup("b", ("a", "c")), last_lsn=40)
    b = go_s(b, PeerProgress("c", 1, 40, True), T0 + 5)
    b1 = go_s(b, PeerSilent("a"), T0 + 10)
    new, actions = go(b1, PrimaryGone("a"), T0 + 10)
    assert_took_over(b1, new, actions)

    c = replace(normal_backup("c", ("a", "b")), last_lsn=40)
    c = go_s(c, PeerProgress("b", 1, 40, True), T0 + 5)
    c = silent_and_gone(c, T0 + 10)
    assert (c.state, c.role) == (State.NORMAL, Role.BACKUP)


def test_tie_break_uses_sorted_names_not_config_order() -> None:
    # c's peers are listed b-last, but b still wins the tie.
    c = replace(normal_backup("c", ("b", "a")), last_lsn=7)
    c = go_s(c, PeerProgress("b", 1, 7, True), T0 + 5)
    c = silent_and_gone(c, T0 + 10)
    assert c.state is State.NORMAL


def test_a_silent_primarys_progress_is_ignored() -> None:
    s = replace(normal_backup(), last_lsn=40)
    s = go_s(s, PeerProgress("a", 5, 999, True), T0 + 5)
    s1 = go_s(s, PeerSilent("a"), T0 + 10)
    s1 = go_s(s1, PeerProgress("a", 5, 999, False), T0 + 10)  # the agent judges it now
    new, actions = go(s1, PrimaryGone("a"), T0 + 10)
    assert_took_over(s1, new, actions)


def test_a_restarted_primary_holding_more_is_not_overtaken() -> None:
    # The primary restarted (alive, no longer serving) and holds more: it leads
    # on its start-up rule; a takeover by us too would make two leaders of one
    # epoch (found by the simulator).
    s = replace(normal_backup(), last_lsn=40)
    s = go_s(s, PeerProgress("a", 1, 45, True, serving=False), T0 + 5)
    s1 = go_s(s, PeerSilent("a"), T0 + 10)  # "no longer serves"
    new, actions = go(s1, PrimaryGone("a"), T0 + 10)
    assert (new.state, new.role, actions) == (State.NORMAL, Role.BACKUP, [Action.FLUSH])


def test_equal_epochs_keep_the_more_advanced_log() -> None:
    # Two servers that each led at epoch 2 without hearing each other: the one
    # whose log is behind steps down, whatever the names.
    a = replace(primary_only("a", ("b",)), epoch=2, last_epoch=2, last_lsn=38)
    new, actions = go(a, PeerActive("b", 2, last_lsn=46, last_epoch=2), T0 + 5)
    assert (new.state, actions) == (State.FENCED, [Action.STEP_DOWN])
    new, actions = go(a, PeerActive("b", 2, last_lsn=30, last_epoch=2), T0 + 5)
    assert (new.state, actions) == (State.PRIMARY_ONLY, [])


def test_a_backup_named_in_sync_but_lacking_acknowledged_records_is_syncing() -> None:
    # Audit case 3: the primary counts b while b still lacks records it
    # acknowledged alone; b must not call itself in sync (and take over).
    s = replace(starting(), last_lsn=40)
    new, _ = go(s, PeerActive("a", 1, in_sync=("b",), committed_lsn=50), T0 + 1)
    assert new.state is State.SYNCING
    s = replace(new, last_lsn=50)
    new, _ = go(s, PeerActive("a", 1, in_sync=("b",), committed_lsn=50), T0 + 1.1)
    assert new.state is State.NORMAL


def test_standby_does_not_lead_past_a_serving_peer_or_on_an_old_report() -> None:
    # Audit case 1: b reported (1, 40) while it was a backup; it then took over
    # and serves. An emptied a must not read that old report as "b holds less".
    a = replace(go_s(starting("a", ("b",)), StartupDone(), T0 + 2), last_lsn=0, last_epoch=2)
    a = go_s(a, PeerProgress("b", 1, 40, True, serving=False), T0 + 3)
    assert a.candidate == 2  # b idle and behind (by that report): a asks to lead ...
    assert go_s(a, PeerGrant("b", "a", 2), T0 + 3).state is State.PRIMARY_ONLY
    a = replace(go_s(starting("a", ("b",)), StartupDone(), T0 + 2), last_lsn=0, last_epoch=2)
    a = go_s(a, PeerProgress("b", 2, 900, True, serving=True), T0 + 3)
    a = go_s(a, ClientVote(), T0 + 4)
    assert a.state is State.STANDBY  # ... but not while b serves
    a = go_s(a, PeerProgress("b", 2, 900, False, serving=False), T0 + 5)
    a = go_s(a, ClientVote(), T0 + 6)
    assert a.state is State.STANDBY  # nor when b falls silent: b may hold more


def test_a_serving_peer_is_no_candidate_for_the_best_backup() -> None:
    b = replace(normal_backup("b", ("a", "c")), last_lsn=40)
    b = go_s(b, PeerProgress("c", 1, 90, True, serving=True), T0 + 5)
    b1 = go_s(b, PeerSilent("a"), T0 + 10)
    new, actions = go(b1, PrimaryGone("a"), T0 + 10)
    assert_took_over(b1, new, actions)


def test_progress_is_only_recorded_by_a_primary() -> None:
    p = primary_only()
    new, actions = go(p, PeerProgress("b", 1, 3, True), T0 + 5)
    assert actions == []
    assert (new.state, new.progress) == (State.PRIMARY_ONLY, (("b", 1, 3, True, False),))


# ---------------------------------------------------------------- 6. fencing
@pytest.mark.parametrize("name", ACTIVE_BUILDERS)
def test_active_server_fenced_by_higher_epoch(name: str) -> None:
    s = BUILDERS[name]()
    new, actions = go(s, HigherEpoch(7, "c"), T0 + 20)
    assert actions == [Action.STEP_DOWN]
    assert (new.state, new.role, new.epoch) == (State.FENCED, Role.BACKUP, 7)
    assert not new.active
    assert (new.in_sync, new.primary, new.since) == ((), "", T0 + 20)


@pytest.mark.parametrize("name", ACTIVE_BUILDERS)
def test_active_server_fenced_by_higher_epoch_primary(name: str) -> None:
    s = BUILDERS[name]()
    new, actions = go(s, PeerActive("c", 7, in_sync=(s.name,)), T0 + 20)
    assert actions == [Action.STEP_DOWN]
    assert (new.state, new.role, new.epoch) == (State.FENCED, Role.BACKUP, 7)
    assert not new.active
    assert (new.in_sync, new.handoff_to) == ((), "")


@pytest.mark.parametrize("name", ACTIVE_BUILDERS)
def test_active_server_ignores_stale_epochs(name: str) -> None:
    s = BUILDERS[name]()
    s = replace(s, epoch=5)
    for e in (HigherEpoch(5, "c"), HigherEpoch(4, "c"), PeerActive("c", 4)):
        new, actions = go(s, e, T0 + 20)
        assert (new, actions) == (s, [])


def tie(s: FailoverState, peer: str, epoch: int) -> PeerActive:
    """A peer serving at `epoch` whose log position equals ours."""
    return PeerActive(peer, epoch, last_lsn=s.last_lsn, last_epoch=s.last_epoch)


def test_equal_epochs_and_logs_later_name_steps_down() -> None:
    a = primary_only("a", ("b", "c"))
    b = replace(primary_only("b", ("a", "c")), epoch=1)
    new_a, actions_a = go(a, tie(a, "b", 1), T0 + 5)
    assert (new_a, actions_a) == (a, [])
    new_b, actions_b = go(b, tie(b, "a", 1), T0 + 5)
    assert actions_b == [Action.STEP_DOWN]
    assert (new_b.state, new_b.role, new_b.epoch) == (State.FENCED, Role.BACKUP, 1)


def test_equal_epochs_in_normal_and_backup_only() -> None:
    # b serves in BACKUP_ONLY at epoch 2 and hears c at epoch 2: b is earlier.
    b = backup_only()
    new, actions = go(b, tie(b, "c", 2), T0 + 5)
    assert (new, actions) == (b, [])
    new, actions = go(b, tie(b, "a", 2), T0 + 5)
    assert (new.state, actions) == (State.FENCED, [Action.STEP_DOWN])
    # c as a NORMAL primary hearing b at the same epoch steps down.
    c = normal_primary("c", ("a", "b"), in_sync=("a",))
    new, actions = go(c, tie(c, "b", 1), T0 + 5)
    assert (new.state, new.role, actions) == (State.FENCED, Role.BACKUP, [Action.STEP_DOWN])


@pytest.mark.parametrize("name", ["normal_backup", "syncing", "standby", "fenced"])
def test_backup_ignores_lower_epoch_primary(name: str) -> None:
    s = replace(BUILDERS[name](), epoch=5)
    new, actions = go(s, PeerActive("c", 4, in_sync=(s.name,)), T0 + 20)
    assert (new, actions) == (s, [])


@pytest.mark.parametrize("name", ["starting", "standby", "fenced"])
def test_unattached_backup_adopts_higher_epoch(name: str) -> None:
    s = BUILDERS[name]()
    new, actions = go(s, HigherEpoch(9, "c"), T0 + 20)
    assert actions == []
    assert new == replace(s, epoch=9, preferred=False)  # no first primary any more
    # ... and an equal or lower one changes nothing.
    new, actions = go(s, HigherEpoch(s.epoch, "c"), T0 + 20)
    assert (new, actions) == (s, [])


@pytest.mark.parametrize("name", ["syncing", "normal_backup"])
def test_following_backup_stops_following_on_higher_epoch(name: str) -> None:
    """Someone took over from the primary we follow: adopt the epoch, stop
    following (STANDBY), and never take over from the deposed primary."""
    s = BUILDERS[name]()
    new, actions = go(s, HigherEpoch(9, "c"), T0 + 20)
    assert actions == []
    assert (new.state, new.role, new.epoch, new.primary) == (State.STANDBY, Role.BACKUP, 9, "")
    assert (new.primary_silent, new.since) == (False, T0 + 20)
    # Equal or lower epochs change nothing.
    for epoch in (s.epoch, s.epoch - 1):
        same, actions = go(s, HigherEpoch(epoch, "c"), T0 + 20)
        assert (same, actions) == (s, [])
    # The old primary going silent and clients voting no longer lead to a takeover.
    for t in (20.25, 20.5):
        new, actions = go(new, PeerSilent("a"), T0 + t)
        assert actions == []
        new, actions = go(new, ClientVote(), T0 + t)
        assert (new.state, new.role, actions) == (State.STANDBY, Role.BACKUP, [])
    # The old primary at its old epoch is ignored; the new one is followed.
    new, actions = go(new, PeerActive("a", 1, in_sync=("b",)), T0 + 21)
    assert (new.state, new.epoch, actions) == (State.STANDBY, 9, [])
    new, actions = go(new, PeerActive("c", 9), T0 + 22)
    assert (new.state, new.primary, new.epoch, actions) == (
        State.SYNCING,
        "c",
        9,
        [Action.FOLLOW],
    )


def test_fenced_follows_a_higher_primary() -> None:
    s = fenced()  # epoch 2 after stepping down
    assert s.was_active
    new, actions = go(s, PeerActive("b", 3), T0 + 5)
    assert actions == [Action.FOLLOW]
    assert (new.state, new.role, new.primary, new.epoch) == (State.SYNCING, Role.BACKUP, "b", 3)
    assert not new.was_active


def fence_by_higher_epoch() -> FailoverState:
    return go_s(primary_only(), HigherEpoch(2, "b"), T0 + 4)


def fence_by_peer_active() -> FailoverState:
    return go_s(primary_only(), PeerActive("b", 2), T0 + 4)


@pytest.mark.parametrize("fence", [fence_by_higher_epoch, fence_by_peer_active])
def test_fenced_primary_resyncs_when_following_the_new_primary(
    fence: Callable[[], FailoverState],
) -> None:
    # a served alone at epoch 1; b took over (epoch 2). a steps down, then hears b
    # serving at epoch 2: a's log may hold records b never had; following, the
    # node keeps only the part b's history shares.
    s = fence()
    assert (s.state, s.epoch, s.was_active, s.may_lead) == (State.FENCED, 2, True, False)
    new, actions = go(s, PeerActive("b", 2), T0 + 5)
    assert actions == [Action.FOLLOW]
    assert (new.state, new.primary, new.was_active) == (State.SYNCING, "b", False)


@pytest.mark.parametrize("fence", [fence_by_higher_epoch, fence_by_peer_active])
def test_restart_after_fencing_does_not_claim_the_new_epoch(
    fence: Callable[[], FailoverState],
) -> None:
    # a (PRIMARY_ONLY, epoch 1) is fenced by b, which took over at epoch 2.
    a = fence()
    # The node persists meta {"epoch", "active": may_lead, "resync": was_active}
    # and restarts; b is not heard during the startup window (briefly unreachable).
    a2 = starting("a", ("b", "c"), epoch=a.epoch, was_active=a.was_active, may_lead=a.may_lead)
    a2 = go_s(a2, StartupDone(), T0 + 10)
    assert (a2.state, a2.was_active) == (State.STANDBY, True)
    b = backup_only()  # b, serving at epoch 2
    assert b.epoch == 2
    # Two servers active at the same epoch; at equal epochs b (later name) yields to a,
    # whose log lacks everything b acknowledged at epoch 2.
    assert not (a2.active and a2.epoch == b.epoch)


def test_fenced_from_handoff_rejoins_without_resync() -> None:
    h = handoff()  # a, handing over to b at epoch 1
    f, actions = go(h, PeerActive("b", 2, in_sync=()), T0 + 5)
    assert actions == [Action.STEP_DOWN]
    assert (f.state, f.role, f.epoch, f.was_active) == (State.FENCED, Role.BACKUP, 2, False)
    new, actions = go(f, PeerActive("b", 2, in_sync=()), T0 + 6)
    assert actions == [Action.FOLLOW]
    assert (new.state, new.primary, new.epoch) == (State.SYNCING, "b", 2)
    # Even at a later epoch, a server that handed over cleanly has nothing to undo.
    new, actions = go(f, PeerActive("b", 3, in_sync=("a",)), T0 + 6)
    assert actions == [Action.FOLLOW]
    assert new.state is State.NORMAL


def test_handoff_fenced_by_higher_epoch_frame_rejoins_without_resync() -> None:
    # Same as hearing the new primary itself: a clean handoff has nothing to undo.
    h = handoff()
    f, actions = go(h, HigherEpoch(2, "b"), T0 + 5)
    assert (f.state, f.role, f.epoch, actions) == (State.FENCED, Role.BACKUP, 2, [Action.STEP_DOWN])
    assert (f.was_active, f.handoff_to) == (False, "")
    _new, actions = go(f, PeerActive("b", 3), T0 + 6)
    assert actions == [Action.FOLLOW]


def test_fenced_ignores_observations() -> None:
    f = fenced()
    for e in (PeerSilent("b"), PeerProgress("c", 2, 5, True)):
        new, actions = go(f, e, T0 + 5)
        assert actions == []
        assert (new.state, new.role, new.epoch) == (State.FENCED, Role.BACKUP, 2)
    new, actions = go(f, ClientVote(), T0 + 5)
    assert (new.state, new.vote_at, actions) == (State.FENCED, T0 + 5, [])


# ----------------------------------------------------------- 7. primary side
def test_primary_only_gains_a_backup() -> None:
    p = primary_only()
    new, actions = go(p, BackupsInSync(("b",)), T0 + 5)
    assert actions == []
    assert (new.state, new.role, new.in_sync, new.since) == (
        State.NORMAL,
        Role.PRIMARY,
        ("b",),
        T0 + 5,
    )
    assert new.active


def test_primary_only_with_no_backup_flushes() -> None:
    p = primary_only()
    new, actions = go(p, BackupsInSync(()), T0 + 5)
    assert (new.state, new.in_sync, actions) == (State.PRIMARY_ONLY, (), [Action.FLUSH])
    assert new.since == p.since


def test_normal_primary_loses_its_backups() -> None:
    n = normal_primary(in_sync=("b", "c"))
    new, actions = go(n, BackupsInSync(("c",)), T0 + 5)
    assert (new.state, new.in_sync, actions) == (State.NORMAL, ("c",), [])
    assert new.since == n.since
    new, actions = go(new, BackupsInSync(()), T0 + 6)
    assert actions == [Action.FLUSH]
    assert (new.state, new.role, new.in_sync) == (State.PRIMARY_ONLY, Role.PRIMARY, ())
    assert new.active


def test_backup_only_gains_and_keeps_role() -> None:
    s = backup_only()
    new, actions = go(s, BackupsInSync(("a",)), T0 + 5)
    assert actions == []
    assert (new.state, new.role, new.epoch, new.in_sync) == (State.NORMAL, Role.PRIMARY, 2, ("a",))
    assert new.active
    alone, actions = go(s, BackupsInSync(()), T0 + 5)
    assert (alone.state, alone.role, actions) == (State.BACKUP_ONLY, Role.PRIMARY, [Action.FLUSH])


def test_primary_ignores_votes_and_silence_in_normal() -> None:
    n = normal_primary()
    new, actions = go(n, ClientVote(), T0 + 5)
    assert (new.state, new.role, actions) == (State.NORMAL, Role.PRIMARY, [])
    new, actions = go(new, PeerSilent("b"), T0 + 5)
    assert (new.state, new.role, actions) == (State.NORMAL, Role.PRIMARY, [])
    new, actions = go(new, PeerProgress("b", 1, 0, False), T0 + 5)
    assert (new.state, new.role, actions) == (State.NORMAL, Role.PRIMARY, [])


def test_backups_in_sync_is_primary_side_only() -> None:
    # A stray primary-side event must not turn a NORMAL backup into a "primary".
    s = normal_backup()
    for names in ((), ("c",)):
        new, actions = go(s, BackupsInSync(names), T0 + 5)
        assert (new, actions) == (s, [])


# ------------------------------------------------------------ 8. switchover
def test_switchover_hands_off_to_first_in_sync_backup_by_name() -> None:
    n = normal_primary("a", ("c", "b"), in_sync=("c", "b"))
    new, actions = go(n, Switchover(), T0 + 5)
    assert actions == [Action.HANDOFF]
    assert (new.state, new.role, new.handoff_to, new.since) == (
        State.HANDOFF,
        Role.PRIMARY,
        "b",
        T0 + 5,
    )
    assert not new.active  # takes no new requests


def test_handoff_ignores_votes_silence_and_progress() -> None:
    h = handoff()
    for e in (ClientVote(), PeerSilent("b"), PeerProgress("b", 1, 9, True), BackupsInSync(("b",))):
        new, actions = go(h, e, T0 + 5)
        assert actions == []
        assert (new.state, new.role, new.handoff_to, new.in_sync) == (
            State.HANDOFF,
            Role.PRIMARY,
            "b",
            ("b",),
        )


def test_handoff_is_called_off_when_its_target_is_lost_or_late() -> None:
    """Otherwise a switchover to a backup that dies would leave nobody serving."""
    h = handoff()
    new, actions = go(h, BackupsInSync(()), T0 + 5)
    assert (new.state, new.role, new.handoff_to, actions) == (
        State.PRIMARY_ONLY,
        Role.PRIMARY,
        "",
        [Action.FLUSH],
    )
    assert new.active
    new, actions = go(h, HandoffTimeout(), T0 + 9)
    assert (new.state, new.handoff_to, actions) == (State.NORMAL, "", [])
    assert new.active


def test_handoff_target_takes_over_at_once() -> None:
    s = normal_backup()
    assert s.vote_at is None
    assert not s.primary_silent
    new, actions = go(s, PeerActive("a", 1, in_sync=("b",), handoff_to="b"), T0 + 5)
    assert_took_over(s, new, actions)


def test_handoff_to_another_backup_is_not_ours() -> None:
    s = normal_backup()
    new, actions = go(s, PeerActive("a", 1, in_sync=("b", "c"), handoff_to="c"), T0 + 5)
    assert (new.state, new.role, new.epoch, actions) == (State.NORMAL, Role.BACKUP, 1, [])


def test_handoff_needs_us_in_sync_and_normal() -> None:
    s = normal_backup()
    new, actions = go(s, PeerActive("a", 1, in_sync=(), handoff_to="b"), T0 + 5)
    assert (new.state, new.role, actions) == (State.SYNCING, Role.BACKUP, [])
    sy = syncing()
    new, actions = go(sy, PeerActive("a", 1, in_sync=("b",), handoff_to="b"), T0 + 5)
    assert (new.state, new.role, actions) == (State.NORMAL, Role.BACKUP, [])
    taken, actions = go(new, PeerActive("a", 1, in_sync=("b",), handoff_to="b"), T0 + 6)
    assert_took_over(new, taken, actions)


def test_full_switchover() -> None:
    a = normal_primary()
    b = normal_backup()
    a, _ = go(a, Switchover(), T0 + 5)
    b, actions = go(b, PeerActive("a", a.epoch, a.in_sync, a.handoff_to), T0 + 5.25)
    assert (b.state, b.epoch, actions[0]) == (State.BACKUP_ONLY, 2, Action.TAKE_OVER)
    a, actions = go(a, PeerActive("b", b.epoch), T0 + 5.5)
    assert (a.state, actions, a.was_active) == (State.FENCED, [Action.STEP_DOWN], False)
    a, actions = go(a, PeerActive("b", b.epoch), T0 + 5.75)
    assert (a.state, a.primary, actions) == (State.SYNCING, "b", [Action.FOLLOW])
    b, _ = go(b, BackupsInSync(("a",)), T0 + 6)
    a, actions = go(a, PeerActive("b", b.epoch, b.in_sync), T0 + 6.25)
    assert (a.state, b.state, b.role, actions) == (State.NORMAL, State.NORMAL, Role.PRIMARY, [])


# ------------------------------------------------------------------ 9. stop
LIVE = [n for n in BUILDERS if n != "stopped"]


@pytest.mark.parametrize("name", LIVE)
def test_stop_from_every_live_state(name: str) -> None:
    s = BUILDERS[name]()
    new, actions = go(s, Stop(), T0 + 50)
    assert actions == [Action.STOP]
    assert (new.state, new.since) == (State.STOPPED, T0 + 50)
    assert not new.active


@pytest.mark.parametrize("ev", EVENT_TYPES, ids=[e.__name__ for e in EVENT_TYPES])
def test_nothing_is_legal_when_stopped(ev: type) -> None:
    s = go_s(normal_primary(), Stop(), T0 + 5)
    before = replace(s)
    with pytest.raises(IllegalTransition):
        step(s, sample(ev, s), T0 + 6)
    assert s == before


# --------------------------------------------------------------- 10. diagram
EDGE = re.compile(r"^    (\w+) --> (\w+): (\w+(?:, \w+)*)$")


def test_diagram_matches_table() -> None:
    text = diagram()
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert text.endswith("\n")
    assert "    [*] --> starting" in lines
    assert "    stopped --> [*]" in lines
    expected: dict[tuple[str, str], set[str]] = {}
    for (src, ev), (_handler, targets) in TRANSITIONS.items():
        for dst in targets:
            if dst is not src:
                expected.setdefault((src.value, dst.value), set()).add(ev.__name__)
    found: dict[tuple[str, str], set[str]] = {}
    for line in lines[1:]:
        if line in ("    [*] --> starting", "    stopped --> [*]"):
            continue
        m = EDGE.match(line)
        assert m is not None, line
        key = (m.group(1), m.group(2))
        assert key not in found, f"duplicate edge {line}"
        found[key] = set(m.group(3).split(", "))
    assert found == expected
    assert all(a != b for a, b in found)
    # A few edges the rules require.
    assert ("normal", "backup_only") in found
    assert ("starting", "primary_only") in found
    assert ("handoff", "fenced") in found
    assert "HigherEpoch" in found[("primary_only", "fenced")]


# ------------------------------------------------------- 11. random sequences
NAMES = ("a", "b", "c")
BACKUP_ROLE_ONLY = (State.STARTING, State.STANDBY, State.SYNCING, State.FENCED)


def check_step(
    old: FailoverState, e: Event, now: float, new: FailoverState, actions: list[Action]
) -> None:
    """The invariants of one successful step."""
    _handler, targets = TRANSITIONS[(old.state, type(e))]
    assert new.state in (old.state, *targets)
    assert new.epoch >= old.epoch
    assert not (new.role is Role.PRIMARY and new.state in BACKUP_ROLE_ONLY)
    assert not new.active or new.role is Role.PRIMARY
    assert (new.name, new.peers, new.vote_window) == (old.name, old.peers, old.vote_window)
    assert new.since == (now if new.state is not old.state else old.since)
    assert (Action.TAKE_OVER in actions) == (Action.RECOVERY_SIGNAL in actions)
    # An operator's promote (at once, or on the witness's grant of its epoch).
    promoted = isinstance(e, Promote) or (
        isinstance(e, WitnessElected) and old.promoting == e.epoch != 0
    )
    handed = isinstance(e, PeerActive) and e.handoff_to == old.name
    if new.role is Role.PRIMARY and old.role is Role.BACKUP and old.paused and new.paused:
        # Paused: nothing leads at a new epoch on its own (a fresh cluster's
        # first primary leads at epoch 1; an operator's promote or switchover may).
        assert promoted or handed or new.epoch == old.epoch == 1, (old, e)
    if Action.TAKE_OVER in actions and promoted:
        assert old.role is Role.BACKUP and old.state is not State.STARTING
        assert (new.state, new.role) == (State.BACKUP_ONLY, Role.PRIMARY)
        assert new.epoch > old.epoch and new.promoting == 0
        if isinstance(e, Promote) and not e.force:
            assert old.state is State.NORMAL
            assert not set(e.heard) & set(old.peers)
    elif Action.TAKE_OVER in actions:
        assert old.state is State.NORMAL
        assert old.role is Role.BACKUP
        assert (new.state, new.role) == (State.BACKUP_ONLY, Role.PRIMARY)
        assert new.active
        if isinstance(e, PeerActive) and e.handoff_to == old.name:
            assert old.name in e.in_sync
            assert new.epoch == e.epoch + 1
        elif (isinstance(e, PeerProgress) and e.peer == old.primary) or (
            isinstance(e, Resume) and not old.primary_gone
        ):
            # Our primary restarted and holds less than we do: no vote needed.
            assert new.epoch == old.epoch + 1
        else:
            # Step 420: only a primary silent on the links AND on the client
            # network is taken over; a client vote never is enough.
            assert isinstance(e, PrimaryGone) or old.primary_gone
            assert not isinstance(e, ClientVote)
            assert new.epoch == old.epoch + 1
    elif Action.BECOME_PRIMARY in actions and new.epoch != old.epoch:
        # Leading with nobody to take over from (all restarted): a new epoch.
        assert new.epoch == old.epoch + 1
    else:
        assert new.epoch == old.epoch or isinstance(e, (PeerActive, HigherEpoch))
    if Action.STEP_DOWN in actions:
        assert old.role is Role.PRIMARY
        assert (new.state, new.role) == (State.FENCED, Role.BACKUP)
    if new.state is State.STOPPED:
        assert isinstance(e, Stop)
        assert actions == [Action.STOP]
    if old.role is Role.PRIMARY and new.role is Role.BACKUP:
        assert Action.STEP_DOWN in actions
    if new.role is Role.PRIMARY:
        # A serving server's log may hold records nobody else has.
        assert new.was_active
        assert new.may_lead
    if new.state is State.FENCED:
        assert not new.may_lead


def _events_to(me: str) -> st.SearchStrategy[Event]:
    others = [n for n in NAMES if n != me]
    peer = st.sampled_from(others)
    epoch = st.integers(1, 6)
    names = st.lists(st.sampled_from(NAMES), unique=True, max_size=3).map(tuple)
    return st.one_of(
        st.just(StartupDone()),
        st.builds(PeerActive, peer, epoch, names, st.sampled_from(("", *NAMES))),
        st.builds(PeerSilent, peer),
        st.builds(PrimaryGone, peer),
        st.builds(PrimaryReachable, peer),
        st.builds(WitnessElected, epoch),
        st.just(ClientVote()),
        st.builds(BackupsInSync, st.lists(st.sampled_from(others), unique=True).map(tuple)),
        st.builds(HigherEpoch, epoch, peer),
        st.builds(PeerProgress, peer, epoch, st.integers(0, 20), st.booleans()),
        st.builds(Switchover, st.sampled_from(("", *NAMES))),
        st.builds(Promote, st.booleans(), names),
        st.just(Pause()),
        st.just(Resume()),
    )


# Built once per node name: building these strategies anew for every drawn
# event took most of the random-sequence test's time (Hypothesis validates a
# strategy when it is first drawn from).
EVENTS_TO = {me: _events_to(me) for me in NAMES}
STOP_ROLL = st.integers(0, 39)


@st.composite
def events_for(draw: st.DrawFn, me: str) -> Event:
    if draw(STOP_ROLL) == 0:
        return Stop()
    return draw(EVENTS_TO[me])


CONFIGS = [  # name, preferred, was_active (resync), may_lead, epoch
    ("a", True, False, False, 1),
    ("b", False, False, False, 1),
    ("b", False, True, False, 3),
    ("b", False, True, True, 3),
    ("c", False, False, False, 2),
    ("c", False, False, True, 2),
    ("c", True, True, False, 1),
]


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[FailoverState, bool, list[tuple[Event, float, int]]]:
    name, preferred, was_active, may_lead, epoch = draw(st.sampled_from(CONFIGS))
    window = draw(st.sampled_from((0.5, 1.0, 3.0)))
    peers = tuple(n for n in NAMES if n != name)
    s = initial(name, peers, epoch, preferred, was_active, T0, window, may_lead=may_lead)
    shell = draw(st.booleans())
    steps = draw(
        st.lists(
            st.tuples(
                events_for(name),
                st.sampled_from((0.0, 0.125, 0.25, 0.5, 1.0, 2.0)),
                st.integers(0, 3),
            ),
            max_size=60,
        )
    )
    return s, shell, steps


@pytest.mark.timeout(300 * example_scale())  # CPU-bound: a loaded machine may take minutes
@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_random_event_sequences_keep_invariants(
    scenario: tuple[FailoverState, bool, list[tuple[Event, float, int]]],
) -> None:
    s, shell, steps = scenario
    now = T0
    for e, dt, lsn_inc in steps:
        now += dt
        if shell:
            # As the node shell does: only primaries hear about in-sync backups,
            # and our own LSN is refreshed before each step.
            if isinstance(e, BackupsInSync) and s.role is not Role.PRIMARY:
                continue
            s = replace(s, last_lsn=s.last_lsn + lsn_inc)
        before = replace(s)
        try:
            new, actions = step(s, e, now)
        except IllegalTransition:
            assert s == before
            legal = (s.state, type(e)) in TRANSITIONS
            # Refused by its handler: a switchover with no (such) in-sync
            # backup, a promote that is not forced or of a server that serves.
            assert not legal or isinstance(e, Switchover | Promote)
            continue
        assert s == before
        check_step(s, e, now, new, actions)
        if shell:
            # Without stray primary-side events a backup-role server never sits
            # in a serving-only state.
            serving_only = (State.PRIMARY_ONLY, State.BACKUP_ONLY, State.HANDOFF)
            assert not (new.state in serving_only and new.role is Role.BACKUP)
            assert new.role is Role.PRIMARY or new.in_sync == ()
        s = new


# --------------------------------------------- two machines on a lossy network
DT = 0.125
DEAD = 0.375  # silent on every path for this long
STARTUP = 2 * DEAD
VOTE_WINDOW = 1.0


@dataclass(frozen=True)
class Beat:
    """What a heartbeat carries."""

    role: Role
    state: State
    epoch: int
    in_sync: tuple[str, ...]
    handoff_to: str
    lsn: int
    candidate: int = 0
    granted: tuple[str, int] = ("", 0)


class Pair:
    """Two servers a (preferred) and b, fed the way the node shell feeds them."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.now = T0
        self.fs = {
            "a": initial("a", ("b",), 1, True, False, T0, VOTE_WINDOW),
            "b": initial("b", ("a",), 1, False, False, T0, VOTE_WINDOW),
        }
        self.lsn = {"a": 0, "b": 0}
        self.heard: dict[str, tuple[Beat, float]] = {}  # receiver -> (beat, when)
        self.silent: set[str] = set()  # receivers that reported their primary silent
        self.judged: set[str] = set()  # ... and had step 420's verdict on it
        self.takeovers = 0

    def other(self, x: str) -> str:
        return "b" if x == "a" else "a"

    def feed(self, x: str, e: Event) -> None:
        s = self.fs[x]
        if (s.state, type(e)) not in TRANSITIONS:
            return
        s = replace(s, last_lsn=self.lsn[x])
        try:
            new, actions = step(s, e, self.now)
        except IllegalTransition:
            assert isinstance(e, Switchover)
            return
        check_step(s, e, self.now, new, actions)
        if Action.TAKE_OVER in actions:
            self.takeovers += 1
        self.fs[x] = new
        self.check()

    def restart(self, x: str, lost: int) -> None:
        """x's process restarts from its meta (epoch, "active": may_lead, "resync":
        was_active), having lost its last `lost` records (acked, not yet flushed)."""
        s = self.fs[x]
        self.fs[x] = initial(
            x, s.peers, s.epoch, False, s.was_active, self.now, VOTE_WINDOW, may_lead=s.may_lead
        )
        self.lsn[x] = max(0, self.lsn[x] - lost)
        self.heard.pop(x, None)
        self.silent.discard(x)
        self.judged.discard(x)

    def check(self) -> None:
        a, b = self.fs["a"], self.fs["b"]
        assert not (a.active and b.active and a.epoch == b.epoch), (a, b)

    def beat(self, x: str) -> Beat:
        s = self.fs[x]
        handoff_to = s.handoff_to if s.state is State.HANDOFF else ""
        return Beat(
            s.role, s.state, s.epoch, s.in_sync, handoff_to, self.lsn[x], s.candidate, s.granted
        )

    def tick(self, link: bool, reach: dict[str, bool], drop: float, switchover: bool) -> None:
        self.now += DT
        probe_path = reach["a"] and reach["b"]
        for x in ("a", "b"):
            s = self.fs[x]
            if s.state is State.STARTING and self.now - s.since >= STARTUP:
                self.feed(x, StartupDone())
        beats = {x: self.beat(x) for x in ("a", "b")}
        fresh: set[str] = set()
        for x in ("a", "b"):
            y = self.other(x)
            if not link or self.rnd.random() < drop:
                continue
            hb = beats[x]
            self.heard[y] = (hb, self.now)
            fresh.add(y)
            if hb.role is Role.PRIMARY and hb.state in SERVING:
                self.feed(y, PeerActive(x, hb.epoch, hb.in_sync, hb.handoff_to, hb.lsn))
            elif hb.epoch > self.fs[y].epoch:
                self.feed(y, HigherEpoch(hb.epoch, x))
        for y, (hb, when) in list(self.heard.items()):
            # As the agent does: every peer's progress, serving or not, judged now.
            x = self.other(y)
            alive = self.now - when <= DEAD
            serving = hb.role is Role.PRIMARY and hb.state in SERVING and alive
            self.feed(y, PeerProgress(x, hb.epoch, hb.lsn, alive, serving))
            if y in fresh and hb.candidate:
                self.feed(y, PeerCandidate(x, hb.candidate, hb.epoch, hb.lsn))
            if y in fresh and hb.granted[0] == y:
                self.feed(y, PeerGrant(x, y, hb.granted[1]))
        for y in ("a", "b"):
            s = self.fs[y]
            if not s.primary or s.role is not Role.BACKUP:
                continue
            heard = self.heard.get(y)
            age = self.now - heard[1] if heard else float("inf")
            if age > DEAD:
                if y not in self.silent:
                    self.silent.add(y)
                    self.feed(y, PeerSilent(s.primary))
                # Step 420: the servers reach each other over the client network
                # when clients reach both; an answer there is a link failure,
                # none for the probe's dead time means the primary is gone.
                if y not in self.judged and self.fs[y].primary:
                    if probe_path:
                        self.judged.add(y)
                        self.feed(y, PrimaryReachable(self.fs[y].primary))
                    elif age > 2 * DEAD:
                        self.judged.add(y)
                        self.feed(y, PrimaryGone(self.fs[y].primary))
            else:
                self.silent.discard(y)
                self.judged.discard(y)
        if probe_path and not link:
            # A primary's probe of its silent backup: the answer carries its epoch.
            for x in ("a", "b"):
                y = self.other(x)
                if self.fs[x].role is Role.PRIMARY and self.fs[y].epoch > self.fs[x].epoch:
                    self.feed(x, HigherEpoch(self.fs[y].epoch, y))
        # Clients: served by a reachable active server, else they ask the others.
        reachable = [x for x in ("a", "b") if reach[x]]
        if self.rnd.random() < 0.7:
            served = [x for x in reachable if self.fs[x].active]
            if served:
                for x in served:
                    self.lsn[x] += 1
            else:
                for x in reachable:
                    self.feed(x, ClientVote())
        # Replication: a backup following the primary at its epoch over a live link.
        for p in ("a", "b"):
            s = self.fs[p]
            if s.role is not Role.PRIMARY:
                continue
            q = self.other(p)
            f = self.fs[q]
            caught_up = f.state in (State.SYNCING, State.NORMAL)
            following = f.primary == p and f.epoch == s.epoch and caught_up
            if following and link:
                self.lsn[q] = self.lsn[p]
            in_sync = (q,) if following and link else ()
            if in_sync != s.in_sync:
                self.feed(p, BackupsInSync(in_sync))
        if switchover:
            for x in ("a", "b"):
                if self.fs[x].role is Role.PRIMARY:
                    self.feed(x, Switchover())


PHASE = st.tuples(
    st.integers(1, 40),  # ticks
    st.booleans(),  # server link up
    st.booleans(),  # clients reach a
    st.booleans(),  # clients reach b
    st.sampled_from((0.0, 0.0, 0.3, 0.8)),  # heartbeat drop rate
    st.integers(0, 5),  # switchover requested when 0
)


@pytest.mark.timeout(300 * example_scale())  # CPU-bound: a loaded machine may take minutes
@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.lists(PHASE, max_size=12))
def test_two_nodes_never_both_active_at_one_epoch_and_heal(
    seed: int, phases: list[tuple[int, bool, bool, bool, float, int]]
) -> None:
    pair = Pair(random.Random(seed))
    for ticks, link, ra, rb, drop, sw in phases:
        for i in range(ticks):
            pair.tick(link, {"a": ra, "b": rb}, drop, switchover=(sw == 0 and i == 0))
    # Heal everything and let it settle.
    for _ in range(120):
        pair.tick(True, {"a": True, "b": True}, 0.0, switchover=False)
    actives = [x for x in ("a", "b") if pair.fs[x].active]
    assert len(actives) == 1, pair.fs
    p = actives[0]
    q = pair.other(p)
    assert (pair.fs[p].state, pair.fs[p].in_sync) == (State.NORMAL, (q,)), pair.fs
    assert (pair.fs[q].state, pair.fs[q].role, pair.fs[q].primary) == (
        State.NORMAL,
        Role.BACKUP,
        p,
    ), pair.fs
    assert pair.fs[q].epoch == pair.fs[p].epoch


def test_two_nodes_links_cut_while_clients_reach_both_never_fail_over() -> None:
    """The audit's case: b hears a over the client network, so it waits; a runs
    alone; nobody else ever serves; healed, b follows a again."""
    pair = Pair(random.Random(2))
    for _ in range(20):
        pair.tick(True, {"a": True, "b": True}, 0.0, switchover=False)
    assert pair.fs["a"].active
    for _ in range(40):
        pair.tick(False, {"a": True, "b": True}, 0.0, switchover=False)
        assert not pair.fs["b"].active
    assert pair.fs["b"].state is State.STANDBY
    for _ in range(40):
        pair.tick(True, {"a": True, "b": True}, 0.0, switchover=False)
    assert pair.takeovers == 0
    assert (pair.fs["a"].active, pair.fs["b"].state, pair.fs["b"].primary) == (
        True,
        State.NORMAL,
        "a",
    )


def test_two_nodes_primary_cut_from_everything_fails_over_once() -> None:
    pair = Pair(random.Random(1))
    for _ in range(20):
        pair.tick(True, {"a": True, "b": True}, 0.0, switchover=False)
    assert (pair.fs["a"].state, pair.fs["b"].state) == (State.NORMAL, State.NORMAL)
    assert pair.fs["a"].active
    # a is cut off from b and from its clients: b takes over at epoch 2.
    for _ in range(20):
        pair.tick(False, {"a": False, "b": True}, 0.0, switchover=False)
    assert pair.fs["b"].active
    assert (pair.fs["b"].state, pair.fs["b"].epoch, pair.takeovers) == (State.BACKUP_ONLY, 2, 1)
    # Heal: a steps down and follows b.
    for _ in range(20):
        pair.tick(True, {"a": True, "b": True}, 0.0, switchover=False)
    assert not pair.fs["a"].active
    assert (pair.fs["a"].state, pair.fs["a"].primary, pair.fs["a"].epoch) == (
        State.NORMAL,
        "b",
        2,
    )
    assert pair.takeovers == 1


def test_two_nodes_restart_of_the_primary_rejoins() -> None:
    pair = Pair(random.Random(3))
    for _ in range(20):
        pair.tick(True, {"a": True, "b": True}, 0.0, switchover=False)
    assert (pair.fs["a"].state, pair.fs["b"].state) == (State.NORMAL, State.NORMAL)
    pair.restart("a", lost=0)
    for _ in range(100):
        pair.tick(True, {"a": True, "b": True}, 0.0, switchover=False)
    assert [x for x in ("a", "b") if pair.fs[x].active] == ["a"]
    assert pair.fs["b"].state is State.NORMAL


@pytest.mark.parametrize("both", [True, False], ids=["both_restart", "primary_restarts"])
def test_two_nodes_restart_with_lost_records_serves_again(both: bool) -> None:
    pair = Pair(random.Random(4))
    for _ in range(20):
        pair.tick(True, {"a": True, "b": True}, 0.0, switchover=False)
    assert (pair.fs["a"].state, pair.fs["b"].state) == (State.NORMAL, State.NORMAL)
    # a (primary) restarts without its last 3 records, which b holds; with `both`
    # b restarts too (power loss), otherwise b keeps running.
    pair.restart("a", lost=3)
    if both:
        pair.restart("b", lost=0)
    for _ in range(200):
        pair.tick(True, {"a": True, "b": True}, 0.0, switchover=False)
    assert [x for x in ("a", "b") if pair.fs[x].active] == ["b"], pair.fs


def test_two_nodes_link_failure_alone_never_fails_over() -> None:
    """Step 420: the servers lose each other but clients still reach a."""
    pair = Pair(random.Random(2))
    for _ in range(20):
        pair.tick(True, {"a": True, "b": True}, 0.0, switchover=False)
    for _ in range(80):
        pair.tick(False, {"a": True, "b": True}, 0.0, switchover=False)
    assert pair.fs["a"].active
    assert pair.fs["a"].state is State.PRIMARY_ONLY
    # b heard a over the client network: it waits (a acknowledges alone what
    # b does not hold, so b may not take over later either).
    assert (pair.fs["b"].state, pair.fs["b"].role, pair.takeovers) == (
        State.STANDBY,
        Role.BACKUP,
        0,
    )


# ------------------------------------------------------- coverage, checked last
def test_zz_every_table_entry_exercised(request: pytest.FixtureRequest) -> None:
    mine = [i for i in request.session.items if i.path == request.path]
    table_tests = [i for i in mine if i.name.startswith("test_table_entry[")]
    if len(table_tests) < len(TRANSITIONS) or len(mine) < 100:
        pytest.skip("only part of this module was selected")
    assert set(TRANSITIONS) - STEPPED == set()
    assert set(TRANSITIONS) >= STEPPED
    assert set(TRANSITIONS) == STEPPED


def test_handoff_offer_is_taken_only_holding_what_the_primary_held() -> None:
    """An offer from a primary that has since acknowledged more (it called the
    handoff off and ran alone) must not make us take over without those records."""
    s = replace(normal_backup(), last_lsn=10)
    behind, actions = go(s, PeerActive(s.primary, s.epoch, (s.name,), s.name, 12), T0 + 5)
    assert (behind.state, behind.role, actions) == (State.NORMAL, Role.BACKUP, [])
    taken, actions = go(s, PeerActive(s.primary, s.epoch, (s.name,), s.name, 10), T0 + 5)
    assert (taken.state, taken.role) == (State.BACKUP_ONLY, Role.PRIMARY)
    assert Action.TAKE_OVER in actions


# ------------------------------------------------------------- elections
def everyone_idle(s: FailoverState, lsns: dict[str, int]) -> FailoverState:
    for peer, lsn in lsns.items():
        s = go_s(s, PeerProgress(peer, 1, lsn, True, serving=False), T0 + 3)
    return s


def test_the_most_up_to_date_asks_and_leads_only_once_every_peer_grants() -> None:
    a = replace(go_s(starting("a", ("b", "c")), StartupDone(), T0 + 2), last_lsn=50)
    a = everyone_idle(a, {"b": 40, "c": 45})
    assert (a.state, a.candidate) == (State.STANDBY, 2)  # it asks, it does not lead yet
    a = go_s(a, PeerGrant("b", "a", 2), T0 + 4)
    assert a.state is State.STANDBY and a.grants == ("b",)
    a = go_s(a, PeerGrant("c", "a", 1), T0 + 4)  # another election's grant: ignored
    assert a.state is State.STANDBY
    new, actions = go(a, PeerGrant("c", "a", 2), T0 + 4)
    assert (new.state, new.role, new.epoch, actions) == (
        State.PRIMARY_ONLY,
        Role.PRIMARY,
        2,
        [Action.BECOME_PRIMARY],
    )


def test_a_candidate_hearing_a_serving_primary_asks_no_more() -> None:
    a = everyone_idle(
        replace(go_s(starting("a", ("b",)), StartupDone(), T0 + 2), last_lsn=9), {"b": 5}
    )
    assert a.candidate == 2
    a = go_s(a, PeerActive("b", 2, last_lsn=20, last_epoch=2), T0 + 4)
    assert (a.state, a.candidate) == (State.SYNCING, 0)
    assert go_s(a, PeerGrant("b", "a", 2), T0 + 5).state is State.SYNCING


@pytest.mark.parametrize(
    ("who", "cand", "granted"),
    [
        ("standby", PeerCandidate("a", 2, 1, 99), True),  # holds more: yes
        ("standby", PeerCandidate("a", 2, 1, 0), False),  # holds less: no
        ("standby", PeerCandidate("a", 1, 1, 99), False),  # not above our epoch: no
        ("backup_only", PeerCandidate("a", 3, 1, 99), False),  # we serve: never
        ("normal_backup", PeerCandidate("c", 2, 1, 99), False),  # we follow a live primary
    ],
)
def test_grants(who: str, cand: PeerCandidate, granted: bool) -> None:
    s = replace(BUILDERS[who](), last_lsn=10)
    new = go_s(s, cand, T0 + 9)
    assert (new.granted == (cand.peer, cand.epoch)) is granted


def test_one_grant_per_epoch() -> None:
    s = replace(standby(), last_lsn=10)
    s = go_s(s, PeerCandidate("a", 2, 1, 99), T0 + 9)
    s = go_s(s, PeerCandidate("c", 2, 1, 999), T0 + 9)
    assert s.granted == ("a", 2)  # c asks for the same epoch: refused
    s = go_s(s, PeerCandidate("c", 3, 1, 999), T0 + 9)
    assert s.granted == ("c", 3)
    # Our own takeover or candidacy then goes above what we granted.
    assert s.candidate == 0


# ---------------------------------------------------------------- witness
def with_witness(s: FailoverState) -> FailoverState:
    return replace(s, witness=True)


def test_with_a_witness_a_takeover_waits_for_its_grant_of_that_epoch() -> None:
    s = with_witness(normal_backup())
    s = go_s(s, PeerSilent("a"), T0 + 10)
    waiting, actions = go(s, PrimaryGone("a"), T0 + 10.1)
    assert (waiting.state, waiting.role, waiting.asking, actions) == (
        State.NORMAL,
        Role.BACKUP,
        2,
        [],
    )
    # A grant of another epoch (a late answer to an old ask) changes nothing.
    assert go(waiting, WitnessElected(3), T0 + 10.2) == (waiting, [])
    new, actions = go(waiting, WitnessElected(2), T0 + 10.2)
    assert_took_over(waiting, new, actions)
    assert (new.asking, new.elected) == (0, 2)


def test_with_a_witness_a_grant_after_the_primary_came_back_is_not_used() -> None:
    s = with_witness(go_s(normal_backup(), PeerSilent("a"), T0 + 10))
    s = go_s(s, PrimaryGone("a"), T0 + 10.1)
    back = go_s(s, PeerActive("a", 1, in_sync=("b",)), T0 + 10.2)
    assert (back.state, back.asking, back.primary_gone) == (State.NORMAL, 0, False)
    assert go(back, WitnessElected(2), T0 + 10.3) == (back, [])


def test_with_a_witness_the_first_primary_waits_for_epoch_one() -> None:
    s = with_witness(starting("a", ("b",), preferred=True))
    s1, actions = go(s, StartupDone(), T0 + 2)
    assert (s1.state, s1.asking, actions) == (State.STARTING, 1, [])
    s2, actions = go(s1, WitnessElected(1), T0 + 2.1)
    assert (s2.state, s2.elected, actions) == (State.STARTING, 1, [])
    s3, actions = go(s2, StartupDone(), T0 + 2.2)  # the agent feeds it every tick
    assert (s3.state, s3.role, s3.epoch, actions) == (
        State.PRIMARY_ONLY,
        Role.PRIMARY,
        1,
        [Action.BECOME_PRIMARY],
    )


def test_with_a_witness_a_peer_election_leads_only_on_its_grant() -> None:
    a = with_witness(replace(go_s(starting("a", ("b",)), StartupDone(), T0 + 2), last_lsn=9))
    a = go_s(a, PeerProgress("b", 1, 3, True, serving=False), T0 + 3)
    assert a.candidate == 2
    a1, actions = go(a, PeerGrant("b", "a", 2), T0 + 3)
    assert (a1.state, a1.asking, actions) == (State.STANDBY, 2, [])
    a2, actions = go(a1, WitnessElected(2), T0 + 3.1)
    assert (a2.state, a2.epoch, actions) == (State.PRIMARY_ONLY, 2, [Action.BECOME_PRIMARY])


def test_a_waiting_server_told_of_a_higher_epoch_asks_again_above_it() -> None:
    """Found by the simulator with a witness: the witness's refusal told a
    restarted server of a newer epoch; it reset its candidacy and, with no
    peer report changing, never asked again: nobody served."""
    a = replace(go_s(starting("a", ("b",)), StartupDone(), T0 + 2), last_lsn=9)
    a = go_s(a, PeerProgress("b", 1, 3, True, serving=False), T0 + 3)
    assert a.candidate == 2
    new, _ = go(a, HigherEpoch(2, "b"), T0 + 4)
    assert (new.epoch, new.candidate) == (2, 3)


def test_a_normal_backup_that_stalled_syncs_until_listed_again() -> None:
    """Its primary may have judged it gone and acknowledged alone meanwhile:
    it keeps following, but may not take over until a fresh listing counts it
    in sync again. A primary, or a backup not in sync, changes nothing."""
    b = go_s(starting("b", ("a",)), PeerActive("a", 1, ("b",)), T0)
    assert (b.state, b.role) == (State.NORMAL, Role.BACKUP)
    stalled, actions = go(b, Unlisted(), T0 + 1)
    assert (stalled.state, stalled.primary, actions) == (State.SYNCING, "a", [])
    again, _ = go(stalled, PeerActive("a", 1, ("b",)), T0 + 1.1)
    assert again.state is State.NORMAL
    for other in (normal_primary(), syncing()):
        assert go(other, Unlisted(), T0 + 3) == (other, [])
