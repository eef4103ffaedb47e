"""The pure parts of `tools/chaos`: the seeded schedule, the outage and
split-brain arithmetic and the power-loss allowance."""

from __future__ import annotations

import collections
import itertools
from typing import Any, cast

import pytest
from chaoskit.netns import real_fault
from chaoskit.schedule import Kind, draw, kinds_for, parse_kinds
from chaoskit.tally import (
    Done,
    outage,
    power_ages,
    power_window,
    split_from_history,
    split_from_status,
    tally,
)

from zmqfail.runcheck import History, RunCheck

pytestmark = pytest.mark.timeout(30)


def test_the_same_seed_draws_the_same_faults_and_a_short_run_meets_every_kind() -> None:
    kinds = kinds_for(witness=False)
    first = list(itertools.islice(draw(7, kinds), 20))
    assert first == list(itertools.islice(draw(7, kinds), 20))
    assert first != list(itertools.islice(draw(8, kinds), 20))
    assert {f.kind for f in first[: len(kinds)]} == set(kinds)
    assert Kind.WITNESS not in kinds and Kind.WITNESS in kinds_for(witness=True)
    assert all(f.target in ("primary", "backup") for f in first if f.kind.targets_node)


def test_unknown_kinds_are_refused_by_name() -> None:
    assert parse_kinds("kill, power,kill", witness=False) == (Kind.KILL, Kind.POWER)
    with pytest.raises(ValueError, match=r"unknown fault kind.*witness needs --witness"):
        parse_kinds("witness", witness=False)
    with pytest.raises(ValueError, match="bogus"):
        parse_kinds("kill,bogus", witness=True)


def test_outage_is_the_longest_stretch_without_an_acknowledgement_in_the_window() -> None:
    times = [0.0, 0.1, 0.2, 1.7, 1.8, 5.0, 5.05]
    assert outage(times, 0.15, 1.75) == pytest.approx(1.5)
    assert outage(times, 0.15, 2.0) == pytest.approx(3.2)  # one that began inside counts whole
    assert outage(times, 4.0, 4.5) == pytest.approx(3.2)  # the gap that spans the window
    assert outage(times, 6.0, 9.0) == pytest.approx(3.0)  # nothing after: up to the end


def test_split_brain_from_interleaved_acknowledgements_and_from_status() -> None:
    clean = [(0.0, "a", 1), (1.0, "a", 1), (2.0, "b", 2), (3.0, "b", 2)]
    assert split_from_history(clean) == []
    both = [(0.0, "a", 1), (2.0, "b", 2), (2.5, "a", 1), (3.0, "b", 2)]
    assert split_from_history(both) == [(2.0, 2.5)]
    samples = [(0.0, 1), (0.2, 2), (0.4, 2), (0.6, 1), (0.8, 2)]
    assert split_from_status(samples) == [(0.2, 0.4), (0.8, 0.8)]


def test_the_power_allowance_spans_the_flush_window_before_the_cut_to_the_restart() -> None:
    faults = [
        Done(1, Kind.KILL, "a", 10.0, 11.0, 15.0),
        Done(2, Kind.POWER, "", 20.0, 21.0, 30.0),
    ]
    [(lo, hi)] = power_window(faults, 0.1)
    assert lo == pytest.approx(20.0 - 0.1 - 0.5) and hi == 21.0


def test_a_lost_ack_is_aged_against_the_power_loss_that_allows_it() -> None:
    """A reply received after the cut began (sent before it) is 0 s old, not
    as old as the time to the next power loss (a 30-minute run's note said
    55 s where it meant none)."""
    faults = [
        Done(1, Kind.POWER, "", 20.0, 21.0, 30.0),
        Done(2, Kind.KILL, "a", 40.0, 41.0, 45.0),
        Done(3, Kind.POWER, "", 75.0, 76.0, 80.0),
    ]
    ages = power_ages([19.7, 20.4, 74.9], faults, 0.1)
    assert ages == pytest.approx([0.3, 0.0, 0.1])
    assert power_ages([50.0], faults, 0.1) == []  # in no allowance: not aged


def test_one_way_loss_draws_a_direction_and_gets_its_own_row() -> None:
    faults = list(itertools.islice(draw(3, (Kind.ONE_WAY, Kind.CUT_BOTH)), 40))
    ways = {f.direction for f in faults if f.kind is Kind.ONE_WAY}
    assert ways == {"in", "out"}, "both directions come up in a campaign of some length"
    assert all(f.direction == "" for f in faults if f.kind is not Kind.ONE_WAY)
    first = next(f for f in faults if f.kind is Kind.ONE_WAY)
    assert f"one-way-loss ({first.direction}) at the {first.target}" in first.describe()
    assert parse_kinds("one-way-loss", witness=False) == (Kind.ONE_WAY,)
    done = [Done(1, Kind.ONE_WAY, "a", 1.0, 2.0, 3.0)]
    acked = {("c", 1): 0.5, ("c", 2): 1.5, ("c", 3): 3.5}
    oks = [(t, "a", 1) for t in acked.values()]
    history = History({k: {} for k in acked}, collections.Counter(acked), acked, oks)
    rows = {r.kind: r for r in tally(done, history, RunCheck(acked=3), [], (Kind.ONE_WAY,))}
    assert list(rows) == ["one-way-loss", "(calm)", "total"]
    assert (rows["one-way-loss"].faults, rows["one-way-loss"].acked) == (1, 1)
    assert rows["one-way-loss"].outages == [pytest.approx(2.0)]


class FakeLab:
    """What netns.real_fault asks of a lab, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def cut(self, net: str) -> None:
        self.calls.append(("cut", net))

    def heal(self, net: str) -> None:
        self.calls.append(("heal", net))

    def lose(self, net: str, side: str) -> None:
        self.calls.append(("lose", net, side))

    def unlose(self, net: str, side: str) -> None:
        self.calls.append(("unlose", net, side))


@pytest.mark.parametrize(
    ("kind", "node", "direction", "done", "undone"),
    [
        (Kind.CUT_BOTH, "a", "", [("cut", "main"), ("cut", "failsafe")], ("heal", "failsafe")),
        (Kind.CUT_CLIENTS, "b", "", [("cut", "clients")], ("heal", "clients")),
        # Out at b: b sends nothing; in at b: a sends b nothing.
        (Kind.ONE_WAY, "b", "out", [("lose", "main", "b"), ("lose", "failsafe", "b")], None),
        (Kind.ONE_WAY, "b", "in", [("lose", "main", "a"), ("lose", "failsafe", "a")], None),
        (Kind.ONE_WAY, "a", "in", [("lose", "main", "b"), ("lose", "failsafe", "b")], None),
    ],
)
def test_network_faults_go_on_the_cables_of_a_lab(
    kind: Kind,
    node: str,
    direction: str,
    done: list[tuple[str, ...]],
    undone: tuple[str, ...] | None,
) -> None:
    fake = FakeLab()
    heal = real_fault(cast(Any, fake), kind, node, direction)
    assert heal is not None and fake.calls == done
    heal()
    undo = [("unlose", *c[1:]) if c[0] == "lose" else ("heal", c[1]) for c in done]
    assert fake.calls[len(done) :] == undo
    assert undone is None or undone in undo


@pytest.mark.parametrize(("kind", "node"), [(Kind.CUT_CLIENTS, "a"), (Kind.KILL, "b")])
def test_faults_without_a_cable_are_left_to_the_usual_way(kind: Kind, node: str) -> None:
    """a shares its host with the clients: its client network has no cable."""
    fake = FakeLab()
    assert real_fault(cast(Any, fake), kind, node, "") is None and fake.calls == []
