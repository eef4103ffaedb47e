"""The pure order-matching engine: deterministic, no I/O, no clock, no randomness.

See ``core.py`` for the state, the change-op format and the retention policies.
"""

from zmqfail.engine.core import Engine
from zmqfail.engine.outcome import REJECT_CODES, DedupAnswer, DedupKind, Outcome

__all__ = ["REJECT_CODES", "DedupAnswer", "DedupKind", "Engine", "Outcome"]
