"""The operator's view without sockets: the verdict (exit codes of `status` and
`health`), the words for roles, the last failover and its outage, and the
layout at 80, 100, 120 and 160 columns."""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import pytest
from rich.console import Console

from zmqfail.cli.health import (
    Transition,
    Verdict,
    classify,
    failover_words,
    last_failover,
    primary_last_heard,
    role_words,
    serves,
)
from zmqfail.cli.layout import HISTORY_FROM, choose_columns, render
from zmqfail.cli.view import WatchModel, snapshot
from zmqfail.core.status import NodeStatus

pytestmark = pytest.mark.timeout(30)
HB = 30


def wire(name: str, role: str | None, state: str, epoch: int = 1, **kw: Any) -> dict[str, Any]:
    """A node's status as its control socket sends it."""
    r: dict[str, Any] = {"name": name, "role": role, "state": state, "epoch": epoch, "lag": 0}
    r.update(kw)
    return r


def row(name: str, role: str | None, state: str, epoch: int = 1, **kw: Any) -> NodeStatus:
    """The same, decoded as every reader decodes it."""
    return NodeStatus.from_wire(wire(name, role, state, epoch, **kw))


def unreachable_row(name: str) -> NodeStatus:
    return NodeStatus.unreachable(name, "no answer")


PRIMARY = row("a", "primary", "normal")
BACKUP = row("b", "backup", "normal")


def test_role_words_say_what_an_operator_means() -> None:
    assert role_words(row("b", "primary", "backup_only")) == "primary (alone, took over)"
    assert role_words(row("a", "primary", "primary_only")) == "primary (alone)"
    assert role_words(PRIMARY) == "primary"
    assert role_words(BACKUP) == "backup (in sync)"
    assert role_words(row("b", "backup", "syncing")) == "backup (syncing)"
    assert role_words(unreachable_row("b")) == "unreachable"
    assert serves(row("b", "primary", "backup_only")) and not serves(BACKUP)
    assert not serves(row("a", "primary", "handoff"))  # takes no new requests meanwhile


@pytest.mark.parametrize(
    ("rows", "verdict", "summary"),
    [
        ([PRIMARY, BACKUP], Verdict.OK, "protected: primary a (epoch 1), backup b in sync, lag 0"),
        (
            [row("a", "primary", "primary_only"), unreachable_row("b")],
            Verdict.DEGRADED,
            "primary a (epoch 1) runs alone; b unreachable",
        ),
        (
            [unreachable_row("a"), row("b", "primary", "backup_only", 2)],
            Verdict.DEGRADED,
            "primary b (epoch 2) took over and runs alone; a unreachable",
        ),
        (
            [PRIMARY, row("b", "backup", "syncing")],
            Verdict.DEGRADED,
            "primary a (epoch 1); b backup (syncing)",
        ),
        (
            [PRIMARY, BACKUP, unreachable_row("c")],
            Verdict.DEGRADED,
            "primary a (epoch 1); c unreachable; backup b in sync",
        ),
        (
            [row("a", "primary", "handoff"), BACKUP],
            Verdict.DEGRADED,
            "primary a (epoch 1) is handing over; backup b in sync",
        ),
        (
            [row("a", "primary", "primary_only", 1), row("b", "primary", "backup_only", 2)],
            Verdict.DEGRADED,
            "primary b (epoch 2) took over and runs alone; a also claims primary (epoch 1)",
        ),
        (
            [unreachable_row("a"), row("b", "backup", "normal")],
            Verdict.DOWN,
            "no node serves (a unreachable, b backup (in sync))",
        ),
        (
            [
                row("a", "primary", "primary_only", peers={"b": {"stopped": True}}),
                unreachable_row("b"),
            ],
            Verdict.DEGRADED,
            "primary a (epoch 1) runs alone; b stopped (clean)",
        ),
        (
            # A waiting backup heard its primary stop cleanly.
            [unreachable_row("a"), row("b", "backup", "standby", peers={"a": {"stopped": True}})],
            Verdict.DOWN,
            "no node serves (a stopped (clean), b standby (waiting))",
        ),
        (
            [
                row("a", "primary", "primary_only", peers={"b": {"stopped": False}}),
                unreachable_row("b"),
            ],
            Verdict.DEGRADED,
            "primary a (epoch 1) runs alone; b unreachable",
        ),
        (
            # a dropped b while b may still believe itself in sync: a waits.
            [
                row(
                    "a",
                    "primary",
                    "primary_only",
                    backups={"b": {"held": 7, "leaving": True, "links_up": {}}},
                ),
                row("b", "backup", "standby"),
            ],
            Verdict.DEGRADED,
            "primary a (epoch 1) runs alone; b standby (waiting); waiting for b to confirm "
            "it was dropped (acknowledging nothing beyond what it holds)",
        ),
        ([unreachable_row("a"), unreachable_row("b")], Verdict.DOWN, None),
        ([row("a", "primary", "primary_only")], Verdict.DEGRADED, "primary a (epoch 1) runs alone"),
    ],
)
def test_the_verdict(rows: list[NodeStatus], verdict: Verdict, summary: str | None) -> None:
    h = classify(rows)
    assert h.verdict is verdict
    if summary is not None:
        assert h.summary == summary
    assert h.line().startswith(verdict.name.lower() + ": ")
    assert {v.value for v in Verdict} == {0, 3, 4}  # 1 and 2 stay the command's own errors


def tr(t: float, node: str, src: str, dst: str, why: str, epoch: int) -> Transition:
    return Transition(t, node, src, dst, why, epoch)


START = [
    tr(100.0, "a", "starting", "primary_only", "StartupDone", 1),
    tr(100.5, "b", "starting", "syncing", "PeerActive", 1),
    tr(100.6, "b", "syncing", "normal", "PeerActive", 1),
    tr(100.6, "a", "primary_only", "normal", "BackupsInSync", 1),
]


def test_a_failover_and_its_outage_from_the_backups_last_heartbeat() -> None:
    assert last_failover(START, {}) is None  # the first start is no failover
    took = tr(200.18, "b", "normal", "backup_only", "ClientVote", 2)
    # b last heard a as primary at epoch 1 at 200.02, polled at 201.0 (age 980 ms).
    b_row = row(
        "b",
        "primary",
        "backup_only",
        2,
        peers={"a": {"role": "primary", "epoch": 1, "heartbeat_age_ms": 980.0}},
    )
    heard = primary_last_heard([b_row], wall=201.0)
    assert heard == {("a", 1): pytest.approx(200.02)}
    f = last_failover([*START, took], {k: [t] for k, t in heard.items()})
    assert f is not None and (f.node, f.epoch, f.switchover) == ("b", 2, False)
    assert f.outage_ms == 160
    words = failover_words(f, "12:00:00.180")
    assert words == "last failover 12:00:00.180: b took over at epoch 2, 160 ms without a primary"
    # Not heard of at all (the watcher started after a came back): no outage claimed.
    g = last_failover([*START, took], {})
    assert g is not None and g.outage_ms is None
    assert "without a primary" not in failover_words(g, "t")
    assert failover_words(None, "") == "no failover seen"
    # The old primary only stalled and sent heartbeats after the takeover too:
    # only a reading from before the takeover counts.
    h = last_failover([*START, took], {("a", 1): [200.02, 200.9, 201.3]})
    assert h is not None and h.outage_ms == 160
    i = last_failover([*START, took], {("a", 1): [200.9]})
    assert i is not None and i.outage_ms is None


def test_a_note_in_the_history_is_no_takeover() -> None:
    # A node's transitions also hold notes (a start, a pause: from is to); one at
    # a new epoch whose takeover has scrolled out of the status is no failover.
    note = tr(210.0, "b", "backup_only", "backup_only", "Pause", 2)
    assert last_failover([*START, note], {}) is None


def test_a_switchover_is_measured_from_the_handover_offer() -> None:
    changes = [
        *START,
        tr(300.0, "a", "normal", "handoff", "Switchover", 1),
        tr(300.04, "b", "normal", "backup_only", "PeerActive", 2),
        tr(300.05, "a", "handoff", "fenced", "PeerActive", 2),
    ]
    f = last_failover(changes, {("a", 1): [300.03]})
    assert f is not None and f.switchover and f.outage_ms == 40
    assert failover_words(f, "t").startswith("last switchover t: b took over at epoch 2")


def test_the_watcher_keeps_the_outage_after_the_old_primary_returns() -> None:
    m = WatchModel(HB)
    a = row("a", "primary", "normal", transitions=[], peers={})
    b_sees_a = {"a": {"role": "primary", "epoch": 1, "heartbeat_age_ms": 10.0}}
    m.update([a, row("b", "backup", "normal", peers=b_sees_a)], now=1.0, wall=500.0)
    took = {"time": 500.2, "from": "normal", "to": "backup_only", "why": "ClientVote", "epoch": 2}
    first = {"time": 400.0, "from": "starting", "to": "syncing", "why": "PeerActive", "epoch": 1}
    b_wire = wire("b", "primary", "backup_only", 2, transitions=[first, took])
    b_wire["peers"] = {"a": {"role": "primary", "epoch": 1, "heartbeat_age_ms": 300.0}}
    b_now = NodeStatus.from_wire(b_wire)
    f = m.update([unreachable_row("a"), b_now], now=2.0, wall=500.3).failover
    assert f is not None and f.outage_ms == 200  # last heard at 500.0, took over at 500.2
    # a is back as b's backup: b no longer remembers a as a primary; the watcher does.
    later = dict(b_wire, state="normal", peers={"a": {"role": "backup", "epoch": 2}})
    b_later = NodeStatus.from_wire(later)
    a_back = row("a", "backup", "normal", 2, transitions=[])
    frame = m.update([a_back, b_later], now=3.0, wall=510.0)
    assert frame.failover == f
    assert frame.health.verdict is Verdict.OK


# ------------------------------------------------------------------ layout


def status_rows() -> list[NodeStatus]:
    """A pair after a takeover under load: the widest words and big numbers."""
    hb = {"links": {"main": 5.0, "failsafe": 6.0}}
    return [
        row(
            "b",
            "primary",
            "backup_only",
            12,
            last_lsn=123_456_789,
            committed_lsn=123_456_780,
            flushed_lsn=123_456_700,
            lag=None,
            replication_link=None,
            clients=64,
            counters={"requests": 0},
            pid=7,
            uptime=1.0,
            peers={"a": {"heartbeat_age_ms": 12_345.0, "role": "primary", "epoch": 11}},
        ),
        row(
            "a",
            "backup",
            "syncing",
            12,
            last_lsn=120_000_000,
            lag=3_456_789,
            clients=0,
            peers={"b": dict(hb, heartbeat_age_ms=4.0, role="primary", epoch=12)},
        ),
    ]


def rendered(width: int, rates: bool = True) -> str:
    m = WatchModel(HB)
    rows = status_rows()
    m.update(rows, now=1.0, wall=1000.0)
    later = [
        replace(r, counters={"requests": 5000}, uptime=2.0) if r.name == "b" else r for r in rows
    ]
    frame = m.update(later, now=2.0, wall=1001.0)
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(
        render(frame, "zmqfail cluster prod", width, rates=rates)
    )
    return buf.getvalue()


@pytest.mark.parametrize("width", [80, 100, 120, 160])
def test_the_view_fits_the_terminal_and_cuts_no_cell(width: int) -> None:
    text = rendered(width)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines), max(map(len, lines))
    assert "…" not in text
    b = next(line for line in lines if line.startswith("b "))
    assert "primary (alone, took over)" in b and "123456789" in b and "5000" in b
    assert "backup (syncing)" in text and "3456789" in text
    assert "DEGRADED  primary b (epoch 12) took over and runs alone; a backup (syncing)" in text
    assert ("history" in text) == (width >= HISTORY_FROM)


def test_more_columns_as_the_terminal_widens() -> None:
    from zmqfail.cli.view import node_row

    rows = [node_row(r, HB) for r in status_rows()]
    shown = {w: [c.head for c in choose_columns(rows, w, rates=True)] for w in (80, 100, 120, 160)}
    assert shown[80][:5] == ["node", "role", "epoch", "lsn", "lag"]
    for narrow, wide in ((80, 100), (100, 120), (120, 160)):
        assert set(shown[narrow]) <= set(shown[wide])
    assert {"main", "failsafe", "req/s", "clients"} <= set(shown[100])
    assert shown[160][-1] == "history" and "history" not in shown[120]
    assert "committed" not in shown[160]  # the history outranks it
    everything = [c.head for c in choose_columns(rows, 250, rates=True)]
    assert {"committed", "flushed", "state", "history"} <= set(everything)
    assert "digest" not in shown[160]  # no node reported one


def test_status_snapshot_has_no_rates_and_says_the_verdict() -> None:
    frame = snapshot(status_rows(), HB, wall=1000.0)
    assert frame.health.verdict is Verdict.DEGRADED
    buf = io.StringIO()
    Console(file=buf, width=100, color_system=None).print(render(frame, "t", 100, rates=False))
    assert "req/s" not in buf.getvalue() and "history" not in buf.getvalue()
