"""The failover history file: `DATA_DIR/history.jsonl`, one JSON object a
line, appended by the node at every change of role or state and every
operator action (what `zmqfail history` reads after a restart, when the
node's memory of it is gone).

Append-only and bounded: once the file would pass `max_bytes` it becomes
`history.1.jsonl` (replacing the previous one) and a new file starts, so a
node keeps between one and two files' worth of its newest history. Each line
is written with one `write` on an O_APPEND descriptor and fsynced: a reader
sees whole lines, and a line torn by a crash mid-write (the last one only)
is skipped when read back and counted, never an error; the next append
starts a line of its own after it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zmqfail.txlog.fsutil import FILE_MODE, fsync_dir, write_all

NAME = "history.jsonl"
OLD = "history.1.jsonl"
MAX_BYTES = 1 << 20  # per file: some 5,000 entries


def history_path(data_dir: Path) -> Path:
    return data_dir / NAME


def encode(entry: dict[str, Any]) -> bytes:
    """One line; keys sorted so two nodes' lines read alike."""
    return (json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode()


def append(data_dir: Path, entry: dict[str, Any], max_bytes: int = MAX_BYTES) -> None:
    """Append one entry durably, rotating first if the file would grow past
    `max_bytes`. Raises OSError (the caller decides what a failure costs)."""
    line = encode(entry)
    path = data_dir / NAME
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = 0
    if size and size + len(line) > max_bytes:
        os.replace(path, data_dir / OLD)
        size = 0  # a new file (its name and the rename are made durable below)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # after a torn line: ours starts a line of its own
        write_all(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    if not size:
        fsync_dir(data_dir)  # a new file: its name must survive too


@dataclass(slots=True)
class Read:
    entries: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: int = 0  # torn or damaged lines, skipped


def parse(lines: list[bytes], into: Read) -> None:
    for raw in lines:
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except ValueError:
            into.bad_lines += 1
            continue
        if isinstance(entry, dict):
            into.entries.append(entry)
        else:
            into.bad_lines += 1


def read(data_dir: Path) -> Read:
    """Every entry kept, oldest first (the rotated file, then the current)."""
    out = Read()
    for name in (OLD, NAME):
        try:
            data = (data_dir / name).read_bytes()
        except FileNotFoundError:
            continue
        parse(data.splitlines(), out)
    return out
