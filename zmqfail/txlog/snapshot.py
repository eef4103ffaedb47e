"""Snapshots of the engine state, log pruning, and the node's metadata file.

A snapshot bounds recovery time and disk use: after one is durable, replay
starts from its lsn and older log segments become deletable. File format
(``DIR/snap/snap-<lsn:020d>.zfs``), little-endian::

    magic "ZMQFSNP1" | u16 version | u16 reserved | u64 lsn | u64 epoch
    | u32 payload length | u32 crc32 | payload = msgpack(state)

The crc covers the 32 header bytes before it *and* the payload, so a flipped
bit in the lsn or epoch is caught too. Files are written to a dot-prefixed
temp file, fsynced, renamed into place and the directory fsynced: a reader
sees a complete snapshot or none, and leftovers of an interrupted write never
match the snapshot name pattern.

Pruning rule (``prune``): keep the newest ``KEEP_SNAPSHOTS`` (2) snapshots;
the log segments whose every record is at or below the *older* kept
snapshot's lsn are no longer needed for recovery and are archived, kept or
dropped as the retention policy says (``retention``). So if the newest
snapshot ever proves unreadable, an operator can delete it and the node
recovers from the older one plus the log, which is still complete from there.
With a single snapshot nothing leaves the log. The newest segment never
leaves: the writer may be appending to it.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from zmqfail.errors import LogCorrupt, ProtocolError
from zmqfail.txlog.fsutil import atomic_write, ensure_dir, fsync_dir
from zmqfail.txlog.retention import DEFAULT_RETENTION, Retention, retire_segments

SNAP_MAGIC = b"ZMQFSNP1"
SNAP_VERSION = 1
_SNAP_PREFIX = struct.Struct("<8sHHQQI")  # everything the crc covers besides the payload
_SNAP_CRC = struct.Struct("<I")
SNAP_HEADER_SIZE = _SNAP_PREFIX.size + _SNAP_CRC.size
SNAP_DIRNAME = "snap"
KEEP_SNAPSHOTS = 2
_SNAP_RE = re.compile(r"^snap-(\d{20})\.zfs$")

META_NAME = "meta.zfm"
META_MAGIC = b"ZMQFMET1"
_META_HEADER = struct.Struct("<8sII")  # magic, payload length, crc32(payload)


@dataclass(frozen=True, slots=True)
class Snapshot:
    lsn: int
    epoch: int
    state: dict[str, Any]


def snap_dir(data_dir: Path) -> Path:
    return data_dir / SNAP_DIRNAME


def snapshot_name(lsn: int) -> str:
    return f"snap-{lsn:020d}.zfs"


def list_snapshots(data_dir: Path) -> list[tuple[int, Path]]:
    """(lsn, path) of every snapshot file, oldest first; temp files are ignored."""
    d = snap_dir(data_dir)
    if not d.is_dir():
        return []
    out: list[tuple[int, Path]] = []
    for p in d.iterdir():
        m = _SNAP_RE.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    out.sort()
    return out


def write_snapshot(
    data_dir: Path,
    lsn: int,
    epoch: int,
    state: dict[str, Any],
    retention: Retention = DEFAULT_RETENTION,
) -> Path:
    """Durably store ``state`` as of ``lsn``, then prune (see module docstring).

    The caller must only snapshot state whose records are already durable in
    the log (or accept that the snapshot alone now carries them).
    """
    if lsn < 0 or epoch < 0:
        raise ValueError(f"lsn and epoch must be >= 0, got {lsn}, {epoch}")
    payload: bytes = msgpack.packb(state, use_bin_type=True)
    prefix = _SNAP_PREFIX.pack(SNAP_MAGIC, SNAP_VERSION, 0, lsn, epoch, len(payload))
    crc = zlib.crc32(payload, zlib.crc32(prefix))
    d = snap_dir(data_dir)
    ensure_dir(d)
    path = d / snapshot_name(lsn)
    atomic_write(path, prefix + _SNAP_CRC.pack(crc) + payload)
    prune(data_dir, retention)
    return path


def load_snapshot(path: Path) -> Snapshot:
    """Read and fully check one snapshot; any damage raises ``LogCorrupt``."""
    where = str(path)
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < SNAP_HEADER_SIZE:
        raise LogCorrupt(where, 0, f"snapshot header incomplete ({len(data)} bytes)")
    magic, version, _res, lsn, epoch, length = _SNAP_PREFIX.unpack_from(data, 0)
    (crc,) = _SNAP_CRC.unpack_from(data, _SNAP_PREFIX.size)
    if magic != SNAP_MAGIC:
        raise LogCorrupt(where, 0, f"bad snapshot magic {magic!r}")
    if version != SNAP_VERSION:
        raise LogCorrupt(where, 8, f"unsupported snapshot format version {version}")
    if length != len(data) - SNAP_HEADER_SIZE:
        have = len(data) - SNAP_HEADER_SIZE
        raise LogCorrupt(where, 28, f"snapshot payload length {length}, file holds {have}")
    payload = data[SNAP_HEADER_SIZE:]
    if zlib.crc32(payload, zlib.crc32(data[: _SNAP_PREFIX.size])) != crc:
        raise LogCorrupt(where, 0, "snapshot crc mismatch")
    m = _SNAP_RE.match(path.name)
    if m and int(m.group(1)) != lsn:
        raise LogCorrupt(where, 12, f"header says lsn {lsn}, file name says {int(m.group(1))}")
    try:
        state = decode_state(payload)
    except ProtocolError as exc:
        raise LogCorrupt(where, SNAP_HEADER_SIZE, str(exc)) from None
    return Snapshot(lsn, epoch, state)


def decode_state(data: bytes) -> dict[str, Any]:
    """The tables' image (a snapshot file's payload, or a SnapshotImage sent to a
    backup) as a map; ProtocolError for anything else.

    msgpack raises several unrelated types here, TypeError among them (a map
    key that is an array): catching only ValueError let that one through.
    """
    try:
        state = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:
        raise ProtocolError(f"snapshot state is not msgpack: {exc}") from None
    if not isinstance(state, dict):
        raise ProtocolError("snapshot state is not a map")
    return state


def newest_snapshot(data_dir: Path) -> Snapshot | None:
    """The newest snapshot, or None; if it is damaged this raises, on purpose.

    Silently falling back to an older snapshot would hide a disk problem and
    could replay a different history; an operator decides (delete the bad file).
    """
    snaps = list_snapshots(data_dir)
    return load_snapshot(snaps[-1][1]) if snaps else None


def prune(data_dir: Path, retention: Retention = DEFAULT_RETENTION) -> list[Path]:
    """Apply the rule from the module docstring; returns what left snap/ and log/."""
    removed: list[Path] = []
    snaps = list_snapshots(data_dir)
    for _lsn, p in snaps[:-KEEP_SNAPSHOTS]:
        p.unlink(missing_ok=True)
        removed.append(p)
    d = snap_dir(data_dir)
    if d.is_dir():
        for p in d.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)  # an interrupted write_snapshot
                removed.append(p)
        if removed:
            fsync_dir(d)
    kept = snaps[-KEEP_SNAPSHOTS:]
    if len(kept) < KEEP_SNAPSHOTS:
        return removed
    return removed + retire_segments(data_dir, kept[0][0], retention)


def write_meta(data_dir: Path, meta: dict[str, Any]) -> None:
    """Atomically replace the node's metadata (epoch, node and cluster name...)."""
    payload: bytes = msgpack.packb(meta, use_bin_type=True)
    ensure_dir(data_dir)
    header = _META_HEADER.pack(META_MAGIC, len(payload), zlib.crc32(payload))
    atomic_write(data_dir / META_NAME, header + payload)


def read_meta(data_dir: Path) -> dict[str, Any]:
    """The stored metadata; ``{}`` when none was ever written."""
    path = data_dir / META_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    where = str(path)
    if len(data) < _META_HEADER.size:
        raise LogCorrupt(where, 0, f"meta header incomplete ({len(data)} bytes)")
    magic, length, crc = _META_HEADER.unpack_from(data, 0)
    if magic != META_MAGIC:
        raise LogCorrupt(where, 0, f"bad meta magic {magic!r}")
    payload = data[_META_HEADER.size :]
    if length != len(payload):
        raise LogCorrupt(where, 8, f"meta payload length {length}, file holds {len(payload)}")
    if zlib.crc32(payload) != crc:
        raise LogCorrupt(where, 0, "meta crc mismatch")
    try:
        meta = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:
        raise LogCorrupt(where, _META_HEADER.size, f"meta is not msgpack: {exc}") from None
    if not isinstance(meta, dict):
        raise LogCorrupt(where, _META_HEADER.size, "meta is not a map")
    return meta
