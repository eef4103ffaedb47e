"""A log-linear (HDR-style) histogram of non-negative integers.

A bench records one latency per request; keeping every sample would cost
memory proportional to the run and would have to be shipped whole from each
client process. Counting samples in buckets whose width grows with the value
bounds the relative error instead (below 1/128 of the value, and half that for
the bucket midpoint that percentiles report), keeps the size logarithmic in the
largest value, and makes merging across processes an addition of counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

SUB_BITS = 7  # 2**7 sub-buckets per power of two: relative bucket width <= 1/128
_HALF = 1 << SUB_BITS  # 128
_EXACT = 1 << (SUB_BITS + 1)  # values below 256 get a bucket each


def bucket_of(value: int) -> int:
    """Index of the bucket holding `value` (monotonic in `value`)."""
    if value < 0:
        raise ValueError(f"a histogram holds non-negative values, got {value}")
    if value < _EXACT:
        return value
    shift = value.bit_length() - (SUB_BITS + 1)
    top = value >> shift  # in [128, 256)
    return _EXACT + (shift - 1) * _HALF + (top - _HALF)


def bucket_bounds(index: int) -> tuple[int, int]:
    """Smallest and largest value that land in bucket `index`."""
    if index < _EXACT:
        return index, index
    j = index - _EXACT
    shift = j // _HALF + 1
    top = _HALF + j % _HALF
    return top << shift, ((top + 1) << shift) - 1


class Histogram:
    """Counts per bucket plus the exact minimum and maximum."""

    __slots__ = ("counts", "max", "min", "sum", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.sum = 0
        self.max = 0
        self.min = 0

    def record(self, value: int, count: int = 1) -> None:
        b = bucket_of(value)
        self.counts[b] = self.counts.get(b, 0) + count
        if self.total == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.total += count
        self.sum += value * count

    def record_all(self, values: Iterable[int]) -> None:
        for v in values:
            self.record(v)

    def merge(self, other: Histogram) -> None:
        """Add `other`'s counts: the result is the histogram of both sample sets."""
        if other.total == 0:
            return
        for b, n in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + n
        self.min = other.min if self.total == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.total += other.total
        self.sum += other.sum

    def percentile(self, q: float) -> float:
        """Value at quantile `q` (0..1): the midpoint of the bucket holding the
        sample of rank ceil(q * total), clamped to the exact min and max so that
        q = 1 gives the true maximum. 0.0 for an empty histogram."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within 0..1, got {q}")
        if self.total == 0:
            return 0.0
        rank = max(1, math.ceil(q * self.total - 1e-9))  # 1e-9: 0.9 * 10 is not above 9
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                lo, hi = bucket_bounds(b)
                mid = (lo + hi) / 2
                return float(min(max(mid, self.min), self.max))
        return float(self.max)  # pragma: no cover - counts always add up to total

    def mean(self) -> float:
        return self.sum / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON- and pickle-friendly form, for shipping between processes."""
        return {
            "counts": {str(b): n for b, n in self.counts.items()},
            "total": self.total,
            "sum": self.sum,
            "min": self.min,
            "max": self.max,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Histogram:
        h = cls()
        h.counts = {int(b): int(n) for b, n in d["counts"].items()}
        h.total = int(d["total"])
        h.sum = int(d["sum"])
        h.min = int(d["min"])
        h.max = int(d["max"])
        return h
