"""Simulated time: a heap of events, run in order, from one seeded generator.

Everything in a simulation that would read a clock or a random source reads
this loop's `now` and `rng`, so a seed replays a run exactly.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable


class Loop:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.events = 0

    def at(self, when: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self.now), self._seq, fn))

    def after(self, delay: float, fn: Callable[[], None]) -> None:
        self.at(self.now + delay, fn)

    def run_until(self, until: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= until:
            when, _, fn = heapq.heappop(heap)
            self.now = when
            self.events += 1
            fn()
        self.now = max(self.now, until)

    def jitter(self, base: float, spread: float) -> float:
        return base + self.rng.random() * spread
