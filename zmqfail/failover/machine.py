"""The failover state machine: ``step(state, event, now) -> (state, actions)``.

Every server runs one. The node shell feeds it what it observed (heartbeats,
silence on every path, client votes, replication progress, epochs seen) and
carries out the actions it returns. Nothing here reads a clock or touches a
socket, so every transition and refusal is tested with a fake clock.

States (methods of the reference):

- STARTING: recovered from disk, listening for an active peer before choosing.
- STANDBY: a backup with no primary to follow yet (or whose primary vanished
  before it caught up); it may not take over: it may lack acknowledged data.
- SYNCING: a backup catching up from the primary (records or a snapshot).
- NORMAL: the pair is whole; role PRIMARY processes requests and waits for
  the backups' acks (method 200), role BACKUP mirrors (250a).
- PRIMARY_ONLY: the primary runs alone, flushing before every ack (method 300).
- BACKUP_ONLY: a backup that took over from a failed primary (method 400,
  425a), alone, flushing before every ack.
- FENCED: a server that learned a higher epoch exists: it stepped down and
  acknowledges nothing; it rejoins as a backup when it hears the new primary.
- HANDOFF: a primary handing its role to an in-sync backup on purpose
  (switchover): it takes no new requests until the backup takes over.
- STOPPED: final.

Safety rules:

- Acting alone needs proof (step 420 of the reference): a backup takes over
  only when the primary has been silent on every replication path (main
  link, failsafe link, replication) for the dead time AND has not answered
  the backup's probes over the client network for the dead time: then it is
  gone, whether or not a client is connected. A primary that answers there
  is alive and cut off from its backup ("link failure"): it runs alone, so
  the backup no longer holds everything acknowledged and waits (STANDBY)
  until it can follow again. A client's vote is never enough to depose a
  primary: a client that briefly hears nothing proves nothing.
- Only an in-sync backup (NORMAL) may take over: one still syncing may lack
  acknowledged records. A backup is in sync only once it holds every record
  the primary acknowledged (the primary names it in its heartbeat, and the
  backup checks the primary's committed LSN itself). With several backups
  only the most up-to-date live one does (highest epoch of its last record,
  then last LSN, then the fixed order of names).
- A server that is not in sync (STANDBY) leads only when every peer is live,
  none serves, and it holds strictly the most: progress is judged from fresh
  heartbeats of every peer, whatever its role, never from an old report.
- A restarted server leads on its own only if it last ran alone (every
  acknowledgement it gave waited for its own disk); one that last ran paired
  may have lost acknowledged records its peer still holds, so it waits to
  hear its peers. Every new leadership takes a new epoch.
- Every takeover raises the epoch; hearing a higher epoch makes an active
  server step down at once, dropping every reply it still held.
- With a witness configured, every new leadership (a takeover, a start-up
  lead, an election among peers) also needs the witness's grant of that very
  epoch (`WitnessElected`): the machine asks (`asking`) and waits in the
  state it is in. The witness grants an epoch to one server only, never
  while another holds its lease, never to one that missed the latest epoch
  (zmqfail/witness/logic.py); the lease that lets a leader run alone is kept
  outside the machine (core/witness.py).
- Operators: a switchover goes only to an in-sync backup; a promote is
  refused while a peer is heard or from a state that may lack acknowledged
  records unless forced, and still needs the witness's grant; while paused
  nothing leads at a new epoch on its own (a primary may still run alone),
  and resuming judges at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from zmqfail.failover.lead import (
    _WAITING,
    _candidate,
    _elected,
    _grant,
    _lead_at_new_epoch,
    _maybe_take_over,
    _most_up_to_date_of_all,
    _order,
    _primary_restarted,
    _stand,
    _take_over,
    _to,
    _witness_wait,
)
from zmqfail.failover.manual import _pause, _promote, _resume, _switchover
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
    Result,
    Resume,
    Role,
    StartupDone,
    State,
    Stop,
    Switchover,
    Unlisted,
    WitnessElected,
)

Handler = Callable[[FailoverState, Event, float], Result]


# -------------------------------------------------------------- handlers
def _startup_done(s: FailoverState, e: Event, now: float) -> Result:
    ahead = any(
        live and (epoch, lsn) > (s.last_epoch, s.last_lsn)
        for _p, epoch, lsn, live, _serving in s.progress
    )
    if ahead:
        # A live peer holds more than we do (we restarted without records only it
        # has, e.g. acknowledged but not yet flushed here): leading would lose
        # them. Wait; it leads (or is voted in), and we follow it.
        return _to(s, State.STANDBY, now), []
    if s.preferred:
        # A fresh cluster's first primary: nothing was ever acknowledged.
        waiting = _witness_wait(s, s.epoch)
        if waiting is not None:
            return waiting, []  # StartupDone comes again on every tick
        new = _to(
            s,
            State.PRIMARY_ONLY,
            now,
            role=Role.PRIMARY,
            was_active=True,
            may_lead=True,
            asking=0,
        )
        return new, [Action.BECOME_PRIMARY]
    would_lead = (s.may_lead and s.lead_alone) or _most_up_to_date_of_all(s)
    if would_lead and s.paused:
        # Failover held by the operator: it stays STARTING and chooses again
        # (StartupDone comes on every tick) once resumed.
        return s, []
    if s.may_lead and s.lead_alone:
        # It ran alone last, so every acknowledgement it gave is in its log.
        return _lead_at_new_epoch(s, now)
    if _most_up_to_date_of_all(s):
        # It holds more than every (live, idle) peer: it asks them to let it lead.
        return _stand(_to(s, State.STANDBY, now), now)
    # A paired primary that restarted waits: its backup may hold acknowledged
    # records it lost.
    return _to(s, State.STANDBY, now), []


def _active_peer_seen(s: FailoverState, e: Event, now: float) -> Result:
    """We serve and hear another server serving: the lower epoch steps down. At
    equal epochs (two servers that each led without hearing the other) the one
    whose log is behind does, then the later name: what the more advanced one
    acknowledged is kept."""
    assert isinstance(e, PeerActive)
    theirs = (e.last_epoch, e.last_lsn, -_order(s, e.peer))
    ours = (s.last_epoch, s.last_lsn, -_order(s, s.name))
    if e.epoch > s.epoch or (e.epoch == s.epoch and theirs > ours):
        handoff = s.state is State.HANDOFF
        new = _to(
            s,
            State.FENCED,
            now,
            role=Role.BACKUP,
            epoch=max(s.epoch, e.epoch),
            primary="",
            was_active=not handoff,
            may_lead=False,
            in_sync=(),
            handoff_to="",
        )
        return new, [Action.STEP_DOWN]
    return s, []


def _follow(s: FailoverState, e: Event, now: float) -> Result:
    """Hearing an active primary: become (or stay) its backup."""
    assert isinstance(e, PeerActive)
    if s.role is Role.PRIMARY:
        return _active_peer_seen(s, e, now)
    if e.epoch < s.epoch:
        return s, []  # a stale primary: ignore it (it will learn of our epoch)
    actions: list[Action] = []
    # A primary serves: nobody else leads (an operator's promote is called off too).
    s = replace(s, candidate=0, grants=(), asking=0, promoting=0)
    if s.state in (State.STARTING, State.STANDBY, State.FENCED) or e.peer != s.primary:
        actions.append(Action.FOLLOW)
    # In sync: the primary counts us, and we hold everything it acknowledged
    # (a backup named while still catching up must not take over).
    in_sync = s.name in e.in_sync and s.last_lsn >= e.committed_lsn
    state = State.NORMAL if in_sync else State.SYNCING
    new = _to(
        s,
        state,
        now,
        role=Role.BACKUP,
        epoch=e.epoch,
        primary=e.peer,
        primary_silent=False,
        primary_gone=False,
        was_active=False,
        may_lead=False,
    )
    if e.handoff_to == s.name and in_sync and s.state is State.NORMAL and s.last_lsn >= e.last_lsn:
        # Only holding everything the primary had when it made the offer: an
        # offer that a primary has since called off (and acknowledged more
        # alone) must not make us take over without those records.
        return _take_over(new, now)
    return new, actions


def _backup_silent(s: FailoverState, e: Event, now: float) -> Result:
    assert isinstance(e, PeerSilent)
    if e.peer != s.primary:
        return s, []
    if s.state is State.SYNCING:
        # Not caught up: we may lack acknowledged records and must not serve.
        return _to(s, State.STANDBY, now, primary_silent=True), [Action.FLUSH]
    # Silent on every replication path: flush, and ask over the client
    # network whether it is gone or only cut off (step 420).
    return replace(s, primary_silent=True), [Action.FLUSH]


def _primary_gone(s: FailoverState, e: Event, now: float) -> Result:
    assert isinstance(e, PrimaryGone)
    if e.peer != s.primary:
        return s, []
    new = replace(s, primary_silent=True, primary_gone=True)
    taken = _maybe_take_over(new, now)
    return taken if taken[0] is not new else (new, [Action.FLUSH])


def _link_failure(s: FailoverState, e: Event, now: float) -> Result:
    """The primary lives but cannot reach us: it runs alone and acknowledges
    records we will not have, so we must not take over any more. Wait for it
    (we follow it again once its heartbeats come back)."""
    assert isinstance(e, PrimaryReachable)
    if e.peer != s.primary:
        return s, []
    new = _to(
        s,
        State.STANDBY,
        now,
        primary="",
        primary_silent=False,
        primary_gone=False,
        asking=0,
        promoting=0,
    )
    return new, [Action.FLUSH]


def _progress(s: FailoverState, e: Event, now: float) -> Result:
    assert isinstance(e, PeerProgress)
    rest = tuple(p for p in s.progress if p[0] != e.peer)
    new = replace(s, progress=(*rest, (e.peer, e.epoch, e.last_lsn, e.live, e.serving)))
    if s.role is not Role.BACKUP:
        return new, []
    if s.state in _WAITING:
        if _most_up_to_date_of_all(new):
            return _stand(new, now)
        return replace(new, candidate=0, grants=()), []  # no longer: ask no more
    if s.state is State.NORMAL and e.peer == s.primary and _primary_restarted(new) and not s.paused:
        # Our primary is alive but reports as a backup (it restarted) and holds
        # less than we do: we lead, or the records only we hold would be lost.
        return _take_over(new, now)
    return _maybe_take_over(new, now)


def _in_sync(s: FailoverState, e: Event, now: float) -> Result:
    assert isinstance(e, BackupsInSync)
    if s.role is not Role.PRIMARY:
        return s, []  # only a primary waits for backups
    if e.names:
        return _to(s, State.NORMAL, now, in_sync=e.names), []
    alone = State.PRIMARY_ONLY if s.state is not State.BACKUP_ONLY else State.BACKUP_ONLY
    return _to(s, alone, now, in_sync=()), [Action.FLUSH]


def _handoff_in_sync(s: FailoverState, e: Event, now: float) -> Result:
    """During a switchover: losing the target aborts it, so the cluster is not
    left with nobody serving."""
    assert isinstance(e, BackupsInSync)
    if s.handoff_to in e.names:
        return replace(s, in_sync=e.names), []
    return _abort_handoff(replace(s, in_sync=e.names), now)


def _abort_handoff(s: FailoverState, now: float) -> Result:
    if s.in_sync:
        return _to(s, State.NORMAL, now, handoff_to=""), []
    return _to(s, State.PRIMARY_ONLY, now, handoff_to=""), [Action.FLUSH]


def _handoff_timeout(s: FailoverState, e: Event, now: float) -> Result:
    return _abort_handoff(s, now)


def _fence(s: FailoverState, e: Event, now: float) -> Result:
    assert isinstance(e, HigherEpoch)
    if e.epoch <= s.epoch:
        return s, []
    # Ask again, later, above that epoch (a promote too: the operator asks again).
    s = replace(s, candidate=0, grants=(), asking=0, promoting=0)
    if s.role is Role.PRIMARY:
        new = _to(
            s,
            State.FENCED,
            now,
            role=Role.BACKUP,
            epoch=e.epoch,
            primary="",
            # A handoff waited until the backup held everything: no divergence.
            was_active=s.state is not State.HANDOFF,
            may_lead=False,
            in_sync=(),
            handoff_to="",
        )
        return new, [Action.STEP_DOWN]
    if s.state in (State.SYNCING, State.NORMAL):
        # Someone took over from the primary we follow: stop following it (and
        # stop weighing a takeover of our own) until the new primary is heard.
        return (
            _to(
                s,
                State.STANDBY,
                now,
                epoch=e.epoch,
                primary="",
                primary_silent=False,
                primary_gone=False,
                may_lead=False,
            ),
            [],
        )
    # Someone led after us: we may no longer start as the leader on our own,
    # neither as a server that ran alone nor as a fresh cluster's first primary.
    new = replace(s, epoch=e.epoch, may_lead=False, preferred=False)
    if s.state in _WAITING and _most_up_to_date_of_all(new):
        # Still the one holding the most: ask again, above that epoch (nothing
        # else may come to ask us: the peers' reports have not changed).
        return _stand(new, now)
    return new, []


def _stop(s: FailoverState, e: Event, now: float) -> Result:
    return _to(s, State.STOPPED, now), [Action.STOP]


def _unlisted(s: FailoverState, e: Event, now: float) -> Result:
    """Our incarnation changed (a stall, a snapshot installed, our log cut):
    as a backup we may have been judged gone and dropped, and our primary may
    have acknowledged alone since. We may take over only once it lists our new
    incarnation in sync (we keep following it)."""
    if s.role is Role.BACKUP and s.state is State.NORMAL:
        return _to(s, State.SYNCING, now), []
    return s, []


def _ignore(s: FailoverState, e: Event, now: float) -> Result:
    return s, []


def _record_vote(s: FailoverState, e: Event, now: float) -> Result:
    new = replace(s, vote_at=now)
    if s.state in _WAITING and _most_up_to_date_of_all(s):
        return _stand(new, now)
    return new, []


# ------------------------------------------------------------------ table
# (state, event type) -> (handler, states it may lead to). Anything not listed
# is illegal. docs/architecture.md draws its diagram from this table.
ALL_LIVE = tuple(s for s in State if s is not State.STOPPED)
_B = (State.SYNCING, State.NORMAL)
_MAYBE_PRIMARY = (State.NORMAL, State.PRIMARY_ONLY, State.BACKUP_ONLY, State.HANDOFF)
_BACKUP_ONLY_STATES = (State.STARTING, State.STANDBY, State.SYNCING, State.FENCED)
TRANSITIONS: dict[tuple[State, type], tuple[Handler, tuple[State, ...]]] = {
    (State.STARTING, StartupDone): (_startup_done, (State.PRIMARY_ONLY, State.STANDBY)),
    (State.STARTING, PeerActive): (_follow, _B),
    (State.STANDBY, PeerActive): (_follow, _B),
    (State.SYNCING, PeerActive): (_follow, _B),
    (State.NORMAL, PeerActive): (_follow, (*_B, State.BACKUP_ONLY, State.FENCED)),
    (State.FENCED, PeerActive): (_follow, _B),
    (State.SYNCING, PeerSilent): (_backup_silent, (State.STANDBY,)),
    (State.NORMAL, PeerSilent): (_backup_silent, (State.NORMAL,)),
    (State.NORMAL, PrimaryGone): (_primary_gone, (State.NORMAL, State.BACKUP_ONLY)),
    (State.NORMAL, PrimaryReachable): (_link_failure, (State.NORMAL, State.STANDBY)),
    (State.NORMAL, ClientVote): (_record_vote, (State.NORMAL,)),
    **{
        (st, WitnessElected): (
            _elected,
            (st, State.BACKUP_ONLY)
            if st in (State.NORMAL, State.SYNCING)
            else (st, State.PRIMARY_ONLY, State.BACKUP_ONLY)
            if st in _WAITING
            else (st,),
        )
        for st in ALL_LIVE
    },
    # Operators: a forced takeover, holding and resuming automatic failover.
    **{
        (st, Promote): (_promote, (st, State.BACKUP_ONLY))
        for st in (State.NORMAL, State.STANDBY, State.SYNCING, State.FENCED)
    },
    **{(st, Pause): (_pause, (st,)) for st in ALL_LIVE},
    **{
        (st, Resume): (
            _resume,
            (st, State.BACKUP_ONLY)
            if st is State.NORMAL
            else (st, State.PRIMARY_ONLY)
            if st in _WAITING
            else (st,),
        )
        for st in ALL_LIVE
    },
    (State.NORMAL, PeerProgress): (_progress, (State.NORMAL, State.BACKUP_ONLY)),
    (State.PRIMARY_ONLY, BackupsInSync): (_in_sync, (State.NORMAL, State.PRIMARY_ONLY)),
    (State.BACKUP_ONLY, BackupsInSync): (_in_sync, (State.NORMAL, State.BACKUP_ONLY)),
    (State.NORMAL, BackupsInSync): (_in_sync, (State.NORMAL, State.PRIMARY_ONLY)),
    (State.NORMAL, Switchover): (_switchover, (State.HANDOFF,)),
    **{
        (st, HigherEpoch): (_fence, (st, State.STANDBY) if st in _B else (st,))
        for st in _BACKUP_ONLY_STATES
    },
    **{
        (st, HigherEpoch): (
            _fence,
            (st, State.FENCED, State.STANDBY) if st in _B else (st, State.FENCED),
        )
        for st in _MAYBE_PRIMARY
    },
    **{(st, Stop): (_stop, (State.STOPPED,)) for st in ALL_LIVE},
    (State.NORMAL, Unlisted): (_unlisted, (State.NORMAL, State.SYNCING)),
    **{(st, Unlisted): (_ignore, (st,)) for st in ALL_LIVE if st is not State.NORMAL},
    # Observations that change nothing in these states, listed so they are legal.
    **{
        (st, PeerSilent): (_ignore, (st,))
        for st in (State.STARTING, State.STANDBY, State.FENCED, State.HANDOFF)
    },
    **{
        (st, ev): (_ignore, (st,))
        for st in ALL_LIVE
        if st is not State.NORMAL
        for ev in (PrimaryGone, PrimaryReachable)
    },
    **{
        (st, ClientVote): (_record_vote, (st, State.PRIMARY_ONLY) if st in _WAITING else (st,))
        for st in (State.STARTING, State.STANDBY, State.SYNCING, State.FENCED, State.HANDOFF)
    },
    **{
        (st, PeerProgress): (_progress, (st, State.PRIMARY_ONLY) if st in _WAITING else (st,))
        for st in ALL_LIVE
        if st is not State.NORMAL
    },
    **{
        (st, PeerActive): (_active_peer_seen, (st, State.FENCED))
        for st in (State.PRIMARY_ONLY, State.BACKUP_ONLY, State.HANDOFF)
    },
    (State.HANDOFF, BackupsInSync): (
        _handoff_in_sync,
        (State.HANDOFF, State.NORMAL, State.PRIMARY_ONLY),
    ),
    (State.HANDOFF, HandoffTimeout): (_handoff_timeout, (State.NORMAL, State.PRIMARY_ONLY)),
    **{(st, PeerCandidate): (_candidate, (st,)) for st in ALL_LIVE},
    **{
        (st, PeerGrant): (_grant, (st, State.PRIMARY_ONLY) if st in _WAITING else (st,))
        for st in ALL_LIVE
    },
}


def step(s: FailoverState, event: Event, now: float) -> Result:
    """Apply one event. An event the table does not allow raises
    IllegalTransition and leaves the state as it was (states are immutable)."""
    entry = TRANSITIONS.get((s.state, type(event)))
    if entry is None:
        raise IllegalTransition(f"{type(event).__name__} is not allowed in state {s.state.value}")
    handler, targets = entry
    new, actions = handler(s, event, now)
    if new.state is not s.state and new.state not in targets:  # pragma: no cover - table bug
        raise IllegalTransition(f"{s.state.value} -> {new.state.value} is not in the table")
    return new, actions


def diagram() -> str:
    """A Mermaid state diagram drawn from TRANSITIONS (for docs/architecture.md)."""
    edges: dict[tuple[str, str], list[str]] = {}
    for (src, ev), (_handler, targets) in TRANSITIONS.items():
        for dst in targets:
            if dst is src:
                continue
            edges.setdefault((src.value, dst.value), []).append(ev.__name__)
    lines = ["stateDiagram-v2", "    [*] --> starting"]
    for (a, b), evs in sorted(edges.items()):
        lines.append(f"    {a} --> {b}: {', '.join(sorted(set(evs)))}")
    lines.append("    stopped --> [*]")
    return "\n".join(lines) + "\n"
