"""The node's clock, read in one place.

The core decides from the `now` the shell passes in each turn; everything
else that looks at the time (durations for the log, the start time) goes
through here, so a reader sees at once where time enters the process.
"""

from __future__ import annotations

import time


def now() -> float:
    """Monotonic seconds: for deadlines, ages and durations."""
    return time.monotonic()


def wall_offset() -> float:
    """Add to a `now()` reading to get the time of day (for the record only)."""
    return time.time() - time.monotonic()
