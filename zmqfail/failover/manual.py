"""Operator events of the failover machine: a switchover to a named backup,
a promote (a takeover an operator orders), pause and resume of automatic
failover. Pure, like the rest of the machine (`machine.py` holds the table).

Each refuses with IllegalTransition, changing nothing, what an operator
must not do by mistake: hand over to a backup that may lack acknowledged
records, or promote a server that still hears a live peer or may lack
records, unless forced.
"""

from __future__ import annotations

from dataclasses import replace

from zmqfail.failover.lead import _next_epoch, _order, _reconsider, _take_over, _to
from zmqfail.failover.state import (
    Action,
    Event,
    FailoverState,
    IllegalTransition,
    Promote,
    Result,
    Role,
    State,
    Switchover,
)


def _switchover(s: FailoverState, e: Event, now: float) -> Result:
    assert isinstance(e, Switchover)
    if s.role is not Role.PRIMARY:
        raise IllegalTransition(f"{s.name} is not the primary")
    if not s.in_sync:
        raise IllegalTransition("switchover needs an in-sync backup")
    if e.to and e.to not in s.in_sync:
        # Only a backup holding every acknowledged record may take over.
        what = "the primary" if e.to == s.name else "not an in-sync backup"
        raise IllegalTransition(f"{e.to} is {what} (in sync: {', '.join(s.in_sync)})")
    target = e.to or sorted(s.in_sync, key=lambda n: _order(s, n))[0]
    return _to(s, State.HANDOFF, now, handoff_to=target), [Action.HANDOFF]


def _promote(s: FailoverState, e: Event, now: float) -> Result:
    """An operator's forced takeover. Refused while a peer is heard (the
    operator may think it dead; it is not), and from a state that may lack
    acknowledged records, unless forced; with a witness it waits for the
    witness's grant like any new epoch."""
    assert isinstance(e, Promote)
    if s.role is not Role.BACKUP:
        raise IllegalTransition(f"{s.name} already serves ({s.role.value}/{s.state.value})")
    heard = [p for p in e.heard if p in s.peers]
    if heard and not e.force:
        raise IllegalTransition(
            f"{s.name} hears {', '.join(heard)} (heartbeats alive), so it is not dead; "
            "use switchover to move the primary, or --force"
        )
    if s.state is not State.NORMAL and not e.force:
        raise IllegalTransition(
            f"{s.name} is {s.state.value}, not an in-sync backup: it may lack acknowledged "
            "records; only --force promotes it"
        )
    if s.promoting and s.asking == s.promoting:
        return s, []  # asked already: the witness's grant completes it
    return _take_over(replace(s, promoting=_next_epoch(s)), now)


def _pause(s: FailoverState, e: Event, now: float) -> Result:
    """Hold automatic failover: withdraw a candidacy and an automatic ask to
    the witness (an operator's promote keeps its ask)."""
    promote_ask = s.asking if s.promoting and s.asking == s.promoting else 0
    return replace(s, paused=True, candidate=0, grants=(), asking=promote_ask), []


def _resume(s: FailoverState, e: Event, now: float) -> Result:
    if not s.paused:
        return s, []
    return _reconsider(replace(s, paused=False), now)
