"""On-disk format of the transaction log and a side-effect-free segment scanner.

The log is a run of segment files ``DIR/log/seg-<first_lsn:020d>.zfl``. Each one
starts with a 20-byte header (magic ``ZMQFLOG1``, u16 version, u16 reserved, u64
first_lsn; all little-endian) followed by frames::

    u32 payload length | u32 crc32(lsn bytes + payload) | u64 lsn | payload

The crc covers the lsn so that a frame copied to the wrong place is caught, and
the lsn is in every frame so that gaps and regressions are caught without an
index. Segments are split so that old history can be deleted by unlinking whole
files once a snapshot covers it.

The scanner only *classifies* damage; what to do about it (truncate, refuse,
warn) depends on whether the segment is the last one and on who is asking, so
that decision lives in ``recovery``. Damage is "torn" when it looks like what
an interrupted append leaves behind at the end of a file, and "corrupt" when
it cannot be explained that way.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

SEG_MAGIC = b"ZMQFLOG1"
# 2: client writes need a session, opened by a register record (txlog/record.py);
# a version-1 log would not replay, so it is refused at start with this version.
SEG_VERSION = 2
SEG_HEADER = struct.Struct("<8sHHQ")
FRAME_HEADER = struct.Struct("<IIQ")
LSN = struct.Struct("<Q")
MAX_PAYLOAD = 64 << 20
LOG_DIRNAME = "log"
_SEG_RE = re.compile(r"^seg-(\d{20})\.zfl$")


def log_dir(data_dir: Path) -> Path:
    return data_dir / LOG_DIRNAME


def segment_name(first_lsn: int) -> str:
    return f"seg-{first_lsn:020d}.zfl"


def segment_header(first_lsn: int) -> bytes:
    return SEG_HEADER.pack(SEG_MAGIC, SEG_VERSION, 0, first_lsn)


def frame_crc(lsn: int, payload: bytes | bytearray | memoryview) -> int:
    # Incremental so the payload is never copied just to prepend 8 bytes.
    return zlib.crc32(payload, zlib.crc32(LSN.pack(lsn)))


def encode_frame(lsn: int, payload: bytes) -> bytes:
    """One frame; DiskLog builds the same bytes inline to avoid the copy."""
    return FRAME_HEADER.pack(len(payload), frame_crc(lsn, payload), lsn) + payload


@dataclass(frozen=True, slots=True)
class SegmentFile:
    path: Path
    first_lsn: int  # from the file name; the header must agree


def list_segments(directory: Path) -> list[SegmentFile]:
    """Segments in lsn order; other files (temp files, editor droppings) are ignored."""
    if not directory.is_dir():
        return []
    out: list[SegmentFile] = []
    for p in directory.iterdir():
        m = _SEG_RE.match(p.name)
        if m and p.is_file():
            out.append(SegmentFile(p, int(m.group(1))))
    out.sort(key=lambda s: s.first_lsn)
    return out


@dataclass(frozen=True, slots=True)
class Damage:
    offset: int  # byte offset of the bad header/frame inside the file
    reason: str
    torn: bool  # explainable as an interrupted append if it is at the end of the log


@dataclass(slots=True)
class SegmentScan:
    path: Path
    first_lsn: int
    size: int
    header_ok: bool = False
    end: int = 0  # offset just past the last good frame (or the header)
    count: int = 0  # good frames, kept or not
    records: list[tuple[int, bytes]] = field(default_factory=list)
    damage: Damage | None = None

    @property
    def next_lsn(self) -> int:
        """The lsn the next frame (in this file or the next segment) must carry."""
        return self.first_lsn + self.count

    @property
    def torn_bytes(self) -> int:
        return self.size - self.end


def _zero_tail(data: bytes, start: int) -> bool:
    return data.count(0, start) == len(data) - start


def _valid_frame_at(data: bytes, off: int) -> bool:
    if off < 0 or len(data) - off < FRAME_HEADER.size:
        return False
    length: int
    crc: int
    lsn: int
    length, crc, lsn = FRAME_HEADER.unpack_from(data, off)
    body = off + FRAME_HEADER.size
    return body + length <= len(data) and frame_crc(lsn, data[body : body + length]) == crc


_LOOK_AHEAD = 4  # later lsns searched for past a damaged frame


def _not_torn(data: bytes, off: int, lsn: int, crc: int, expect: int) -> str:
    """Why damage at the end of the file cannot be an interrupted append ("" if it can).

    An append cut short leaves a frame whose header is as written (lsn as
    expected) and nothing valid after it. A flipped byte in a length field in
    the middle of the last segment used to look the same, and recovery cut off
    every acknowledged record after it without a word; these checks tell the
    two apart.
    """
    if lsn != expect:
        return f"; its lsn field says {lsn} where {expect} was due: damage, not a torn append"
    if frame_crc(lsn, data[off + FRAME_HEADER.size :]) == crc:
        return "; the rest of the file is that whole frame: its length field is damaged"
    for later in range(expect + 1, expect + 1 + _LOOK_AHEAD):
        pat = LSN.pack(later)
        at = data.find(pat, off + FRAME_HEADER.size)
        while at >= 0:
            if _valid_frame_at(data, at - 8):
                return f"; a valid frame (lsn {later}) follows at offset {at - 8}"
            at = data.find(pat, at + 1)
    return ""


def scan_segment(seg: SegmentFile, data: bytes, min_lsn: int = 0) -> SegmentScan:
    """Parse one segment's bytes, stopping at the first damage.

    Records with lsn < ``min_lsn`` are checked but not kept, so callers that
    only need the tail (replay after a snapshot, ``dump --from-lsn``) do not
    hold the whole history in memory.
    """
    scan = SegmentScan(seg.path, seg.first_lsn, len(data))
    size = len(data)
    hsize = SEG_HEADER.size
    if size < hsize or _zero_tail(data[:hsize], 0):
        # A crash while creating the file: nothing in it was ever acknowledged.
        scan.damage = Damage(0, f"segment header incomplete ({min(size, hsize)} bytes)", True)
        return scan
    magic, version, reserved, first = SEG_HEADER.unpack_from(data, 0)
    if magic != SEG_MAGIC:
        scan.damage = Damage(0, f"bad segment magic {magic!r}", False)
        return scan
    if version != SEG_VERSION:
        scan.damage = Damage(0, f"unsupported segment format version {version}", False)
        return scan
    if reserved != 0:
        # Version 1 writes 0 and no crc covers the header: anything else is damage.
        scan.damage = Damage(0, f"reserved header field is {reserved}, not 0", False)
        return scan
    if first != seg.first_lsn:
        reason = f"header says first lsn {first}, file name says {seg.first_lsn}"
        scan.damage = Damage(0, reason, False)
        return scan
    scan.header_ok = True
    off = scan.end = hsize
    expect = first
    fsize = FRAME_HEADER.size
    damage: Damage | None = None
    while off < size:
        if size - off < fsize:
            damage = Damage(off, f"incomplete frame header ({size - off} bytes)", True)
            break
        length, crc, lsn = FRAME_HEADER.unpack_from(data, off)
        if length > MAX_PAYLOAD:
            damage = Damage(off, f"absurd frame length {length}", False)
            break
        body = off + fsize
        stop = body + length
        if stop > size:
            why = _not_torn(data, off, lsn, crc, expect)
            reason = f"frame length {length} runs past end of file{why}"
            damage = Damage(off, reason, not why)
            break
        payload = data[body:stop]
        if frame_crc(lsn, payload) != crc:
            why = _not_torn(data, off, lsn, crc, expect) if stop == size else ""
            torn = stop == size and not why
            damage = Damage(off, f"crc mismatch in frame (lsn field {lsn}){why}", torn)
            break
        if lsn != expect:
            what = "gap" if lsn > expect else "regression"
            damage = Damage(off, f"lsn {what}: expected {expect}, found {lsn}", False)
            break
        if lsn >= min_lsn:
            scan.records.append((lsn, payload))
        scan.count += 1
        expect += 1
        off = scan.end = stop
    if damage is not None and not damage.torn and _zero_tail(data, off):
        # Some file systems expose a zero-filled tail after a power cut (size
        # updated, data blocks not); no valid frame is all zeros, and nothing
        # follows it, so it is a torn append, not damage to acknowledged data.
        damage = Damage(off, f"zero-filled tail ({size - off} bytes)", True)
    scan.damage = damage
    return scan


def read_segment(seg: SegmentFile, min_lsn: int = 0) -> SegmentScan:
    with open(seg.path, "rb") as f:
        data = f.read()
    return scan_segment(seg, data, min_lsn)
