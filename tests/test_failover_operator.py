"""Operator control of failover in the state machine, with a fake clock
(issue 9 item 5): `switchover --to`, `promote` (refused while the peer is
heard or from a state that may lack acknowledged records, unless forced;
waiting for the witness's grant when there is one), and `pause`/`resume`
(nothing leads at a new epoch on its own while paused; resume judges at
once). Every refusal leaves the state exactly as it was."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from test_failover_machine import (
    T0,
    assert_took_over,
    fenced,
    go,
    go_s,
    normal_backup,
    normal_primary,
    primary_only,
    standby,
    starting,
    syncing,
    with_witness,
)

from zmqfail.failover.machine import step
from zmqfail.failover.state import (
    Action,
    BackupsInSync,
    ClientVote,
    FailoverState,
    HigherEpoch,
    IllegalTransition,
    Pause,
    PeerActive,
    PeerGrant,
    PeerProgress,
    PeerSilent,
    PrimaryGone,
    Promote,
    Resume,
    Role,
    StartupDone,
    State,
    Switchover,
    WitnessElected,
)

pytestmark = pytest.mark.timeout(60)


def refused(s: FailoverState, e: object, match: str) -> None:
    before = replace(s)
    with pytest.raises(IllegalTransition, match=match):
        step(s, e, T0 + 20)  # type: ignore[arg-type]
    assert s == before


def paused(s: FailoverState) -> FailoverState:
    new, actions = go(s, Pause(), T0 + 5)
    assert new.paused and actions == [] and new.state is s.state
    return new


# ------------------------------------------------------- switchover --to
def test_switchover_to_a_named_in_sync_backup() -> None:
    s = normal_primary(in_sync=("b", "c"))
    new, actions = go(s, Switchover("c"), T0 + 4)
    assert (new.state, new.handoff_to, actions) == (State.HANDOFF, "c", [Action.HANDOFF])
    # Without a target: the first in name order, as before.
    assert go_s(s, Switchover(), T0 + 4).handoff_to == "b"


@pytest.mark.parametrize(
    ("to", "why"),
    [("c", "c is not an in-sync backup"), ("a", "a is the primary"), ("zz", "zz is not")],
)
def test_switchover_to_anything_but_an_in_sync_backup_is_refused(to: str, why: str) -> None:
    refused(normal_primary(in_sync=("b",)), Switchover(to), why)


def test_switchover_of_a_backup_is_refused() -> None:
    refused(normal_backup(), Switchover("b"), "not the primary")


# --------------------------------------------------------------- promote
def test_promote_an_in_sync_backup_that_no_longer_hears_its_primary() -> None:
    s = normal_backup()
    new, actions = go(s, Promote(), T0 + 3)
    assert_took_over(s, new, actions)
    assert new.promoting == 0


def test_promote_is_refused_while_the_primary_is_heard_unless_forced() -> None:
    s = normal_backup()
    refused(s, Promote(heard=("a",)), "b hears a .heartbeats alive.*--force")
    new, actions = go(s, Promote(force=True, heard=("a",)), T0 + 3)
    assert_took_over(s, new, actions)  # the old primary hears epoch 2 and steps down


def test_promote_ignores_names_that_are_no_peers() -> None:
    s = normal_backup()
    assert go_s(s, Promote(heard=("mallory",)), T0 + 3).state is State.BACKUP_ONLY


@pytest.mark.parametrize("build", [standby, syncing, fenced], ids=lambda b: b.__name__)
def test_promote_from_a_state_that_may_lack_records_needs_force(
    build: Callable[[], FailoverState],
) -> None:
    s = build()
    refused(s, Promote(), f"{s.name} is {s.state.value}, not an in-sync backup.*only --force")
    refused(s, Promote(heard=s.peers), "hears")
    new, actions = go(s, Promote(force=True), T0 + 30)
    assert actions == [Action.TAKE_OVER, Action.RECOVERY_SIGNAL]
    assert (new.state, new.role, new.epoch) == (State.BACKUP_ONLY, Role.PRIMARY, s.epoch + 1)
    assert new.active and new.may_lead and new.was_active


def test_promote_above_an_epoch_granted_to_a_peer() -> None:
    s = replace(standby(), granted=("c", 5))
    assert go_s(s, Promote(force=True), T0 + 3).epoch == 6


@pytest.mark.parametrize(
    "build", [normal_primary, primary_only, starting], ids=lambda b: b.__name__
)
def test_promote_of_a_server_that_serves_or_starts_is_refused(
    build: Callable[[], FailoverState],
) -> None:
    refused(build(), Promote(force=True), "already serves|Promote is not allowed in state")


def test_with_a_witness_promote_waits_for_its_grant() -> None:
    s = with_witness(normal_backup())
    asking, actions = go(s, Promote(), T0 + 3)
    assert (asking.state, asking.role, asking.asking, asking.promoting, actions) == (
        State.NORMAL,
        Role.BACKUP,
        2,
        2,
        [],
    )
    assert go(asking, Promote(), T0 + 3.1) == (asking, [])  # asked already
    new, actions = go(asking, WitnessElected(2), T0 + 3.5)
    assert_took_over(asking, new, actions)
    assert (new.asking, new.promoting, new.elected) == (0, 0, 2)


def test_with_a_witness_a_promote_is_called_off_by_a_serving_primary() -> None:
    s = with_witness(normal_backup())
    asking = go_s(s, Promote(force=True, heard=("a",)), T0 + 3)
    assert asking.promoting == 2
    back = go_s(asking, PeerActive("a", 1, in_sync=("b",)), T0 + 3.1)
    assert (back.asking, back.promoting) == (0, 0)
    assert go(back, WitnessElected(2), T0 + 3.2) == (back, [])  # a late grant is not used


def test_with_a_witness_a_forced_promote_of_a_standby_server_leads_on_the_grant() -> None:
    s = with_witness(standby())
    asking = go_s(s, Promote(force=True), T0 + 3)
    assert (asking.state, asking.asking, asking.promoting) == (State.STANDBY, 2, 2)
    new, actions = go(asking, WitnessElected(2), T0 + 3.5)
    assert (new.state, new.role, new.epoch) == (State.BACKUP_ONLY, Role.PRIMARY, 2)
    assert actions == [Action.TAKE_OVER, Action.RECOVERY_SIGNAL]


# ----------------------------------------------------------------- pause
def test_paused_backup_records_its_primary_gone_and_takes_over_on_resume() -> None:
    s = paused(normal_backup())
    s = go_s(s, PeerSilent("a"), T0 + 10)
    held, actions = go(s, PrimaryGone("a"), T0 + 10.5)
    assert (held.state, held.role, held.primary_gone, actions) == (
        State.NORMAL,
        Role.BACKUP,
        True,
        [Action.FLUSH],
    )
    # Votes and progress reports change nothing either.
    held = go_s(held, ClientVote(), T0 + 11)
    held = go_s(held, PeerProgress("c", 1, 0, True), T0 + 11)
    assert (held.state, held.role) == (State.NORMAL, Role.BACKUP)
    new, actions = go(held, Resume(), T0 + 60)
    assert_took_over(held, new, actions)
    assert not new.paused


def test_paused_backup_does_not_take_over_from_a_primary_that_restarted_with_less() -> None:
    s = paused(replace(normal_backup(peers=("a",)), last_lsn=50))
    held, actions = go(s, PeerProgress("a", 1, 10, True, serving=False), T0 + 10)
    assert (held.state, held.role, actions) == (State.NORMAL, Role.BACKUP, [])
    new, actions = go(held, Resume(), T0 + 11)
    assert_took_over(held, new, actions)


def test_resume_with_the_primary_back_changes_nothing() -> None:
    s = paused(normal_backup())
    s = go_s(s, PeerSilent("a"), T0 + 10)
    s = go_s(s, PrimaryGone("a"), T0 + 10.5)
    s = go_s(s, PeerActive("a", 1, in_sync=("b",)), T0 + 11)  # it was only slow
    new, actions = go(s, Resume(), T0 + 12)
    assert (new.state, new.role, new.paused, actions) == (State.NORMAL, Role.BACKUP, False, [])
    assert go(new, Resume(), T0 + 13) == (new, [])  # not paused: nothing to do


def test_a_paused_restart_that_would_lead_alone_waits_in_starting() -> None:
    s = paused(starting("b", ("a",), epoch=4, may_lead=True, lead_alone=True))
    held, actions = go(s, StartupDone(), T0 + 2)
    assert (held.state, held.role, held.epoch, actions) == (State.STARTING, Role.BACKUP, 4, [])
    resumed = go_s(held, Resume(), T0 + 3)
    assert resumed.state is State.STARTING  # it chooses on the next StartupDone
    new, actions = go(resumed, StartupDone(), T0 + 3.01)
    assert (new.state, new.role, new.epoch, actions) == (
        State.PRIMARY_ONLY,
        Role.PRIMARY,
        5,
        [Action.BECOME_PRIMARY],
    )


def test_a_paused_restart_holding_the_most_does_not_stand_for_election() -> None:
    s = paused(replace(starting("a", ("b",)), last_lsn=9))
    s = go_s(s, PeerProgress("b", 1, 3, True, serving=False), T0 + 1)
    held = go_s(s, StartupDone(), T0 + 2)
    assert (held.state, held.candidate) == (State.STARTING, 0)
    new = go_s(go_s(held, Resume(), T0 + 3), StartupDone(), T0 + 3.01)
    assert (new.state, new.candidate) == (State.STANDBY, 2)


def test_pause_withdraws_a_candidacy_and_a_late_grant_does_not_lead() -> None:
    a = replace(go_s(starting("a", ("b",)), StartupDone(), T0 + 2), last_lsn=9)
    a = go_s(a, PeerProgress("b", 1, 3, True, serving=False), T0 + 3)
    assert a.candidate == 2
    held = paused(a)
    assert held.candidate == 0
    held, actions = go(held, PeerGrant("b", "a", 2), T0 + 6)
    assert (held.state, held.role, actions) == (State.STANDBY, Role.BACKUP, [])
    # New reports, votes and epochs make no candidacy while paused ...
    held = go_s(held, PeerProgress("b", 1, 4, True, serving=False), T0 + 7)
    held = go_s(held, ClientVote(), T0 + 7)
    held = go_s(held, HigherEpoch(3, "b"), T0 + 8)
    assert held.candidate == 0
    # ... and resuming asks again, above the epoch it learned.
    assert go_s(held, Resume(), T0 + 9).candidate == 4


def test_paused_fenced_server_stands_only_after_resume() -> None:
    s = replace(paused(fenced()), last_lsn=9)
    s = go_s(s, PeerProgress("b", 1, 3, True, serving=False), T0 + 6)
    s = go_s(s, PeerProgress("c", 1, 3, True, serving=False), T0 + 6)
    assert s.candidate == 0
    assert go_s(s, Resume(), T0 + 7).candidate == 3


def test_pause_gives_up_an_automatic_witness_ask_but_not_a_promote() -> None:
    s = with_witness(go_s(normal_backup(), PeerSilent("a"), T0 + 10))
    asking = go_s(s, PrimaryGone("a"), T0 + 10.5)
    assert asking.asking == 2
    held = paused(asking)
    assert held.asking == 0
    assert go(held, WitnessElected(2), T0 + 11) == (held, [])  # the answer to it is not used
    promoting = go_s(held, Promote(), T0 + 12)  # an operator's promote works while paused
    assert (promoting.asking, promoting.promoting) == (2, 2)
    still = paused(promoting)
    assert still.asking == 2
    assert go_s(still, WitnessElected(2), T0 + 13).state is State.BACKUP_ONLY


def test_paused_primary_still_runs_alone_when_its_backup_is_lost() -> None:
    s = paused(normal_primary())
    new, actions = go(s, BackupsInSync(()), T0 + 10)
    assert (new.state, new.role, actions) == (State.PRIMARY_ONLY, Role.PRIMARY, [Action.FLUSH])


def test_paused_backup_still_takes_a_switchover_offer() -> None:
    s = paused(normal_backup())
    offer = PeerActive("a", 1, in_sync=("b",), handoff_to="b")
    new, actions = go(s, offer, T0 + 10)
    assert_took_over(s, new, actions)
    assert new.paused  # the pause stays until resumed


def test_a_fresh_clusters_first_primary_starts_while_paused() -> None:
    """Epoch 1 of a fresh cluster is no new epoch: nothing was ever acknowledged."""
    s = paused(starting("a", ("b",), preferred=True))
    new, actions = go(s, StartupDone(), T0 + 2)
    assert (new.state, new.epoch, actions) == (State.PRIMARY_ONLY, 1, [Action.BECOME_PRIMARY])


def test_pause_twice_is_one_pause() -> None:
    s = paused(normal_backup())
    assert go(s, Pause(), T0 + 6) == (s, [])
