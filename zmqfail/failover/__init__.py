"""The failover agent's decisions, as a pure state machine (no sockets, no clock)."""

from zmqfail.failover.machine import (
    ACTIVE_STATES,
    TRANSITIONS,
    Action,
    Event,
    FailoverState,
    IllegalTransition,
    Role,
    State,
    initial,
    step,
)

__all__ = [
    "ACTIVE_STATES",
    "TRANSITIONS",
    "Action",
    "Event",
    "FailoverState",
    "IllegalTransition",
    "Role",
    "State",
    "initial",
    "step",
]
