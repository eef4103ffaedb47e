"""Which leader wrote which part of a log: the epoch history, and where two
servers' histories part.

Every time a server starts to lead it opens a new **term**: its epoch, its
name, a random id, and the LSN of the first record it writes. A record's
term is the last term that starts at or before its LSN. Two logs that hold a
record of the same term at the same LSN hold the same record there and the
same records before it (a leader writes each LSN once and a follower only
appends what its leader sent, in order), so comparing the two term lists is
enough to find the longest common prefix without reading a record.

The random id makes a term unique even when two servers reach the same epoch
number without hearing each other (a split, or a server that lost its disk
and starts afresh): equal epochs then still compare as different histories.

A server that starts to follow a primary keeps its log up to the common prefix
and moves the rest aside (``txlog.truncate``): records nobody else holds,
some of which it may have acknowledged. Nothing here does I/O.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from zmqfail.errors import ProtocolError

MAX_TERMS = 4096  # a history longer than this on the wire is refused as bogus


@dataclass(frozen=True, slots=True)
class Term:
    epoch: int
    leader: str
    term_id: int
    first_lsn: int

    def same(self, other: Term) -> bool:
        """The same term. An id of 0 is a term recovered from a log written
        before terms had ids: it is matched by its epoch alone."""
        if self.epoch != other.epoch:
            return False
        return self.term_id == other.term_id or 0 in (self.term_id, other.term_id)

    def to_wire(self) -> list[Any]:
        return [self.epoch, self.leader, self.term_id, self.first_lsn]


def new_term_id() -> int:
    return random.getrandbits(48)


class EpochHistory:
    """The terms of one log, oldest first, first LSNs strictly increasing."""

    __slots__ = ("terms",)

    def __init__(self, terms: list[Term] | None = None) -> None:
        self.terms: list[Term] = list(terms or [])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EpochHistory) and self.terms == other.terms

    def __repr__(self) -> str:
        return f"EpochHistory({self.terms!r})"

    def copy(self) -> EpochHistory:
        return EpochHistory(self.terms)

    @property
    def last(self) -> Term | None:
        return self.terms[-1] if self.terms else None

    def open_term(self, epoch: int, leader: str, first_lsn: int, term_id: int) -> Term:
        """A leader starts writing at `first_lsn`. Terms that start there or
        later (with no records behind them) are replaced."""
        self.cut(first_lsn - 1)
        term = Term(epoch, leader, term_id, first_lsn)
        self.terms.append(term)
        return term

    def adopt(self, term: Term, lsn: int) -> None:
        """A follower appends the record at `lsn`, of `term` (from its leader's
        history); a new term is noted from that LSN on."""
        last = self.last
        if last is None or not last.same(term):
            self.cut(lsn - 1)
            self.terms.append(Term(term.epoch, term.leader, term.term_id, lsn))

    def cut(self, last_lsn: int) -> None:
        """Forget terms with no record at or below `last_lsn`."""
        while self.terms and self.terms[-1].first_lsn > last_lsn:
            self.terms.pop()

    def cut_keeping_announced(self, last_lsn: int) -> None:
        """As `cut`, but the newest term stays even with no record: a leader
        that opened it may have told clients, in its recovery signal, that
        what it did not hold then is lost. Whoever leads next must know that
        promise to keep it (`NodeCore._set_aside_superseded`), so it is kept
        across a restart and a step-down until another term replaces it."""
        newest = self.last
        self.cut(last_lsn)
        if newest is not None and newest.first_lsn > last_lsn:
            self.terms.append(newest)

    def term_at(self, lsn: int) -> Term | None:
        return self.term_span(lsn)[0]

    def term_span(self, lsn: int) -> tuple[Term | None, int | None]:
        """The term at `lsn`, and the LSN the next term begins at (None: no
        later term), so a run of records can be checked against it once."""
        found = None
        for t in self.terms:
            if t.first_lsn > lsn:
                return found, t.first_lsn
            found = t
        return found, None

    def to_wire(self) -> list[list[Any]]:
        return [t.to_wire() for t in self.terms]

    @classmethod
    def from_wire(cls, obj: object) -> EpochHistory:
        """Validate a history received from a peer (or read from meta)."""
        if not isinstance(obj, list) or len(obj) > MAX_TERMS:
            raise ProtocolError("history must be a list of terms")
        terms: list[Term] = []
        prev = 0
        for item in obj:
            if not (isinstance(item, list | tuple) and len(item) == 4):
                raise ProtocolError("a term is [epoch, leader, term_id, first_lsn]")
            epoch, leader, term_id, first = item
            if not (
                all(type(v) is int and v >= 0 for v in (epoch, term_id, first))
                and isinstance(leader, str)
                and len(leader) <= 128
                and first > prev
            ):
                raise ProtocolError(f"bad term {item!r} in a history")
            terms.append(Term(epoch, leader, term_id, first))
            prev = first
        return cls(terms)


def rival(mine: EpochHistory, theirs: EpochHistory) -> Term | None:
    """A term of `theirs` at the epoch of one of ours that is another term:
    two leaders opened the same epoch (a server that led alone after a
    restart, not knowing the epoch a peer had opened meanwhile). Epochs alone
    cannot order them, so each side must stop trusting its own
    (docs/reliability.md, "Losses reported after a split")."""
    by_epoch = {t.epoch: t for t in mine.terms}
    for t in theirs.terms:
        m = by_epoch.get(t.epoch)
        if m is not None and not m.same(t):
            return t
    return None


def _end(terms: list[Term], i: int, last_lsn: int, open_last: bool) -> float:
    if i + 1 < len(terms):
        return terms[i + 1].first_lsn - 1
    return float("inf") if open_last else last_lsn


def common_prefix(
    mine: EpochHistory,
    my_last: int,
    theirs: EpochHistory,
    their_last: int,
    their_open: bool = True,
) -> int:
    """The highest LSN up to which both logs hold the same records.

    `their_open`: their last term is still being written (they lead now), so
    whatever we hold of it came from them, however far their last report said
    they had got.
    """
    best = 0
    for i, t in enumerate(theirs.terms):
        for j, m in enumerate(mine.terms):
            if not m.same(t) or m.first_lsn != t.first_lsn:
                continue
            if m.first_lsn > my_last:
                continue
            end = min(
                _end(mine.terms, j, my_last, False),
                _end(theirs.terms, i, their_last, their_open),
            )
            best = max(best, int(min(end, my_last)))
    return best
