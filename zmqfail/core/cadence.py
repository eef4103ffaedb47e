"""When a node's periodic work falls due: the failure detector's tick and
the heartbeat, each a `Periodic` deadline.

Both run on a grid (the beat interval is a multiple of the tick), and one
due within TURN_SLACK is done in the current turn. Without the slack, two
deadlines summed separately differ by float rounding, and each beat took a
loop wake-up of its own a microsecond after its tick (in the simulator, one
turn in seven). Never late, at most TURN_SLACK early; the grid, not the time
of the turn that did the work, sets the next deadline, so the rate is kept
and an early one does not drift the phase. After a stall the grid restarts
from the late turn instead of catching up in a burst.
"""

from __future__ import annotations

# Seconds between runs of the failure detector and timers. The dead time is
# 150 ms and heartbeats come every 30 ms (a multiple, for the grid); at 5 ms
# an idle node woke 200 times a second, most of its idle CPU (two idle nodes:
# 0.12-0.15 of a core each at 5 ms, 0.10 at 10 ms, in two alternations).
SLOW_TICK = 0.010
TURN_SLACK = 0.001


class Periodic:
    def __init__(self, every: float, now: float) -> None:
        self.every = every
        self.next = now  # due at once: a starting node ticks and beats

    def is_due(self, now: float) -> bool:
        """Whether `due` would say so, without moving the deadline."""
        return now >= self.next - TURN_SLACK

    def due(self, now: float) -> bool:
        """Is it due in this turn? If so, the next deadline moves on the grid."""
        if not self.is_due(now):
            return False
        nxt = self.next + self.every
        self.next = nxt if nxt > now else now + self.every
        return True
