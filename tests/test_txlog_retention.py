"""The audit trail (issue 13.9): retention of log segments a snapshot covers
(archive / keep / drop after N days), reading the archive with `log dump`
(--from-lsn/--to-lsn) and `log verify`, and the [retention] config section."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import StartNode

from zmqfail import config
from zmqfail.cli.logcmd import log_group
from zmqfail.errors import ConfigError
from zmqfail.runcheck import trail_complete
from zmqfail.txlog.frames import list_segments, log_dir
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.recovery import iter_records, recover, verify
from zmqfail.txlog.retention import (
    ARCHIVE_DIRNAME,
    REPLACED_DIRNAME,
    Retention,
    RetentionPolicy,
    retirable,
)
from zmqfail.txlog.segments import DiskLog
from zmqfail.txlog.snapshot import write_snapshot

pytestmark = pytest.mark.timeout(60)

ARCHIVE = Retention(RetentionPolicy.ARCHIVE)
KEEP = Retention(RetentionPolicy.KEEP)
DAY = 86400.0


def rec(lsn: int) -> bytes:
    return TxRecord(lsn, 1, f"c{lsn % 3}", lsn, {"op": "new", "n": lsn}, [], "ok", {}).encode()


def write_log(d: Path, first: int, last: int, segment_bytes: int = 300) -> None:
    log = DiskLog(d, segment_bytes, first)
    for lsn in range(first, last + 1):
        log.append(lsn, rec(lsn))
        b = log.take()
        assert b is not None
        log.write(b, sync=True)
    log.close()


def snapshots(d: Path, lsns: tuple[int, ...], retention: Retention) -> None:
    for lsn in lsns:
        write_snapshot(d, lsn, 1, {"at": lsn}, retention)


def lsns(d: Path, **kw: object) -> list[int]:
    return [lsn for lsn, _ in iter_records(d, **kw)]  # type: ignore[arg-type]


# --- the pure decision ----------------------------------------------------


def test_retirable_counts_covered_segments_oldest_first_never_the_newest() -> None:
    segs = [(1, 0.0), (11, 0.0), (21, 0.0), (31, 0.0)]
    assert retirable(segs, 0, ARCHIVE, DAY) == 0
    assert retirable(segs, 9, ARCHIVE, DAY) == 0  # lsn 10 is not covered yet
    assert retirable(segs, 10, ARCHIVE, DAY) == 1
    assert retirable(segs, 30, ARCHIVE, DAY) == 3
    assert retirable(segs, 10**9, ARCHIVE, DAY) == 3  # the newest stays
    assert retirable(segs, 10**9, KEEP, DAY) == 0


def test_drop_waits_for_the_age_and_stops_at_the_first_young_segment() -> None:
    drop2 = Retention(RetentionPolicy.DROP, drop_after_days=2)
    now = 10 * DAY
    segs = [(1, now - 5 * DAY), (11, now - 3 * DAY), (21, now - 1 * DAY), (31, now - 4 * DAY)]
    assert retirable(segs, 10**9, drop2, now) == 2
    assert retirable(segs, 10**9, Retention(RetentionPolicy.DROP), now) == 3  # 0 days: at once


# --- the policies on disk -------------------------------------------------


def test_archive_policy_keeps_every_record_readable(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 60)
    snapshots(tmp_path, (20, 40, 55), ARCHIVE)
    live = list_segments(log_dir(tmp_path))
    archived = list_segments(tmp_path / ARCHIVE_DIRNAME)
    assert archived and live[0].first_lsn > 1
    assert live[0].first_lsn <= 41  # recovery still has the log from the older snapshot
    assert archived[-1].first_lsn < live[0].first_lsn
    assert lsns(tmp_path) == list(range(1, 61))
    assert lsns(tmp_path, include_archive=False)[0] == live[0].first_lsn
    r = recover(tmp_path)  # recovery reads only the live log
    assert r.snapshot is not None and r.snapshot.lsn == 55 and r.last_lsn == 60
    rep = verify(tmp_path)
    assert rep.ok, rep.problems
    assert rep.archived_segments == len(archived) and rep.first_lsn == 1
    assert rep.archived_records + rep.records == 60


def test_keep_policy_leaves_the_log_alone(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 60)
    before = [s.path.name for s in list_segments(log_dir(tmp_path))]
    snapshots(tmp_path, (20, 40, 55), KEEP)
    assert [s.path.name for s in list_segments(log_dir(tmp_path))] == before
    assert not (tmp_path / ARCHIVE_DIRNAME).exists()
    assert recover(tmp_path).last_lsn == 60


def test_drop_policy_deletes_old_covered_segments_only(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 60)
    segs = list_segments(log_dir(tmp_path))
    old = time.time() - 3 * DAY
    for s in segs[:2]:
        os.utime(s.path, (old, old))
    snapshots(tmp_path, (50, 55), Retention(RetentionPolicy.DROP, drop_after_days=2))
    assert [s.path for s in list_segments(log_dir(tmp_path))] == [s.path for s in segs[2:]]
    assert not (tmp_path / ARCHIVE_DIRNAME).exists()
    assert lsns(tmp_path)[0] == segs[2].first_lsn


def test_archive_on_another_file_system(tmp_path: Path) -> None:
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    other = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="zmqfail-archive-"))
    try:
        write_log(tmp_path, 1, 60)
        snapshots(tmp_path, (20, 40, 55), Retention(RetentionPolicy.ARCHIVE, other))
        assert list_segments(other)
        assert not list(other.glob(".*"))  # no temp file left
        assert lsns(tmp_path, archive=other) == list(range(1, 61))
    finally:
        shutil.rmtree(other)


def test_archiving_a_segment_twice_keeps_the_older_copy_as_evidence(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 60)
    first = list_segments(log_dir(tmp_path))[0].path
    arch = tmp_path / ARCHIVE_DIRNAME
    arch.mkdir()
    (arch / first.name).write_bytes(b"an older history")  # same name, other content
    same = list_segments(log_dir(tmp_path))[1].path
    shutil.copyfile(same, arch / same.name)  # a move that died before its unlink
    snapshots(tmp_path, (40, 55), ARCHIVE)
    replaced = list((arch / REPLACED_DIRNAME).iterdir())
    assert [p.read_bytes() for p in replaced] == [b"an older history"]
    assert replaced[0].name.startswith(first.name + ".")
    assert lsns(tmp_path) == list(range(1, 61))


def test_gaps_in_the_archive_are_notes_not_errors(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 60)
    snapshots(tmp_path, (20, 40, 55), ARCHIVE)
    archived = list_segments(tmp_path / ARCHIVE_DIRNAME)
    assert len(archived) >= 3
    archived[1].path.unlink()  # history this server never had
    notes: list[str] = []
    got = [lsn for lsn, _ in iter_records(tmp_path, on_gap=notes.append)]
    missing = range(archived[1].first_lsn, archived[2].first_lsn)
    assert got == [n for n in range(1, 61) if n not in missing]
    assert len(notes) == 1 and f"lsn {missing[0]}..{missing[-1]}" in notes[0]
    rep = verify(tmp_path)
    assert rep.ok and any("archive lacks" in w for w in rep.warnings)


def test_damage_in_the_archive_is_a_verify_problem(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 60)
    snapshots(tmp_path, (20, 40, 55), ARCHIVE)
    seg = list_segments(tmp_path / ARCHIVE_DIRNAME)[0].path
    data = bytearray(seg.read_bytes())
    data[40] ^= 0xFF
    seg.write_bytes(bytes(data))
    rep = verify(tmp_path)
    assert not rep.ok and any(str(seg) in p for p in rep.problems)
    assert recover(tmp_path).last_lsn == 60  # the node still starts: recovery does not need it


# --- log dump / verify -------------------------------------------------------


@pytest.fixture
def archived_dir(tmp_path: Path) -> Path:
    write_log(tmp_path, 1, 60)
    snapshots(tmp_path, (20, 40, 55), ARCHIVE)
    return tmp_path


def dump(*args: str) -> tuple[int, list[str], str]:
    res = CliRunner().invoke(log_group, ["dump", *args])
    return res.exit_code, res.stdout.splitlines(), res.stderr


def test_dump_shows_every_order_ever_processed(archived_dir: Path) -> None:
    code, lines, _err = dump("--data-dir", str(archived_dir), "--json")
    assert code == 0
    assert [json.loads(line)["lsn"] for line in lines] == list(range(1, 61))


def test_dump_from_and_to_lsn_across_archive_and_log(archived_dir: Path) -> None:
    live_first = list_segments(log_dir(archived_dir))[0].first_lsn
    lo, hi = 3, live_first + 2
    code, lines, _ = dump(
        "--data-dir", str(archived_dir), "--from-lsn", str(lo), "--to-lsn", str(hi)
    )
    assert code == 0
    assert [int(line.split()[0]) for line in lines] == list(range(lo, hi + 1))
    code, lines, _ = dump("--data-dir", str(archived_dir), "--no-archive")
    assert int(lines[0].split()[0]) == live_first


def test_dump_with_archive_elsewhere(tmp_path: Path) -> None:
    d = tmp_path / "node"
    elsewhere = tmp_path / "vault"
    write_log(d, 1, 60)
    snapshots(d, (20, 40, 55), Retention(RetentionPolicy.ARCHIVE, elsewhere))
    _, lines, _ = dump("--data-dir", str(d))
    assert int(lines[0].split()[0]) > 1  # without the archive, history is short
    _, lines, _ = dump("--data-dir", str(d), "--archive-dir", str(elsewhere))
    assert int(lines[0].split()[0]) == 1 and len(lines) == 60
    res = CliRunner().invoke(
        log_group, ["verify", "--data-dir", str(d), "--archive-dir", str(elsewhere)]
    )
    assert res.exit_code == 0 and "lsn 1..60" in res.output and "OK" in res.output


def test_verify_and_dump_refuse_a_directory_without_zmqfail_data(tmp_path: Path) -> None:
    (tmp_path / "something.txt").write_text("not ours")
    for cmd in ("verify", "dump"):
        res = CliRunner().invoke(log_group, [cmd, "--data-dir", str(tmp_path)])
        assert res.exit_code == 1
        assert res.stderr.count("\n") == 1 and "holds no zmqfail data" in res.stderr
        assert "OK" not in res.stdout


# --- the [retention] config section -------------------------------------------


def load(extra: str, tmp: Path) -> config.ClusterConfig:
    return config.loads(config.render(2, 5700) + extra, tmp)


def test_default_is_archive_under_each_data_dir(tmp_path: Path) -> None:
    cfg = config.loads(replace_section(None), tmp_path)  # a config without the section
    assert cfg.retention.policy is RetentionPolicy.ARCHIVE
    r = cfg.retention.for_node(cfg.node("b"))
    assert r.archive(cfg.node("b").data_dir) == tmp_path / "b" / ARCHIVE_DIRNAME
    assert config.loads(config.render(2, 5700), tmp_path).retention == cfg.retention


def replace_section(body: str | None) -> str:
    """The rendered config with [retention] holding `body` (None: no such table)."""
    head, _sep, tail = config.render(2, 5700).partition("[retention]")
    rest = tail.split("\n\n", 1)[1]
    table = "" if body is None else "[retention]\n" + body + "\n"
    return head + table + rest


def test_retention_section_is_parsed(tmp_path: Path) -> None:
    cfg = config.loads(replace_section('policy = "drop"\ndrop_after_days = 30\n'), tmp_path)
    r = cfg.retention.for_node(cfg.node("a"))
    assert r.policy is RetentionPolicy.DROP and r.drop_after_days == 30
    cfg = config.loads(
        replace_section('policy = "archive"\narchive_dir = "/srv/audit"\n'), tmp_path
    )
    assert cfg.retention.for_node(cfg.node("a")).archive_dir == Path("/srv/audit/a")
    assert cfg.retention.for_node(cfg.node("b")).archive_dir == Path("/srv/audit/b")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('policy = "shred"\n', "policy must be one of keep, archive, drop"),
        ("policy = 1\n", "policy must be one of"),
        ('policy = "drop"\ndrop_after_days = -1\n', "drop_after_days must be a whole number"),
        ('policy = "drop"\ndrop_after_days = 1.5\n', "drop_after_days must be a whole number"),
        ('policy = "archive"\ndrop_after_days = 3\n', 'only applies with policy = "drop"'),
        ('archive_dir = ""\n', "archive_dir must be a path"),
        ("keep_days = 3\n", "unknown key(s) keep_days"),
    ],
)
def test_bad_retention_section_is_refused(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.loads(replace_section(body), tmp_path)
    assert message in str(info.value) and "[retention]" in str(info.value)


# --- a node archiving while it runs ------------------------------------------------


@pytest.fixture
def small_segments(cluster_dir: Callable[..., Path]) -> Iterator[config.ClusterConfig]:
    path = cluster_dir(flush__snapshot_every_records=40, flush__segment_bytes=2048)
    yield config.load(path)


def test_a_running_node_archives_and_dump_shows_all(
    small_segments: config.ClusterConfig, node_threads: StartNode
) -> None:
    from conftest import Load, wait_for

    cfg = small_segments
    nt = node_threads(cfg, "a")
    nt.wait_active()
    load = Load(cfg)
    from zmqfail.client.control import node_status

    def snapshots() -> int:
        return node_status(cfg.node("a"), digest=False).counters.get("snapshots", 0)

    wait_for(lambda: snapshots() >= 4, 30, "four snapshots")
    load.stop()
    nt.stop()
    d = cfg.node("a").data_dir
    assert list_segments(d / ARCHIVE_DIRNAME), "nothing was archived"
    got = lsns(d)
    assert got == list(range(1, len(got) + 1)) and len(got) >= load.count()
    clients = {TxRecord.decode(p).msg_id for _lsn, p in iter_records(d)}
    assert set(load.acked) <= clients  # every acknowledged order is in the audit trail


def test_a_trail_is_complete_only_from_lsn_1_without_a_gap(tmp_path: Path) -> None:
    """What the run checker asks before it calls a write missing from a
    node's log lost: whether the log and archive reach back to LSN 1 with
    nothing skipped (else the write may be inside a snapshot it caught up
    from, and is only unverified)."""
    whole, late, gappy = tmp_path / "whole", tmp_path / "late", tmp_path / "gappy"
    for d in (whole, gappy):
        write_log(d, 1, 60)
        snapshots(d, (20, 40, 55), ARCHIVE)
    write_log(late, 30, 60)
    archived = list_segments(gappy / ARCHIVE_DIRNAME)
    archived[1].path.unlink()
    assert trail_complete(whole, 55) and trail_complete(whole, 60)
    assert not trail_complete(whole, 61)  # it does not reach there
    assert not trail_complete(late, 55)
    assert not trail_complete(gappy, 55)
    assert trail_complete(gappy, archived[1].first_lsn - 1)  # before the gap
