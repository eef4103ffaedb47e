"""Disk faults (issue 12.4): each gives one clear message naming the file and
what to do next, never a silently wrong state and never an acknowledgement
after a failed write. Faults are injected through DiskLog's LogIO, not by
patching the os module."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import BUY, StartNode, wait_for

from zmqfail import config
from zmqfail.errors import LogCorrupt, LogWriteFailed, ZmqfailError
from zmqfail.protocol import Register, Request, SessionGrant, decode_as
from zmqfail.txlog.frames import FRAME_HEADER, SEG_HEADER, list_segments, log_dir
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.recovery import recover
from zmqfail.txlog.segments import DiskLog, LogIO
from zmqfail.txlog.snapshot import list_snapshots, read_meta, write_meta, write_snapshot

pytestmark = pytest.mark.timeout(60)

FH = FRAME_HEADER.size


def payload(lsn: int) -> bytes:
    return TxRecord(lsn, 1, "c1", lsn, {"op": "new", "n": lsn}, [], "ok", {"id": lsn}).encode()


def write_log(d: Path, first: int, last: int, segment_bytes: int = 1 << 20) -> None:
    log = DiskLog(d, segment_bytes, first)
    for lsn in range(first, last + 1):
        log.append(lsn, payload(lsn))
        if lsn % 3 == 0:
            b = log.take()
            assert b is not None
            log.write(b, sync=True)
    b = log.take()
    if b is not None:
        log.write(b, sync=True)
    log.close()


def frame_offsets(path: Path) -> list[int]:
    data = path.read_bytes()
    offs, off = [], SEG_HEADER.size
    while off < len(data):
        offs.append(off)
        off += FH + int.from_bytes(data[off : off + 4], "little")
    return offs


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def assert_one_clear_refusal(exc: LogCorrupt, path: Path, data_dir: Path) -> None:
    text = str(exc)
    assert "\n" not in text
    assert str(path) in text
    assert f"zmqfail log reset --data-dir {data_dir}" in text
    assert "log verify" in text


# --- damage the node must refuse to start from ---------------------------


@pytest.mark.parametrize(
    ("frame", "field_offset", "mask"),
    [
        pytest.param(3, 2, 0x01, id="length-high-byte"),  # length runs past EOF
        pytest.param(3, 12, 0x01, id="lsn-field"),
        pytest.param(3, FH + 2, 0x20, id="payload"),
        pytest.param(-1, 2, 0x01, id="length-of-final-frame"),  # the rest is that frame
        pytest.param(-1, 9, 0x01, id="lsn-of-final-frame"),
    ],
)
def test_flipped_byte_in_the_last_segment_is_refused(
    tmp_path: Path, frame: int, field_offset: int, mask: int
) -> None:
    """Before: a flipped length byte in the middle of the last segment looked
    like a torn append, and recovery cut the 8 acknowledged records after it."""
    write_log(tmp_path, 1, 12)
    seg = list_segments(log_dir(tmp_path))[-1].path
    off = frame_offsets(seg)[frame]
    flip(seg, off + field_offset, mask)
    before = seg.read_bytes()
    with pytest.raises(LogCorrupt) as info:
        recover(tmp_path)
    assert_one_clear_refusal(info.value, seg, tmp_path)
    assert info.value.offset == off
    assert seg.read_bytes() == before  # nothing cut


def test_damage_in_a_non_last_segment_is_refused(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 30, segment_bytes=400)
    segs = [s.path for s in list_segments(log_dir(tmp_path))]
    assert len(segs) >= 3
    flip(segs[1], frame_offsets(segs[1])[1] + FH)
    with pytest.raises(LogCorrupt) as info:
        recover(tmp_path)
    assert_one_clear_refusal(info.value, segs[1], tmp_path)


def test_truncated_non_last_segment_is_refused(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 30, segment_bytes=400)
    seg = list_segments(log_dir(tmp_path))[0].path
    with open(seg, "r+b") as f:
        f.truncate(seg.stat().st_size - 10)
    with pytest.raises(LogCorrupt) as info:
        recover(tmp_path)
    assert_one_clear_refusal(info.value, seg, tmp_path)


def test_truncated_last_segment_is_cut_with_one_warning_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_log(tmp_path, 1, 12)
    seg = list_segments(log_dir(tmp_path))[-1].path
    with open(seg, "r+b") as f:
        f.truncate(seg.stat().st_size - 3)  # an append cut short: never acknowledged
    with caplog.at_level(logging.WARNING, logger="zmqfail.txlog"):
        r = recover(tmp_path)
    assert r.last_lsn == 11
    warnings = [rec.getMessage() for rec in caplog.records]
    assert len(warnings) == 1 and str(seg) in warnings[0] and "torn tail" in warnings[0]


def test_missing_snapshot_is_refused(tmp_path: Path) -> None:
    # Three snapshots prune the log to what the older kept one does not cover.
    write_log(tmp_path, 1, 40, segment_bytes=300)
    for lsn in (10, 20, 30):
        write_snapshot(tmp_path, lsn, 1, {"at": lsn})
    assert list_segments(log_dir(tmp_path))[0].first_lsn > 1
    for _lsn, path in list_snapshots(tmp_path):
        path.unlink()  # an operator "cleaning up"
    with pytest.raises(LogCorrupt) as info:
        recover(tmp_path)
    first = list_segments(log_dir(tmp_path))[0].path
    assert_one_clear_refusal(info.value, first, tmp_path)
    assert "there is no snapshot" in str(info.value) and "missing" in str(info.value)


def test_corrupt_snapshot_is_refused(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 10)
    snap = write_snapshot(tmp_path, 8, 1, {"x": 1})
    flip(snap, 37)  # in the payload
    with pytest.raises(LogCorrupt) as info:
        recover(tmp_path)
    assert_one_clear_refusal(info.value, snap, tmp_path)


def test_corrupt_meta_is_refused(tmp_path: Path) -> None:
    write_log(tmp_path, 1, 3)
    write_meta(tmp_path, {"epoch": 3, "node": "a"})
    meta = tmp_path / "meta.zfm"
    flip(meta, len(meta.read_bytes()) - 1)
    with pytest.raises(LogCorrupt) as info:
        recover(tmp_path)
    assert_one_clear_refusal(info.value, meta, tmp_path)


def test_segment_named_before_lsn_one_is_refused(tmp_path: Path) -> None:
    d = log_dir(tmp_path)
    d.mkdir()
    (d / f"seg-{0:020d}.zfl").write_bytes(SEG_HEADER.pack(b"ZMQFLOG1", 1, 0, 0))
    with pytest.raises(LogCorrupt, match="log starts at lsn 0"):
        recover(tmp_path)


# --- write faults ----------------------------------------------------------


class FaultyIO(LogIO):
    """A disk that fails: `write_error` after `write_budget` more bytes, or on fsync."""

    def __init__(self) -> None:
        self.write_budget: int | None = None
        self.write_error = errno.ENOSPC
        self.fsync_error: int | None = None

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> None:
        if self.write_budget is not None:
            if len(data) > self.write_budget:
                os.write(fd, bytes(data[: self.write_budget]))  # a short write first
                self.write_budget = 0
                raise OSError(self.write_error, os.strerror(self.write_error))
            self.write_budget -= len(data)
        super().write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.fsync_error is not None:
            raise OSError(self.fsync_error, os.strerror(self.fsync_error))
        super().fsync(fd)


def batch_of(log: DiskLog, first: int, last: int) -> None:
    for lsn in range(first, last + 1):
        log.append(lsn, payload(lsn))


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[tuple[DiskLog, FaultyIO]]:
    io = FaultyIO()
    log = DiskLog(tmp_path, 1 << 20, 1, io=io)
    batch_of(log, 1, 3)
    b = log.take()
    assert b is not None
    log.write(b, sync=True)
    yield log, io
    log.close()


def test_disk_full_names_the_file_cuts_the_partial_write_and_says_free_space(
    tmp_path: Path, faulty: tuple[DiskLog, FaultyIO]
) -> None:
    log, io = faulty
    seg = log.current_segment
    size = seg.stat().st_size
    io.write_budget = 10
    batch_of(log, 4, 6)
    b = log.take()
    assert b is not None
    with pytest.raises(LogWriteFailed) as info:
        log.write(b, sync=True)
    text = str(info.value)
    assert str(seg) in text and "No space left on device" in text
    assert "nothing after lsn 3 is on disk here" in text and "free space" in text
    assert info.value.errno == errno.ENOSPC and "\n" not in text
    assert seg.stat().st_size == size  # the 10 bytes that made it were cut
    assert log.flushed_lsn == 3
    # Space freed: the same batch goes through and everything recovers.
    io.write_budget = None
    log.write(b, sync=True)
    log.close()
    assert [lsn for lsn, _ in recover(tmp_path).records] == [1, 2, 3, 4, 5, 6]


def test_eio_on_fsync_breaks_the_log_for_good(
    tmp_path: Path, faulty: tuple[DiskLog, FaultyIO]
) -> None:
    log, io = faulty
    io.fsync_error = errno.EIO
    batch_of(log, 4, 5)
    b = log.take()
    assert b is not None
    with pytest.raises(LogWriteFailed) as info:
        log.write(b, sync=True)
    text = str(info.value)
    assert "Input/output error" in text and "the disk may be failing" in text
    assert f"zmqfail log reset --data-dir {tmp_path}" in text
    assert log.flushed_lsn == 3
    # After a failed fsync the kernel may have dropped the pages: a retry that
    # "succeeds" would be a lie, so the log refuses everything from now on.
    io.fsync_error = None
    with pytest.raises(LogWriteFailed, match="unusable after an earlier failure"):
        log.sync()


def test_disk_full_while_creating_the_next_segment(tmp_path: Path) -> None:
    io = FaultyIO()
    log = DiskLog(tmp_path, 200, 1, io=io)
    batch_of(log, 1, 2)
    b = log.take()
    assert b is not None
    log.write(b, sync=True)
    io.write_budget = 0  # the next segment's header cannot be written
    batch_of(log, 3, 5)
    b = log.take()
    assert b is not None
    with pytest.raises(LogWriteFailed, match="No space left on device"):
        log.write(b, sync=True)
    assert [p.name for p in log_dir(tmp_path).iterdir()] == [f"seg-{1:020d}.zfl"]  # no temp
    with pytest.raises(LogWriteFailed, match="unusable"):
        log.write(b, sync=True)
    log.close()
    assert recover(tmp_path).last_lsn == 2


def test_node_stops_without_acknowledging_after_a_failed_write(
    cluster_dir: Callable[..., Path], node_threads: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    """A node alone flushes before every reply: once the disk fails, no reply
    goes out, the node stops with exit code 3 and says once what happened."""
    import zmq

    from zmqfail.client.sync import Client

    cfg = config.load(cluster_dir())
    nt = node_threads(cfg, "a")
    nt.wait_active()
    with Client(cfg, timeout=5) as c:
        assert c.request(BUY).status == "ok"
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(cfg.node("a").client)
    dealer.send(Register("faulty", 1).encode())  # a session while the disk works
    assert dealer.poll(5000)
    session = decode_as(dealer.recv(), SessionGrant).session
    io = FaultyIO()
    io.write_error = errno.EIO
    io.write_budget = 0
    assert nt.node.disk.disklog is not None
    nt.node.disk.disklog.io = io
    try:
        with caplog.at_level(logging.CRITICAL, logger="zmqfail.node"):
            for msg_id in range(1, 6):
                dealer.send(Request("faulty", msg_id, BUY, session).encode())
            wait_for(lambda: not nt.thread.is_alive(), 10, "the node to stop")
        assert nt.rc == 3
        assert dealer.poll(300) == 0  # not one of the five was acknowledged
    finally:
        dealer.close(linger=0)
        ctx.term()
    critical = [r.getMessage() for r in caplog.records if r.levelno >= logging.CRITICAL]
    seg = log_dir(cfg.node("a").data_dir) / f"seg-{1:020d}.zfl"
    assert len(critical) == 1, critical
    assert str(seg) in critical[0] and "Input/output error" in critical[0]
    assert "zmqfail log reset" in critical[0]
    assert "stopping without acknowledging more" in critical[0]


@pytest.mark.parametrize(
    ("err", "says"),
    [(errno.ENOSPC, "free space on the file system of"), (errno.EIO, "zmqfail log reset")],
)
def test_a_failed_meta_write_stops_the_node_with_one_message_naming_it(
    cluster_dir: Callable[..., Path],
    node_threads: StartNode,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    err: int,
    says: str,
) -> None:
    """meta.zfm holds the epoch and the right to lead. Before, a failed write
    of it (here at `zmqfail pause`) escaped the node's loop as an OSError: a
    traceback and exit 1, with no word of the file or what to do."""
    from zmqfail.client.control import call
    from zmqfail.node import disk

    cfg = config.load(cluster_dir())
    nt = node_threads(cfg, "a")
    nt.wait_active()
    meta = cfg.node("a").data_dir / "meta.zfm"

    def full(*_a: object) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(disk, "write_meta", full)
    with caplog.at_level(logging.CRITICAL, logger="zmqfail.node"):
        with contextlib.suppress(ZmqfailError):  # it may stop before it answers
            call(cfg.node("a"), "pause", timeout=2.0)
        wait_for(lambda: not nt.thread.is_alive(), 10, "the node to stop")
    assert nt.rc == 3
    critical = [r.getMessage() for r in caplog.records if r.levelno >= logging.CRITICAL]
    assert len(critical) == 1, critical
    assert f"{meta}: writing the node's meta file failed: {os.strerror(err)}" in critical[0]
    assert says in critical[0] and "stopping without acknowledging more" in critical[0]
    assert read_meta(meta.parent)["epoch"] >= 1  # the previous one, whole


# --- file modes -------------------------------------------------------------


def test_files_are_never_executable_even_with_umask_zero(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_log(tmp_path / "d", 1, 20, segment_bytes=300)
        for lsn in (5, 10, 15):
            write_snapshot(tmp_path / "d", lsn, 1, {"x": lsn})
        write_meta(tmp_path / "d", {"epoch": 1})
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "d").rglob("*") if p.is_file()]
    assert {p.parent.name for p in files} >= {"log", "snap", "archive", "d"}
    assert_owner_only(tmp_path / "d")


def assert_owner_only(d: Path) -> None:
    """Files rw for the node's user alone, directories rwx: every client's
    orders are in there. Nothing executable, nothing for group or others."""
    for p in [d, *d.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        want = 0o700 if p.is_dir() else 0o600
        assert mode == want, (p, oct(mode))


def test_a_nodes_files_are_its_users_alone_even_with_umask_zero(
    cluster_dir: Callable[..., Path], node_threads: StartNode
) -> None:
    """Before: with umask 0 a node made its data dir 0777 and node.pid 0666,
    and with umask 022 every segment and history.jsonl were world-readable.
    Every file a node, a truncation (quarantine) and `log reset` make."""
    from zmqfail.client.sync import Client
    from zmqfail.txlog.reset import reset_data_dir
    from zmqfail.txlog.truncate import truncate_after

    cfg = config.load(cluster_dir())
    data = cfg.node("a").data_dir
    old = os.umask(0)
    try:
        nt = node_threads(cfg, "a")
        nt.wait_active()
        with Client(cfg, timeout=5) as c:
            for _ in range(3):
                assert c.request(BUY).status == "ok"
        assert {"node.pid", "LOCK", "history.jsonl", "meta.zfm"} <= {p.name for p in data.iterdir()}
        assert_owner_only(data)  # while it runs: node.pid goes with a clean stop
        nt.stop()
        truncate_after(data, 2, reason="test")
        reset_data_dir(data)
    finally:
        os.umask(old)
    names = {p.name for p in data.rglob("*")}
    assert "quarantine" in names, names
    assert any(n.startswith("damaged-") for n in names), names
    assert_owner_only(data)


@pytest.mark.parametrize(
    ("err", "says"),
    [(errno.ENOSPC, "No space left on device"), (errno.EIO, "Input/output error")],
)
def test_a_failed_snapshot_is_one_line_naming_the_file_and_nothing_is_lost(
    cluster_dir: Callable[..., Path],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    err: int,
    says: str,
) -> None:
    """Before: "snapshot at lsn 7 failed; will retry in 1 s", no file, no why.
    The snapshot is written by a forked child, which cannot log safely: its
    exit status carries the errno to the parent."""
    import zmq

    from zmqfail.node import disk

    cfg = config.load(cluster_dir())
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    d = disk.RealDisk(ctx, cfg, "a", 1, lambda _old, _new: None)

    def failing(*_a: object) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(disk, "write_snapshot", failing)
    try:
        with caplog.at_level(logging.DEBUG, logger="zmqfail"):
            assert d.snapshot(7, 1, lambda: {"x": 1})
            got: list[tuple[int, bool]] = []

            def reaped() -> bool:
                got.extend(d.reap()[0])
                return bool(got)

            wait_for(reaped, 10, "the snapshot child")
    finally:
        d.close()
        ctx.term()
    assert got == [(7, False)]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    snap = cfg.node("a").data_dir / "snap" / f"snap-{7:020d}.zfs"
    assert len(errors) == 1, errors
    assert f"{snap}: writing the snapshot failed: {says}; nothing is lost" in errors[0]
    assert ("free space" if err == errno.ENOSPC else "zmqfail log reset") in errors[0]
