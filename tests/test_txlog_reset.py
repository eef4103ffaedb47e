"""`zmqfail log reset`: damaged files set aside, metadata marked so the node
may not lead and must resync, refusals of a running node's or an empty dir."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from zmqfail.cli.logcmd import log_group
from zmqfail.errors import ZmqfailError
from zmqfail.txlog.frames import list_segments, log_dir
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.recovery import recover
from zmqfail.txlog.reset import reset_data_dir
from zmqfail.txlog.segments import DiskLog
from zmqfail.txlog.snapshot import read_meta, snap_dir, write_meta, write_snapshot

pytestmark = pytest.mark.timeout(30)


def make_node_dir(d: Path, n: int = 10) -> None:
    log = DiskLog(d, 1 << 20, 1)
    for lsn in range(1, n + 1):
        log.append(lsn, TxRecord(lsn, 4, "c", lsn, {}, [], "ok", {}).encode())
    b = log.take()
    assert b is not None
    log.write(b, sync=True)
    log.close()
    write_snapshot(d, 5, 4, {"x": 1})
    write_meta(d, {"epoch": 4, "node": "b", "cluster": "t", "active": True, "resync": False})


def test_reset_moves_log_and_snapshots_aside_and_marks_meta(tmp_path: Path) -> None:
    make_node_dir(tmp_path)
    meta = read_meta(tmp_path)
    write_meta(tmp_path, {**meta, "added_by_the_lead": [1, 2]})
    seg_bytes = list_segments(log_dir(tmp_path))[0].path.read_bytes()
    res = reset_data_dir(tmp_path, now=0.0)
    assert res.aside == tmp_path / "damaged-19700101T000000Z"
    assert res.moved == ("log", "snap", "copy of meta.zfm")
    assert (res.aside / "log" / f"seg-{1:020d}.zfl").read_bytes() == seg_bytes
    assert (res.aside / "snap" / f"snap-{5:020d}.zfs").exists()
    assert not log_dir(tmp_path).exists() and not snap_dir(tmp_path).exists()
    new = read_meta(tmp_path)
    assert new == {
        "epoch": 4,  # kept
        "node": "b",
        "cluster": "t",
        "active": False,  # may not lead
        "resync": True,  # must throw its log away before following
        "added_by_the_lead": [1, 2],  # keys it does not know survive
    }
    assert read_meta(res.aside) == {**meta, "added_by_the_lead": [1, 2]}  # evidence
    r = recover(tmp_path)
    assert r.last_lsn == 0 and r.epoch == 4 and r.meta["resync"] is True
    # A second reset the same second does not overwrite the first.
    assert reset_data_dir(tmp_path, now=0.0).aside.name == "damaged-19700101T000000Z-1"


def test_reset_with_unreadable_meta_still_sets_the_node_aside(tmp_path: Path) -> None:
    make_node_dir(tmp_path)
    (tmp_path / "meta.zfm").write_bytes(b"garbage")
    res = reset_data_dir(tmp_path)
    assert "unreadable" in res.meta_note and res.epoch == 0
    assert read_meta(tmp_path) == {"epoch": 0, "active": False, "resync": True}
    assert (res.aside / "meta.zfm").read_bytes() == b"garbage"


def test_reset_refuses_a_running_nodes_dir(tmp_path: Path) -> None:
    make_node_dir(tmp_path)
    (tmp_path / "node.pid").write_text("4242\n")
    fd = os.open(tmp_path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running node holds
    try:
        with pytest.raises(ZmqfailError, match=r"in use by a running node \(pid 4242\)"):
            reset_data_dir(tmp_path)
    finally:
        os.close(fd)
    assert log_dir(tmp_path).exists() and read_meta(tmp_path)["active"] is True


def test_reset_refuses_a_dir_without_zmqfail_data(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ZmqfailError, match="holds no zmqfail data"):
        reset_data_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_cli_reset_says_what_to_do_next(tmp_path: Path) -> None:
    make_node_dir(tmp_path)
    res = CliRunner().invoke(log_group, ["reset", "--data-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "moved log, snap, copy of meta.zfm to" in res.output
    assert "start the node while its peer serves" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(log_group, ["reset", "--data-dir", str(empty)])
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and "holds no zmqfail data" in res.stderr
