"""Epoch histories (txlog.history) and cutting a log back (txlog.truncate):
where two servers' logs part, and what is kept aside when one follows the
other."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zmqfail.core.replay import history_from_meta
from zmqfail.errors import ProtocolError
from zmqfail.txlog.history import EpochHistory, Term, common_prefix, rival
from zmqfail.txlog.recovery import iter_records, recover
from zmqfail.txlog.segments import DiskLog
from zmqfail.txlog.snapshot import list_snapshots, write_snapshot
from zmqfail.txlog.truncate import quarantine_dir, truncate_after

pytestmark = pytest.mark.timeout(60)

A1 = Term(1, "a", 11, 1)


def hist(*terms: Term) -> EpochHistory:
    return EpochHistory(list(terms))


def test_same_log_agrees_to_the_end() -> None:
    h = hist(A1)
    assert common_prefix(h, 100, h, 100) == 100
    assert common_prefix(h, 100, h, 40) == 100  # their last term is open: ours came from them
    assert common_prefix(h, 100, h, 40, their_open=False) == 40


def test_a_takeover_cuts_the_old_primarys_tail() -> None:
    # a wrote 1..120 at epoch 1; b held 1..100 and took over (epoch 2) from 101.
    old = hist(A1)
    new = hist(A1, Term(2, "b", 22, 101))
    assert common_prefix(old, 120, new, 150) == 100
    # b, in turn, holds nothing a lacks beyond its own term.
    assert common_prefix(new, 150, old, 120, their_open=False) == 100


def test_same_epoch_number_from_two_leaders_is_two_histories() -> None:
    # The audit's power loss: a restarted and led again; b kept its own tail.
    b_log = hist(A1)
    a_again = hist(A1, Term(2, "a", 33, 90))
    other = hist(A1, Term(2, "b", 44, 95))
    assert common_prefix(b_log, 120, a_again, 95) == 89
    assert common_prefix(other, 120, a_again, 95) == 89  # same epoch 2, different terms


def test_a_rival_is_another_term_of_an_epoch_we_hold() -> None:
    a_again = hist(A1, Term(2, "a", 33, 27))
    b_announced = hist(A1, Term(2, "b", 44, 23))  # no record behind it yet
    assert rival(a_again, b_announced) == Term(2, "b", 44, 23)
    assert rival(b_announced, a_again) == Term(2, "a", 33, 27)
    # Followers hold their leader's terms; newer or older epochs are no rivals.
    assert rival(a_again, hist(A1)) is None
    assert rival(hist(A1), hist(A1, Term(2, "b", 44, 23))) is None
    assert rival(a_again, a_again.copy()) is None
    assert rival(hist(A1, Term(3, "b", 5, 23)), a_again) is None
    # A term from before ids (0) matches any term of its epoch.
    assert rival(hist(Term(1, "", 0, 1)), hist(A1)) is None


def test_a_follower_that_is_simply_behind_keeps_everything() -> None:
    new = hist(A1, Term(2, "b", 22, 101))
    assert common_prefix(hist(A1), 60, new, 150) == 60
    assert common_prefix(EpochHistory(), 0, new, 150) == 0


def test_terms_written_before_ids_match_by_epoch() -> None:
    legacy = hist(Term(1, "", 0, 1))
    assert common_prefix(legacy, 50, hist(A1), 80) == 50


def test_adopt_and_cut() -> None:
    h = EpochHistory()
    h.adopt(A1, 1)
    h.adopt(A1, 2)  # same term: nothing new
    b = Term(2, "b", 22, 101)
    h.adopt(b, 101)
    assert h.terms == [A1, b]
    assert h.term_at(100) == A1 and h.term_at(101) == b and h.term_at(0) is None
    h.cut(100)
    assert h.terms == [A1]
    h.open_term(3, "c", 50, 9)  # a leader starting at 50 replaces what follows
    assert [t.first_lsn for t in h.terms] == [1, 50]


def test_an_announced_term_outlives_a_cut_and_a_restart() -> None:
    """b took over at epoch 2 from 101 and wrote nothing: its term holds no
    record, but its recovery signal announced it, so it stays known (after a
    step-down and in the meta read back after a restart) until another term
    replaces it; a plain cut forgets it."""
    b = Term(2, "b", 22, 101)
    h = hist(A1, b)
    h.cut_keeping_announced(100)
    assert h.terms == [A1, b]
    meta = {"history": h.to_wire()}
    assert history_from_meta(meta, 100).terms == [A1, b]
    # Power loss took records below the term's start: still announced at 101.
    assert history_from_meta(meta, 90).terms == [A1, b]
    h.cut(100)
    assert h.terms == [A1]
    # Only the newest term is kept: one between it and the log's end is gone.
    c = Term(3, "c", 33, 120)
    h2 = hist(A1, b, c)
    h2.cut_keeping_announced(100)
    assert h2.terms == [A1, c]
    # A leader opening its own term at the same place replaces it.
    h3 = hist(A1, b)
    h3.open_term(3, "a", 101, 44)
    assert h3.terms == [A1, Term(3, "a", 44, 101)]


def test_an_announced_term_cuts_what_the_old_primary_wrote_after_it() -> None:
    """The split of docs/reliability.md: a wrote 101..104 at epoch 1 while b
    took over at epoch 2 from 101 and wrote nothing. b's history (its log ends
    at 100) shares only 1..100 with a's; had b lost 95..100 on power loss
    after announcing, a still keeps 1..100 (b's term says where it began)."""
    b_hist = hist(A1, Term(2, "b", 22, 101))
    assert common_prefix(hist(A1), 104, b_hist, 100) == 100
    assert common_prefix(hist(A1), 104, b_hist, 94) == 100
    assert common_prefix(hist(A1), 104, hist(A1), 100) == 104  # nothing announced


def test_wire_round_trip_and_refusals() -> None:
    h = hist(A1, Term(2, "b", 22, 101))
    assert EpochHistory.from_wire(h.to_wire()) == h
    for bad in (
        [[1, "a", 1]],
        [[1, "a", 1, 5], [2, "b", 2, 5]],
        "x",
        [[1, 2, 3, 4]],
        [[-1, "a", 1, 1]],
    ):
        with pytest.raises(ProtocolError):
            EpochHistory.from_wire(bad)


@st.composite
def two_logs(draw: st.DrawFn) -> tuple[EpochHistory, int, EpochHistory, int, int]:
    """Two logs that share a prefix of `common` records, then each goes on in
    terms of its own."""
    common = draw(st.integers(0, 50))
    shared = [Term(1, "a", 1, 1)] if common else []
    mine, theirs = EpochHistory(list(shared)), EpochHistory(list(shared))
    my_extra = draw(st.integers(0, 30))
    their_extra = draw(st.integers(0, 30))
    if my_extra:
        mine.open_term(2, "m", common + 1, 100)
    if their_extra:
        theirs.open_term(2, "t", common + 1, 200)
    return mine, common + my_extra, theirs, common + their_extra, common


@given(two_logs())
def test_common_prefix_is_exactly_what_both_hold(
    logs: tuple[EpochHistory, int, EpochHistory, int, int],
) -> None:
    mine, my_last, theirs, their_last, common = logs
    assert common_prefix(mine, my_last, theirs, their_last, their_open=False) == common
    assert common_prefix(theirs, their_last, mine, my_last, their_open=False) == common


def write_log(data_dir: Path, n: int, segment_bytes: int = 1 << 20) -> None:
    dl = DiskLog(data_dir, segment_bytes, 1)
    for lsn in range(1, n + 1):
        dl.append(lsn, f"rec-{lsn}".encode() * 10)
    batch = dl.take()
    assert batch is not None
    dl.write(batch, sync=True)
    dl.close()


@pytest.mark.parametrize("segment_bytes", [1 << 20, 600])
def test_truncate_keeps_the_cut_records_in_quarantine(tmp_path: Path, segment_bytes: int) -> None:
    write_log(tmp_path, 40, segment_bytes)
    write_snapshot(tmp_path, 35, 1, {"x": 1})
    write_snapshot(tmp_path, 10, 1, {"x": 0})
    cut = truncate_after(tmp_path, 25, reason="test")
    assert (cut.records, cut.first_lsn, cut.last_lsn, cut.snapshots_removed) == (15, 26, 40, 1)
    assert [lsn for lsn, _ in iter_records(tmp_path)] == list(range(1, 26))
    assert [lsn for lsn, _ in list_snapshots(tmp_path)] == [10]
    assert cut.quarantine is not None and cut.quarantine.parent == quarantine_dir(tmp_path)
    # The quarantine is a log of its own: the log tools read it.
    assert [lsn for lsn, _ in iter_records(cut.quarantine)] == list(range(26, 41))
    (seg,) = (cut.quarantine / "log").iterdir()
    assert seg.stat().st_mode & 0o777 == 0o600  # a node's data is its user's alone
    # Recovery of what is left is clean, and appending goes on at 26.
    rec = recover(tmp_path)
    assert rec.last_lsn == 25 and rec.truncated_bytes == 0


def test_truncate_of_nothing_changes_nothing(tmp_path: Path) -> None:
    write_log(tmp_path, 10)
    cut = truncate_after(tmp_path, 10)
    assert (cut.records, cut.quarantine) == (0, None)
    assert not quarantine_dir(tmp_path).exists()
    assert [lsn for lsn, _ in iter_records(tmp_path)] == list(range(1, 11))
