"""Fuzzing of every decoder (issue 12.3): random, mutated and truncated input
either decodes to a valid message or raises the project's own error
(ProtocolError for frames and records, LogCorrupt for files), nothing else.

Decoders: client frames (protocol.decode, decode_request), each channel's
decode_as (replication records/snapshot/commit/ack, heartbeat, control),
TxRecord.decode, log segments (scan_segment; recover, iter_records and
verify on a damaged directory), snapshots (load_snapshot; a transfer image
into the Processor's restore) and the meta file. "Valid" means what a reader after
the decoder relies on: it re-encodes to the same message and `log dump
--json` can print it.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import pytest
from conftest import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_protocol import SAMPLES

from zmqfail import config
from zmqfail.cli.demo import random_order
from zmqfail.cli.logcmd import _jsonable
from zmqfail.errors import LogCorrupt, ProtocolError
from zmqfail.processor import Processor
from zmqfail.protocol import (
    CommitAck,
    CommitRequest,
    ControlReply,
    ControlRequest,
    Heartbeat,
    Message,
    ReplRecords,
    SnapshotImage,
    decode,
    decode_as,
    decode_request,
)
from zmqfail.txlog.frames import (
    SegmentFile,
    encode_frame,
    list_segments,
    log_dir,
    scan_segment,
    segment_header,
)
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.recovery import iter_records, recover, verify
from zmqfail.txlog.segments import DiskLog
from zmqfail.txlog.snapshot import (
    decode_state,
    load_snapshot,
    read_meta,
    write_meta,
    write_snapshot,
)

# Examples per property (times ten with --hypothesis-profile=thorough);
# ZMQFAIL_FUZZ_EXAMPLES=20000 for a deeper run by hand.
EXAMPLES = int(os.environ.get("ZMQFAIL_FUZZ_EXAMPLES", str(examples(200))))
pytestmark = pytest.mark.timeout(120 * max(1, EXAMPLES // 200))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
T = TypeVar("T")


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with 1-4 byte-level edits: flips, overwrites, inserts, deletes, cuts."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "extend"]))
        i = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[i] = draw(st.integers(0, 255))
        elif op == "insert":
            buf[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and buf:
            del buf[i : i + draw(st.integers(1, 8))]
        elif op == "truncate":
            del buf[i:]
        else:
            buf += draw(st.binary(max_size=16))
    return bytes(buf)


def printable(obj: object) -> None:
    """What `log dump --json` does with a decoded value must work."""
    json.dumps(obj, sort_keys=True, default=_jsonable)


# --- wire frames ------------------------------------------------------------

FRAMES = {tag: msg.encode() for tag, msg in SAMPLES.items()}
TAGS = sorted(FRAMES)


def check_frame(frame: bytes) -> Message | None:
    """Both decoders raise only ProtocolError, agree, and what they accept is valid."""
    try:
        msg = decode(frame)
    except ProtocolError:
        with pytest.raises(ProtocolError):
            decode_request(frame)
        return None
    assert decode_request(frame) == msg
    msg.validate()
    again = msg.encode()
    assert decode(again) == msg
    printable({f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)})
    return msg


@FUZZ
@given(st.sampled_from(TAGS), st.data())
def test_mutated_frames_of_every_type(tag: str, data: st.DataObject) -> None:
    check_frame(data.draw(mutations(FRAMES[tag])))


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_as_frames(frame: bytes) -> None:
    check_frame(frame)


@pytest.mark.parametrize("tag", TAGS)
def test_every_truncation_of_every_frame_is_refused(tag: str) -> None:
    frame = FRAMES[tag]
    for n in range(len(frame)):
        with pytest.raises(ProtocolError):
            decode(frame[:n])
        with pytest.raises(ProtocolError):
            decode_request(frame[:n])


# Each socket's expected type (the records socket takes two).
CHANNELS: dict[str, tuple[type[Message], ...]] = {
    "records": (ReplRecords, SnapshotImage),
    "commit": (CommitRequest,),
    "ack": (CommitAck,),
    "heartbeat": (Heartbeat,),
    "control": (ControlRequest,),
    "control-reply": (ControlReply,),
}


@FUZZ
@given(st.sampled_from(sorted(CHANNELS)), st.sampled_from(TAGS), st.data())
def test_each_channel_decoder_on_mutated_frames(
    channel: str, tag: str, data: st.DataObject
) -> None:
    frame = data.draw(mutations(FRAMES[tag]) | st.just(FRAMES[tag]))
    for cls in CHANNELS[channel]:
        try:
            msg = decode_as(frame, cls)
        except ProtocolError:
            continue
        assert type(msg) is cls
        assert decode_as(msg.encode(), cls) == msg


# --- transaction records ---------------------------------------------------


def real_records(n: int = 80) -> list[bytes]:
    """Records a real engine wrote: registrations, fills, cancels, rejections."""
    proc = Processor.create(CFG, "a", 1)
    rng = random.Random(7)
    out: list[bytes] = []
    sessions: dict[str, int] = {}
    for c in range(4):
        reg = proc.register(f"c{c}", c + 1)
        assert reg.record is not None
        out.append(reg.record)
        sessions[f"c{c}"] = reg.gate_lsn
    for i in range(1, n * 2):
        body: dict[str, Any] = random_order(rng, ("ABC", "XYZ"))
        if i % 5 == 0:
            body = {"op": "cancel", "order_id": rng.randint(1, i)}
        got = proc.submit(f"c{i % 4}", i, body, sessions[f"c{i % 4}"])
        if got.record is not None:
            out.append(got.record)
        if len(out) == n:
            break
    return out


CFG = config.load_default()
RECORDS = real_records()


def check_record(data: bytes) -> TxRecord | None:
    try:
        rec = TxRecord.decode(data)
    except ProtocolError:
        return None
    assert TxRecord.decode(rec.encode()) == rec
    printable(rec.to_json_obj())
    return rec


@FUZZ
@given(st.sampled_from(range(len(RECORDS))), st.data())
def test_mutated_transaction_records(i: int, data: st.DataObject) -> None:
    check_record(data.draw(mutations(RECORDS[i])))


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_as_transaction_records(data: bytes) -> None:
    check_record(data)


def test_every_truncation_of_a_record_is_refused() -> None:
    for payload in RECORDS[:10]:
        assert check_record(payload) is not None
        for n in range(len(payload)):
            with pytest.raises(ProtocolError):
                TxRecord.decode(payload[:n])


# --- log segments ----------------------------------------------------------

SEG_RECORDS = [(lsn, payload) for lsn, payload in enumerate(RECORDS[:12], start=1)]
SEGMENT = segment_header(1) + b"".join(encode_frame(lsn, p) for lsn, p in SEG_RECORDS)
SEG_FILE = SegmentFile(Path("seg-00000000000000000001.zfl"), 1)


@FUZZ
@given(mutations(SEGMENT))
def test_scanning_a_mutated_segment_keeps_only_intact_records(data: bytes) -> None:
    scan = scan_segment(SEG_FILE, data)  # classifies, never raises
    assert scan.records == SEG_RECORDS[: len(scan.records)]
    if scan.damage is None:
        assert data == SEGMENT[: len(data)] or len(scan.records) == len(SEG_RECORDS)


def test_every_truncation_of_a_segment_scans_to_a_prefix() -> None:
    for n in range(len(SEGMENT) + 1):
        scan = scan_segment(SEG_FILE, SEGMENT[:n])
        assert scan.records == SEG_RECORDS[: len(scan.records)]
        assert scan.damage is None or scan.damage.torn  # a cut is what a crash leaves


def build_dir(d: Path) -> dict[str, bytes]:
    """A data dir: three segments, two snapshots, meta. Returns name -> bytes."""
    log = DiskLog(d, 900, 1)
    for lsn, payload in enumerate(RECORDS[:30], start=1):
        log.append(lsn, payload)
        if lsn % 4 == 0:
            b = log.take()
            assert b is not None
            log.write(b, sync=True)
    b = log.take()
    assert b is not None
    log.write(b, sync=True)
    log.close()
    write_snapshot(d, 3, 1, {"at": 3})
    write_snapshot(d, 6, 1, {"at": 6})
    write_meta(d, {"epoch": 1, "node": "a", "active": True, "resync": False})
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


TEMPLATE = Path(tempfile.mkdtemp(prefix="zmqfail-fuzz-template-"))
atexit.register(shutil.rmtree, TEMPLATE, True)  # also when no test here is selected
ORIGINAL = build_dir(TEMPLATE)
ORIGINAL_RECORDS = list(iter_records(TEMPLATE))


def only(expected: type[Exception], fn: Callable[[], T]) -> T | None:
    try:
        return fn()
    except expected:
        return None


@settings(
    max_examples=EXAMPLES // 4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.sampled_from(sorted(ORIGINAL)), st.data())
def test_a_damaged_data_dir_recovers_a_prefix_or_is_refused(name: str, data: st.DataObject) -> None:
    damaged = data.draw(mutations(ORIGINAL[name]))
    d = Path(tempfile.mkdtemp(prefix="zmqfail-fuzz-"))
    try:
        shutil.copytree(TEMPLATE, d, dirs_exist_ok=True)
        (d / name).write_bytes(damaged)
        # Read-only readers first: their own error or a prefix, and no change.
        got = only(LogCorrupt, lambda: list(iter_records(d)))
        if got is not None:
            assert got == ORIGINAL_RECORDS[: len(got)]
        verify(d)  # reports, never raises
        r = only(LogCorrupt, lambda: recover(d))
        if r is not None:
            replayed = (r.snapshot.lsn if r.snapshot else 0, r.records)
            assert r.records == ORIGINAL_RECORDS[replayed[0] : replayed[0] + len(r.records)]
            segments = name.startswith("log/")
            last_seg = name == str(list_segments(log_dir(TEMPLATE))[-1].path.relative_to(TEMPLATE))
            if damaged != ORIGINAL[name] and segments and not last_seg:
                # Damage outside the tail of the last segment is never repaired silently.
                changed = damaged[: len(ORIGINAL[name])] != ORIGINAL[name][: len(damaged)]
                assert not changed and len(damaged) > len(ORIGINAL[name]), "silently accepted"
            if last_seg:
                # What was cut as a torn tail holds no intact record after the cut.
                kept = r.last_lsn
                for lsn, payload in ORIGINAL_RECORDS[kept + 1 : kept + 5]:
                    assert encode_frame(lsn, payload) not in damaged, f"lsn {lsn} dropped"
    finally:
        shutil.rmtree(d)


# --- snapshots and meta ------------------------------------------------------

SNAP_NAME = "snap/snap-00000000000000000006.zfs"


@FUZZ
@given(mutations(ORIGINAL[SNAP_NAME]))
def test_a_mutated_snapshot_loads_unchanged_or_is_refused(data: bytes) -> None:
    d = Path(tempfile.mkdtemp(prefix="zmqfail-fuzz-"))
    try:
        p = d / "snap-00000000000000000006.zfs"
        p.write_bytes(data)
        snap = only(LogCorrupt, lambda: load_snapshot(p))
        if snap is not None:
            assert (snap.lsn, snap.epoch, snap.state) == (6, 1, {"at": 6})
    finally:
        shutil.rmtree(d)


@FUZZ
@given(mutations(ORIGINAL["meta.zfm"]))
def test_a_mutated_meta_file_reads_unchanged_or_is_refused(data: bytes) -> None:
    d = Path(tempfile.mkdtemp(prefix="zmqfail-fuzz-"))
    try:
        (d / "meta.zfm").write_bytes(data)
        meta = only(LogCorrupt, lambda: read_meta(d))
        if meta is not None:
            assert meta == {"epoch": 1, "node": "a", "active": True, "resync": False}
    finally:
        shutil.rmtree(d)


def test_every_truncation_of_snapshot_and_meta_is_refused(tmp_path: Path) -> None:
    for name in (SNAP_NAME, "meta.zfm"):
        whole = ORIGINAL[name]
        for n in range(len(whole)):
            p = tmp_path / Path(name).name
            p.write_bytes(whole[:n])
            with pytest.raises(LogCorrupt):
                load_snapshot(p) if name == SNAP_NAME else read_meta(tmp_path)


def engine_image() -> bytes:
    proc = Processor.create(CFG, "a", 1)
    for payload in RECORDS:
        proc.apply_record(TxRecord.decode(payload))
    data: bytes = msgpack.packb(proc.snapshot(), use_bin_type=True)
    return data


IMAGE = engine_image()


@FUZZ
@given(mutations(IMAGE))
def test_a_mutated_transfer_image_restores_or_is_refused(data: bytes) -> None:
    """A backup's path for a SnapshotImage: decode the state, then
    the Processor's restore; only ProtocolError may come out."""
    try:
        state = decode_state(data)
    except ProtocolError:
        return
    try:
        Processor.create(CFG, "b", 1, 0, state)
    except ProtocolError:
        return


def test_decode_state_refuses_an_array_map_key() -> None:
    # Found by the test above: msgpack raises TypeError for it, which the
    # backup's snapshot install (node/mirror.py) did not expect.
    with pytest.raises(ProtocolError, match="not msgpack"):
        decode_state(b"\x81\x91\x01\x02")


def test_backup_survives_a_snapshot_image_with_an_array_map_key() -> None:
    from zmqfail.core.follower import OK, Follower

    installed: list[int] = []
    f = Follower(
        "b",
        nlog=None,  # type: ignore[arg-type]  # not reached: the image is refused first
        peers=None,  # type: ignore[arg-type]
        out=None,  # type: ignore[arg-type]
        accept=lambda sender, epoch: OK,
        ack_fields=lambda: (1, 1),
        install=lambda lsn, e, s, h: installed.append(lsn),
        save_meta=lambda: None,
    )
    image = SnapshotImage("a", 1, 5, b"\x81\x91\x01\x02", [])
    f.on_records("main", [image.encode()], 0.0)
    assert f.bad_frames == 1 and installed == []
