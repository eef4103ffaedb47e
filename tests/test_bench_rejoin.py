"""`tools/bench rejoin` against a real pair: the backup is killed under
load, stays down, comes back, and the row says how far behind it was and
how long the pair took to be whole. Nothing here is timed."""

from __future__ import annotations

import pytest
from benchkit.procs import Reaper
from benchkit.rejoin import bench_rejoin

pytestmark = [pytest.mark.timeout(150), pytest.mark.process]


def test_a_killed_backup_rejoins_behind_and_the_row_says_by_how_much() -> None:
    lines: list[str] = []
    with Reaper() as reaper:
        (row,) = bench_rejoin(reaper, [0.5], lines.append)
        assert reaper.procs == []  # the pair and the client are gone
    assert row["behind"] > 0, row  # the primary went on alone while it was down
    assert 0 < row["syncing_after_s"] <= row["rejoin_s"] and row["written_meanwhile"] >= 0, row
    assert row["records_per_s"] > 0, row
    # The primary's links to the dead backup timed out and were reset
    # (link_timeout_ms is 150 ms): the counter the row reads climbs.
    assert row["link_resets_down"] > 0 and row["link_resets"] >= 0, row
    assert row["replies"] > 0 and row["errors"] == 0, row
    assert lines and lines[0].startswith("   rejoin after 0.5 s down: ")
