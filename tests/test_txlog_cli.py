"""verify() reports and the `log dump` / `log verify` commands (read-only)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import run_zmqfail

from zmqfail.cli.logcmd import log_group
from zmqfail.txlog.frames import list_segments, log_dir
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.recovery import iter_records, verify
from zmqfail.txlog.segments import DiskLog
from zmqfail.txlog.snapshot import write_snapshot

pytestmark = pytest.mark.timeout(30)

KEYS = {"lsn", "epoch", "client_id", "msg_id", "body", "status", "result", "changes"}


def rec(lsn: int) -> TxRecord:
    client = "" if lsn == 1 else f"client-{lsn % 3}"
    body = {"op": "new_order", "sym": "ABC", "qty": lsn, "raw": b"\x01\x02"}
    return TxRecord(lsn, 2, client, 100 + lsn, body, [["book", "ABC", lsn]], "ok", {"oid": lsn})


def make_log(data_dir: Path, n: int, segment_bytes: int = 1 << 20) -> list[TxRecord]:
    log = DiskLog(data_dir, segment_bytes, 1)
    out = []
    for lsn in range(1, n + 1):
        r = rec(lsn)
        out.append(r)
        log.append(lsn, r.encode())
        if lsn % 4 == 0:
            b = log.take()
            assert b is not None
            log.write(b, sync=True)
    b = log.take()
    if b is not None:
        log.write(b, sync=True)
    log.close()
    return out


def tree_digest(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


def last_seg(d: Path) -> Path:
    return list_segments(log_dir(d))[-1].path


def test_verify_clean(tmp_path: Path) -> None:
    make_log(tmp_path, 30, segment_bytes=1000)
    write_snapshot(tmp_path, 10, 2, {"x": 1})
    rep = verify(tmp_path)
    assert rep.ok and rep.problems == [] and rep.warnings == []
    assert (rep.snapshot_lsn, rep.first_lsn, rep.last_lsn, rep.records) == (10, 1, 30, 30)
    assert rep.segments > 1 and rep.torn_tail_bytes == 0


def test_verify_torn_tail_is_a_warning_and_changes_nothing(tmp_path: Path) -> None:
    make_log(tmp_path, 10)
    seg = last_seg(tmp_path)
    with open(seg, "r+b") as f:
        f.truncate(seg.stat().st_size - 4)
    before = tree_digest(tmp_path)
    rep = verify(tmp_path)
    assert rep.ok and rep.torn_tail_bytes > 0 and len(rep.warnings) == 1
    assert rep.last_lsn == 9 and rep.records == 9
    assert tree_digest(tmp_path) == before


def test_verify_corruption_is_a_problem(tmp_path: Path) -> None:
    make_log(tmp_path, 10)
    seg = last_seg(tmp_path)
    data = bytearray(seg.read_bytes())
    data[60] ^= 0xFF
    seg.write_bytes(bytes(data))
    rep = verify(tmp_path)
    assert not rep.ok and any("crc" in p for p in rep.problems)


def test_verify_checks_payload_decodes_with_matching_lsn(tmp_path: Path) -> None:
    log = DiskLog(tmp_path, 1 << 20, 1)
    log.append(1, rec(1).encode())
    log.append(2, rec(7).encode())  # frame lsn 2 holds record lsn 7
    log.append(3, b"not msgpack \xc1")
    b = log.take()
    assert b is not None
    log.write(b, sync=True)
    log.close()
    rep = verify(tmp_path)
    assert not rep.ok and len(rep.problems) == 2
    assert "lsn 7" in rep.problems[0] and "lsn 3" in rep.problems[1]


def test_verify_reports_bad_snapshot(tmp_path: Path) -> None:
    make_log(tmp_path, 5)
    p = write_snapshot(tmp_path, 3, 1, {})
    p.write_bytes(p.read_bytes()[:-1])
    rep = verify(tmp_path)
    assert not rep.ok and rep.snapshot_lsn is None and "newest" in rep.problems[0]


def test_cli_dump_json(tmp_path: Path) -> None:
    recs = make_log(tmp_path, 12, segment_bytes=600)
    before = tree_digest(tmp_path)
    res = CliRunner().invoke(log_group, ["dump", "--data-dir", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert len(lines) == 12
    objs = [json.loads(line) for line in lines]
    assert all(set(o) == KEYS for o in objs)
    assert [o["lsn"] for o in objs] == list(range(1, 13))
    assert objs[4]["client_id"] == recs[4].client_id and objs[4]["changes"] == [["book", "ABC", 5]]
    assert objs[4]["body"]["raw"] == "0102"
    assert tree_digest(tmp_path) == before


def test_cli_dump_text_from_lsn(tmp_path: Path) -> None:
    make_log(tmp_path, 12)
    res = CliRunner().invoke(log_group, ["dump", "--data-dir", str(tmp_path), "--from-lsn", "10"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert len(lines) == 3
    assert lines[0].split()[0] == "10" and "client-1#110" in lines[0] and " ok " in lines[0]


def test_cli_dump_stops_before_torn_tail(tmp_path: Path) -> None:
    make_log(tmp_path, 6)
    seg = last_seg(tmp_path)
    with open(seg, "ab") as f:
        f.write(b"\x10\x00\x00")
    before = tree_digest(tmp_path)
    res = CliRunner().invoke(log_group, ["dump", "--data-dir", str(tmp_path), "--json"])
    assert res.exit_code == 0
    assert len(res.stdout.splitlines()) == 6
    assert "torn tail" in res.stderr
    assert tree_digest(tmp_path) == before


def test_cli_dump_corruption_is_one_line_error(tmp_path: Path) -> None:
    make_log(tmp_path, 6)
    seg = last_seg(tmp_path)
    data = bytearray(seg.read_bytes())
    data[40] ^= 0xFF
    seg.write_bytes(bytes(data))
    res = CliRunner().invoke(log_group, ["dump", "--data-dir", str(tmp_path)])
    assert res.exit_code != 0
    assert res.exception is None or isinstance(res.exception, SystemExit)
    err = res.stderr.strip().splitlines()
    assert (
        len(err) == 1 and str(seg) in err[0] and "offset 20" in err[0]
    )  # first frame, right after the 20-byte header


def test_cli_missing_dir(tmp_path: Path) -> None:
    for cmd in ("dump", "verify"):
        res = CliRunner().invoke(log_group, [cmd, "--data-dir", str(tmp_path / "nope")])
        assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
        assert "does not exist" in res.stderr and "Traceback" not in res.output


def test_cli_verify_exit_codes(tmp_path: Path) -> None:
    make_log(tmp_path, 8)
    res = CliRunner().invoke(log_group, ["verify", "--data-dir", str(tmp_path)])
    assert res.exit_code == 0 and "8 record(s)" in res.output and "OK" in res.output
    seg = last_seg(tmp_path)
    data = bytearray(seg.read_bytes())
    data[40] ^= 0xFF
    seg.write_bytes(bytes(data))
    before = tree_digest(tmp_path)
    res = CliRunner().invoke(log_group, ["verify", "--data-dir", str(tmp_path)])
    assert res.exit_code == 1 and "PROBLEM" in res.output and "DAMAGED" in res.output
    assert tree_digest(tmp_path) == before


def test_iter_records_matches_and_skips(tmp_path: Path) -> None:
    recs = make_log(tmp_path, 20, segment_bytes=500)
    got = list(iter_records(tmp_path))
    assert [lsn for lsn, _ in got] == list(range(1, 21))
    assert [TxRecord.decode(p) for _, p in got] == recs
    assert [lsn for lsn, _ in iter_records(tmp_path, from_lsn=15)] == [15, 16, 17, 18, 19, 20]


def test_cli_dump_undecodable_record_is_one_line_error(tmp_path: Path) -> None:
    log = DiskLog(tmp_path, 1 << 20, 1)
    log.append(1, rec(1).encode())
    log.append(2, b"\xc1garbage")
    b = log.take()
    assert b is not None
    log.write(b, sync=True)
    log.close()
    res = CliRunner().invoke(log_group, ["dump", "--data-dir", str(tmp_path), "--json"])
    assert res.exit_code == 1
    assert len(res.stdout.splitlines()) == 1
    assert res.stderr.startswith("zmqfail: error: lsn 2: undecodable record")


def test_dump_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`log dump | head` stops like a Unix tool, without blaming the data dir."""
    import subprocess
    import sys

    make_log(tmp_path, 3000)
    dump = subprocess.Popen(
        [sys.executable, "-m", "zmqfail", "log", "dump", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert dump.stdout is not None and dump.stderr is not None
    first = dump.stdout.readline()
    dump.stdout.close()  # what `head -1` does after its line
    err = dump.stderr.read()
    assert dump.wait(timeout=30) == 141  # 128 + SIGPIPE, as `set -o pipefail` reports for cat
    assert first.split()[0] == b"1"
    assert err == b""


def test_the_data_dir_may_be_given_as_an_argument(tmp_path: Path) -> None:
    """`zmqfail log dump DIR` is what people type; once, not twice."""
    make_log(tmp_path, 5)
    by_option = CliRunner().invoke(log_group, ["dump", "--data-dir", str(tmp_path)])
    by_argument = CliRunner().invoke(log_group, ["dump", str(tmp_path)])
    assert by_argument.exit_code == 0 and by_argument.stdout == by_option.stdout
    assert len(by_argument.stdout.splitlines()) == 5
    res = CliRunner().invoke(log_group, ["verify", str(tmp_path)])
    assert res.exit_code == 0 and res.stdout.splitlines()[-1] == "OK"
    for args in (["verify"], ["dump", str(tmp_path), "--data-dir", str(tmp_path / "x")]):
        res = CliRunner().invoke(log_group, args)
        assert res.exit_code == 2 and "data director" in res.stderr, res.output


def test_verify_refuses_a_directory_of_other_files_in_one_line(tmp_path: Path) -> None:
    """Before: `log verify` of any directory said OK. The real command, as a
    careless user types it: a config directory, not a node's data dir."""
    (tmp_path / "zmqfail.toml").write_text("[cluster]\n")
    (tmp_path / "a").mkdir()
    res = run_zmqfail("log", "verify", str(tmp_path), timeout=30)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        f"zmqfail: error: {tmp_path} holds no zmqfail data (no meta.zfm, log/, snap/ or "
        "archive/): is it a node's data directory?"
    ]
