"""The in-RAM tail of the transaction log.

The replication agent resends from here and a late backup catches up from
here without touching the disk. It is a list plus a start offset rather than
a deque because catch-up reads arbitrary ranges: indexing a list is O(1),
indexing the middle of a deque is not. Dropped entries are compacted away in
bulk, so both append and trim stay amortised O(1) per record.
"""

from __future__ import annotations


class Trimmed(LookupError):
    """The requested lsn is older than what is kept in RAM: use the disk or a snapshot."""


class MemLog:
    def __init__(self, next_lsn: int | None = None) -> None:
        """Without ``next_lsn`` the first append fixes where the log starts (after
        recovery that is wherever the disk left off); every later one must follow."""
        if next_lsn is not None and next_lsn < 1:
            raise ValueError(f"next_lsn must be >= 1, got {next_lsn}")
        self._items: list[bytes] = []
        self._start = 0  # index in _items of the oldest kept record
        self._first = next_lsn or 1  # lsn of _items[_start]
        self._started = next_lsn is not None
        self._nbytes = 0

    @property
    def first_lsn(self) -> int:
        """Oldest lsn held; equals ``last_lsn + 1`` when empty."""
        return self._first

    @property
    def last_lsn(self) -> int:
        """Newest lsn held (or the last one ever appended, once trimmed empty)."""
        return self._first + len(self._items) - self._start - 1

    @property
    def next_lsn(self) -> int:
        return self.last_lsn + 1

    @property
    def nbytes(self) -> int:
        """Payload bytes held (what ``trim_to`` budgets); list overhead not counted."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._items) - self._start

    def append(self, lsn: int, payload: bytes) -> None:
        if not self._started:
            if lsn < 1:
                raise ValueError(f"lsn must be >= 1, got {lsn}")
            self._first = lsn
            self._started = True
        items = self._items
        if lsn != self._first + len(items) - self._start:  # next_lsn, inlined: per record
            raise ValueError(f"append out of order: expected lsn {self.next_lsn}, got {lsn}")
        items.append(payload)
        self._nbytes += len(payload)

    def get(self, lsn: int) -> bytes:
        if lsn < self._first:
            raise Trimmed(f"lsn {lsn} was trimmed (first in memory is {self._first})")
        if lsn > self.last_lsn:
            raise KeyError(lsn)
        return self._items[self._start + lsn - self._first]

    def get_range(self, from_lsn: int, max_count: int) -> list[bytes]:
        """Up to ``max_count`` payloads starting at ``from_lsn``; [] if none is that new.

        Raises ``Trimmed`` rather than returning [] when ``from_lsn`` is gone, so a
        lagging reader cannot mistake "you are too far behind" for "nothing new".
        """
        if from_lsn < self._first:
            raise Trimmed(f"lsn {from_lsn} was trimmed (first in memory is {self._first})")
        if max_count <= 0:
            return []
        i = self._start + from_lsn - self._first
        return self._items[i : i + max_count]

    def trim_to(self, max_bytes: int, keep_after_lsn: int) -> int:
        """Drop oldest records until ``nbytes <= max_bytes``; returns how many went.

        Records above ``keep_after_lsn`` (not yet flushed to disk) are never
        dropped, even if that leaves the log over budget: RAM is their only copy.
        """
        dropped = 0
        items = self._items
        while (
            self._nbytes > max_bytes and self._first <= keep_after_lsn and self._start < len(items)
        ):
            self._nbytes -= len(items[self._start])
            items[self._start] = b""  # free the payload now, not at compaction
            self._start += 1
            self._first += 1
            dropped += 1
        if self._start and self._start * 2 >= len(items):
            del items[: self._start]
            self._start = 0
        return dropped

    def clear(self, next_lsn: int) -> None:
        """Forget everything and continue at ``next_lsn`` (after a state transfer)."""
        if next_lsn < 1:
            raise ValueError(f"next_lsn must be >= 1, got {next_lsn}")
        self._items = []
        self._start = 0
        self._first = next_lsn
        self._started = True
        self._nbytes = 0
