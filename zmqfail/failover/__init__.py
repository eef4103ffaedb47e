"""The failover agent's decisions, as a pure state machine (no sockets, no clock)."""

from zmqfail.failover.machine import TRANSITIONS, step
from zmqfail.failover.state import (
    ACTIVE_STATES,
    Action,
    Event,
    FailoverState,
    IllegalTransition,
    Role,
    State,
    initial,
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
