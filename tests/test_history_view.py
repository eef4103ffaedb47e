"""The failover history without a cluster: the file (append, bounded by
rotation, a torn line skipped and counted), the lines `zmqfail history`
prints, and paused nodes in the operator's words and verdict. Then the
command itself on stopped nodes' data dirs, and its one-line errors."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import click
import pytest
from conftest import run_zmqfail

from zmqfail import config
from zmqfail.cli import failovercmd
from zmqfail.cli.health import Verdict, classify, role_words
from zmqfail.cli.historyview import lines, merged, quarantine_lines
from zmqfail.core.journal import SetAside, StateChange, decode_all
from zmqfail.core.status import NodeStatus
from zmqfail.errors import ProtocolError, Unavailable, ZmqfailError
from zmqfail.failover.state import Role, State
from zmqfail.txlog import histfile

pytestmark = pytest.mark.timeout(60)

TAKEOVER = {
    "time": 1000.25,
    "node": "b",
    "from": "normal",
    "to": "backup_only",
    "from_role": "backup",
    "to_role": "primary",
    "epoch": 2,
    "why": "PrimaryGone",
    "took_over_from": "a",
    "outage_ms": 612,
}
CUT = {
    "time": 1003.0,
    "node": "a",
    "from": "fenced",
    "to": "fenced",
    "from_role": "backup",
    "to_role": "backup",
    "epoch": 2,
    "why": "set aside 3 records (diverged from b)",
    "records": 3,
    "acknowledged_here": 2,
    "quarantined": 3,
    "first_lsn": 41,
    "last_lsn": 43,
    "file": "/d/a/quarantine/x",
}


# ------------------------------------------------------------------ the file
def test_entries_come_back_in_order(tmp_path: Path) -> None:
    assert histfile.read(tmp_path).entries == []
    for i in range(3):
        histfile.append(tmp_path, {"why": f"e{i}", "time": i})
    assert [e["why"] for e in histfile.read(tmp_path).entries] == ["e0", "e1", "e2"]


def test_the_file_is_bounded_by_rotation_and_keeps_the_newest(tmp_path: Path) -> None:
    line = len(histfile.encode({"why": "e000"}))
    for i in range(100):
        histfile.append(tmp_path, {"why": f"e{i:03d}"}, max_bytes=10 * line)
    got = [e["why"] for e in histfile.read(tmp_path).entries]
    assert got == [f"e{i:03d}" for i in range(80, 100)]  # two files of 10 lines
    sizes = [p.stat().st_size for p in tmp_path.iterdir()]
    assert sorted(p.name for p in tmp_path.iterdir()) == [histfile.OLD, histfile.NAME]
    assert max(sizes) <= 10 * line


def test_a_torn_last_line_is_skipped_and_counted(tmp_path: Path) -> None:
    histfile.append(tmp_path, {"why": "whole"})
    with open(tmp_path / histfile.NAME, "ab") as f:
        f.write(b'{"why": "torn')  # a crash in the middle of an append
    got = histfile.read(tmp_path)
    assert ([e["why"] for e in got.entries], got.bad_lines) == (["whole"], 1)
    histfile.append(tmp_path, {"why": "after"})  # starts a line of its own
    got = histfile.read(tmp_path)
    assert ([e["why"] for e in got.entries], got.bad_lines) == (["whole", "after"], 1)


# ------------------------------------------------------------- the entries
def entry(wire: dict[str, Any], **more: Any) -> StateChange:
    return replace(StateChange.from_wire(wire), **more)


def test_an_entry_with_every_field_goes_to_the_file_and_comes_back() -> None:
    e = StateChange(
        5.5,
        State.NORMAL,
        State.BACKUP_ONLY,
        "Promote --force",
        3,
        node="b",
        src_role=Role.BACKUP,
        dst_role=Role.PRIMARY,
        lsn=40,
        took_over_from="a",
        outage_ms=612,
        may_lack_records=True,
        primary="a",
        paused=True,
        set_aside=SetAside(3, 41, 43, "/d/q", 2),
        quarantined=7,
        error="disk full",
    )
    # Every field is set, so one that to_wire or from_wire forgets fails here.
    bare = StateChange(0.0, State.STARTING, State.STARTING, "", 0)
    unset = [f.name for f in fields(e) if getattr(e, f.name) == getattr(bare, f.name)]
    assert unset == [], unset
    wire = json.loads(histfile.encode(e.to_wire()))
    assert wire["from_role"] == "backup" and wire["records"] == 3
    assert StateChange.from_wire(wire) == e
    # Only what says something is written: a plain change is a short line.
    plain = StateChange(1.0, State.NORMAL, State.HANDOFF, "Switchover", 1)
    assert plain.to_wire() == {
        "time": 1.0,
        "from": "normal",
        "to": "handoff",
        "why": "Switchover",
        "epoch": 1,
    }
    assert plain.changed and not entry(CUT).changed


BAD_ENTRIES: list[tuple[dict[str, Any], str]] = [
    ({**TAKEOVER, "to": "leading"}, "unknown history entry to 'leading'"),
    ({**TAKEOVER, "to_role": "boss"}, "unknown history entry to_role 'boss'"),
    ({**TAKEOVER, "outage_ms": "612"}, "history entry outage_ms must be an integer"),
    ({**TAKEOVER, "may_lack_records": 1}, "may_lack_records must be true or false"),
    ({**CUT, "file": None}, "sets 3 records aside without their lsns or file"),
    ({"why": "filler"}, "unknown history entry from None"),
]


@pytest.mark.parametrize(("wire", "why"), BAD_ENTRIES, ids=[w for _, w in BAD_ENTRIES])
def test_a_bad_entry_is_a_clear_protocol_error(wire: dict[str, Any], why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        StateChange.from_wire(wire)
    good, bad = decode_all([TAKEOVER, wire], "history entry")
    assert good == [StateChange.from_wire(TAKEOVER)] and len(bad) == 1 and why in bad[0]


# --------------------------------------------------------------- the words
def test_history_lines_merge_nodes_by_time_and_say_what_happened() -> None:
    a_start = entry(
        TAKEOVER,
        time=999.0,
        node="",  # named by the node whose history it is
        why="started",
        src=State.STARTING,
        dst=State.STARTING,
        dst_role=Role.BACKUP,
        took_over_from=None,
        outage_ms=None,
    )
    entries = merged({"a": [a_start, entry(CUT)], "b": [entry(TAKEOVER)]})
    assert [(e.node, e.why) for e in entries] == [
        ("a", "started"),
        ("b", "PrimaryGone"),
        ("a", CUT["why"]),
    ]
    out = lines(entries)
    assert out[0].split() == ["time", "node", "change", "epoch", "why"]
    assert "backup/starting  " in out[1] and "->" not in out[1]
    assert "backup/normal -> primary/backup_only" in out[2]
    assert out[2].endswith("PrimaryGone (took over from a, 612 ms after it was last heard)")
    assert out[3].endswith(
        "set aside 3 records (diverged from b) (lsn 41..43, 2 acknowledged here, in "
        "/d/a/quarantine/x; 3 records in quarantine in all)"
    )
    assert lines([]) == ["no failover history yet"]


def test_a_forced_promote_says_it_may_lack_records() -> None:
    e = entry(TAKEOVER, why="Promote --force", may_lack_records=True, outage_ms=None)
    assert lines([e])[1].endswith(
        "Promote --force (took over from a; may lack records its peers acknowledged)"
    )


def test_quarantine_totals_per_node() -> None:
    other = entry(TAKEOVER, why="x", node="a")
    assert quarantine_lines({"a": [entry(CUT), other], "b": [entry(TAKEOVER)]}) == [
        "a: 3 records set aside in quarantine (held by no other server; `zmqfail log dump "
        "--data-dir` on the directory named above reads them)"
    ]


def test_paused_nodes_are_named_and_the_cluster_is_not_protected() -> None:
    a = NodeStatus("a", Role.PRIMARY, State.NORMAL, epoch=1, lag=0)
    b = NodeStatus("b", Role.BACKUP, State.NORMAL, epoch=1)
    assert classify([a, b]).verdict is Verdict.OK
    b_paused = replace(b, failover_paused=True)
    assert role_words(b_paused) == "backup (in sync), failover paused"
    h = classify([a, b_paused])
    assert h.verdict is Verdict.DEGRADED
    assert h.summary == (
        "primary a (epoch 1); backup b in sync; automatic failover paused on b (zmqfail resume)"
    )


# ---------------------------------------------------------- the command
def write_history(data_dir: Path, entries: list[dict[str, Any]]) -> None:
    data_dir.mkdir(parents=True)
    for e in entries:
        histfile.append(data_dir, e)


def test_history_reads_the_data_dirs_of_stopped_nodes(
    cluster_dir: Callable[..., Path],
) -> None:
    path = cluster_dir()
    cfg = config.load(path)
    write_history(cfg.node("a").data_dir, [CUT])
    write_history(cfg.node("b").data_dir, [TAKEOVER])
    r = run_zmqfail("history", "--config", str(path))
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert "PrimaryGone" in out[1] and "set aside 3 records" in out[2]
    assert out[-1].startswith("a: 3 records set aside in quarantine")
    r = run_zmqfail("history", "--config", str(path), "--node", "b", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == [TAKEOVER]
    r = run_zmqfail("history", "--config", str(path), "--json", "--last", "1")
    assert [e["why"] for e in json.loads(r.stdout)] == [CUT["why"]]


def test_history_of_a_node_neither_here_nor_answering_is_one_line(
    cluster_dir: Callable[..., Path],
) -> None:
    path = cluster_dir()
    cfg = config.load(path)
    write_history(cfg.node("a").data_dir, [CUT])
    r = run_zmqfail("history", "--config", str(path))
    assert r.returncode == 1
    assert "set aside 3 records" in r.stdout  # what could be read is shown
    (err,) = r.stderr.splitlines()
    assert err.startswith("zmqfail: error: b: no data dir here (") and "no answer" in err
    r = run_zmqfail("history", "--config", str(path), "--node", "zz")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no node named 'zz'" in r.stderr


def test_pause_with_every_node_down_is_one_line_naming_them(
    cluster_dir: Callable[..., Path],
) -> None:
    path = cluster_dir()
    r = run_zmqfail("pause", "--config", str(path))
    assert r.returncode == 1 and r.stdout == ""
    (err,) = r.stderr.splitlines()
    assert err.startswith("zmqfail: error: not paused on a (") and ", b (" in err
    assert not any(p.exists() for p in path.parent.rglob("meta.zfm"))  # nothing written
    assert os.listdir(path.parent) == ["zmqfail.toml"]


def test_pause_asks_every_node_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead node costs `pause` one timeout, not one per node: each ask
    waits here until the other is under way too (asked one after the
    other, the first would wait in vain and the barrier break)."""
    cfg = config.load_default()  # two nodes, a and b
    both = threading.Barrier(2, timeout=10)

    def ask(node: config.NodeConfig, command: str, args: dict[str, Any]) -> dict[str, Any]:
        both.wait()
        if node.name == "b":
            raise Unavailable("no answer from b")
        return {"role": "primary", "state": "normal"}

    monkeypatch.setattr(failovercmd, "ask", ask)
    echoed: list[str] = []
    monkeypatch.setattr(click, "echo", echoed.append)
    with pytest.raises(ZmqfailError, match=r"not paused on b \(no answer from b\)"):
        failovercmd._everywhere(list(cfg.nodes), "pause", "paused")
    assert echoed == ["a: automatic failover paused (primary/normal)"]
