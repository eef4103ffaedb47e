"""Who may lead, and how: taking over from a primary that is gone, leading
at a new epoch with nobody to take over from (elections among the peers),
and the witness's grant that every new leadership needs when a witness is
configured. Part of the failover state machine (`machine.py` holds the
table and the other handlers); pure, like it.
"""

from __future__ import annotations

from dataclasses import replace

from zmqfail.failover.state import (
    Action,
    Event,
    FailoverState,
    PeerCandidate,
    PeerGrant,
    Result,
    Role,
    State,
    WitnessElected,
)


def _to(s: FailoverState, state: State, now: float, **kw: object) -> FailoverState:
    return replace(s, state=state, since=now if state is not s.state else s.since, **kw)  # type: ignore[arg-type]


def _most_up_to_date_of_all(s: FailoverState) -> bool:
    """Every peer is live, none serves, and we hold strictly the most (epoch,
    LSN, then name order): then no server anywhere holds a record we lack, so
    we may lead. This is what lets a cluster whose servers all restarted serve
    again when the one that led last came back with less than another."""
    live = {p: (epoch, lsn) for p, epoch, lsn, ok, serving in s.progress if ok and not serving}
    if set(s.peers) - set(live):
        return False
    me = (s.last_epoch, s.last_lsn, -_order(s, s.name))
    return all((e, lsn, -_order(s, p)) < me for p, (e, lsn) in live.items())


def _next_epoch(s: FailoverState) -> int:
    """Above ours and above any we granted someone else."""
    return max(s.epoch, s.granted[1]) + 1


def _stand(s: FailoverState, now: float) -> Result:
    """Ask every peer to let us lead at a new epoch (they answer in their
    heartbeats); with no peers there is nobody to ask."""
    if s.paused:
        # Failover held by the operator: no candidacy (one already made is
        # withdrawn: a peer's grant must not make us lead now).
        return replace(s, candidate=0, grants=()), []
    if not s.peers:
        return _lead_at_new_epoch(s, now)
    if s.candidate:
        return s, []
    return replace(s, candidate=_next_epoch(s), grants=()), []


def _witness_wait(s: FailoverState, epoch: int) -> FailoverState | None:
    """With a witness: the state that asks it for `epoch`, unless it granted it."""
    if not s.witness or s.elected == epoch:
        return None
    return s if s.asking == epoch else replace(s, asking=epoch)


def _lead_at_new_epoch(s: FailoverState, now: float) -> Result:
    """Lead without a current primary to take over from: a new epoch fences any
    former leader that might wake up."""
    epoch = s.candidate or _next_epoch(s)
    waiting = _witness_wait(s, epoch)
    if waiting is not None:
        return waiting, []
    new = _to(
        s,
        State.PRIMARY_ONLY,
        now,
        role=Role.PRIMARY,
        epoch=epoch,
        asking=0,
        promoting=0,
        primary="",
        was_active=True,
        may_lead=True,
        candidate=0,
        grants=(),
    )
    # Clients looking for a server find it by their hellos (it answers active).
    return new, [Action.BECOME_PRIMARY]


def _take_over(s: FailoverState, now: float) -> Result:
    epoch = _next_epoch(s)
    waiting = _witness_wait(s, epoch)
    if waiting is not None:
        return waiting, []
    new = _to(
        s,
        State.BACKUP_ONLY,
        now,
        role=Role.PRIMARY,
        epoch=epoch,
        asking=0,
        promoting=0,
        candidate=0,
        grants=(),
        primary="",
        primary_silent=False,
        primary_gone=False,
        vote_at=None,
        was_active=True,
        may_lead=True,
        in_sync=(),
    )
    return new, [Action.TAKE_OVER, Action.RECOVERY_SIGNAL]


def _best_candidate(s: FailoverState) -> bool:
    """Among live servers that do not serve (ourselves included), are we the
    most up to date? Our own primary counts too when it restarted (alive, no
    longer serving): holding more, it leads on its own start-up rule, and a
    takeover by us at the same moment would make two leaders of one epoch
    (found by the simulator)."""
    me = (s.last_epoch, s.last_lsn, -_order(s, s.name))
    for peer, epoch, lsn, live, serving in s.progress:
        if live and not serving and (epoch, lsn, -_order(s, peer)) > me:
            return False
    return True


def _order(s: FailoverState, name: str) -> int:
    """A server's place when servers hold as much: the configured primary
    first, then by name. A fresh pair started at once elects the configured
    primary, not the other by its name (crossed shards would have both
    primaries on one machine)."""
    names = sorted((s.name, *s.peers), key=lambda n: (n != s.first, n))
    return names.index(name)


def _maybe_take_over(s: FailoverState, now: float) -> Result:
    if s.state is State.NORMAL and s.primary_gone and _best_candidate(s) and not s.paused:
        return _take_over(s, now)
    return s, []


def _primary_restarted(s: FailoverState) -> bool:
    """Our primary is alive but reports as a backup (it restarted) and holds
    less than we do: we lead, or the records only we hold would be lost."""
    return bool(s.primary) and _most_up_to_date_of_all(s)


def _reconsider(s: FailoverState, now: float) -> Result:
    """What the automatic rules make of what is known now (after a Resume:
    a backup whose primary went while failover was paused takes over now)."""
    if s.role is not Role.BACKUP or s.paused:
        return s, []
    if s.state is State.NORMAL:
        if _primary_restarted(s):
            return _take_over(s, now)
        return _maybe_take_over(s, now)
    if s.state in _WAITING and _most_up_to_date_of_all(s):
        return _stand(s, now)
    return s, []


def _elected(s: FailoverState, e: Event, now: float) -> Result:
    """The witness granted the epoch we asked for: do what waited for it, if
    it is still due (StartupDone and heartbeats come again by themselves)."""
    assert isinstance(e, WitnessElected)
    if not s.asking or e.epoch != s.asking:
        return s, []  # an answer to an ask we have given up
    promoted = s.promoting == e.epoch
    s = replace(s, elected=e.epoch, asking=0, promoting=0)
    if promoted and s.role is Role.BACKUP:
        return _take_over(s, now)  # the operator's promote, granted
    if s.paused:
        return s, []
    if s.state is State.NORMAL and s.role is Role.BACKUP:
        if (s.primary_gone and _best_candidate(s)) or _primary_restarted(s):
            return _take_over(s, now)
    elif (
        s.state in _WAITING
        and s.candidate == e.epoch
        and set(s.peers) <= set(s.grants)
        and _most_up_to_date_of_all(s)
    ):
        return _lead_at_new_epoch(s, now)
    return s, []


def _candidate(s: FailoverState, e: Event, now: float) -> Result:
    """Grant a peer the lead at a new epoch only if we do not serve, follow no
    live primary, it holds more than we do, and we granted nobody else as
    much: then whichever of us asks with an old picture of the other, the one
    holding the most is the only one to lead."""
    assert isinstance(e, PeerCandidate)
    if s.role is Role.PRIMARY or e.epoch <= s.epoch:
        return s, []
    if s.granted[1] >= e.epoch and s.granted != (e.peer, e.epoch):
        return s, []
    following = s.state in (State.SYNCING, State.NORMAL) and not s.primary_silent
    if following and s.primary and s.primary != e.peer:
        return s, []  # we follow a live primary: there is one
    theirs = (e.last_epoch, e.last_lsn, -_order(s, e.peer))
    if theirs <= (s.last_epoch, s.last_lsn, -_order(s, s.name)):
        return s, []
    return replace(s, granted=(e.peer, e.epoch), candidate=0, grants=()), []


def _grant(s: FailoverState, e: Event, now: float) -> Result:
    assert isinstance(e, PeerGrant)
    if not s.candidate or e.to != s.name or e.epoch != s.candidate:
        return s, []
    grants = tuple(sorted({*s.grants, e.peer}))
    new = replace(s, grants=grants)
    if set(s.peers) <= set(grants) and _most_up_to_date_of_all(new):
        return _lead_at_new_epoch(new, now)
    return new, []


# Waiting for a primary to follow. Either leads at a new epoch once it hears
# every peer, none serving, and holds strictly the most: a deposed primary
# (FENCED) whose successor is gone again would otherwise wait for ever, while
# the successor, restarted with less, waits for it (found by the simulator).
_WAITING = (State.STANDBY, State.FENCED)
