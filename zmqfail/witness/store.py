"""The witness's one durable fact, and its data directory.

The witness promises never to grant the same epoch twice and never to elect a
server that missed an epoch it granted. Both promises rest on the stored
(epoch, leader): it is written atomically (temporary file, fsync, rename,
fsync of the directory) before an election's answer leaves the process, and
read back at start. A store that cannot be read is an error, never epoch 0:
a witness that forgot a grant could elect a stale server (the double failure
it exists to prevent).

The file is JSON (an operator can read it with `cat`) with a crc over its
fields, so a flipped byte is caught rather than believed. The directory
itself is locked (flock on it) for the witness's lifetime: two witnesses on
one directory would each grant from their own memory. A directory holding
anything but the store is known to have held one (the `WITNESS` file stays
after a clean stop): a deleted store is an error, not a new start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import zlib
from pathlib import Path
from typing import Any

from zmqfail.errors import WitnessError
from zmqfail.protocol import MAX_ID_LEN
from zmqfail.txlog.fsutil import atomic_write, ensure_dir, write_file
from zmqfail.witness.logic import Granted

STORE_NAME = "granted.json"
PID_NAME = "witness.pid"
MARK_NAME = "WITNESS"  # written once, after the first store: the directory is in use
MARK_TEXT = (
    "The data directory of a zmqfail witness. granted.json is the newest epoch it\n"
    "granted and to whom; without it the witness will not start (docs/operations.md).\n"
)
FORMAT = 1


def _fresh_ok(name: str) -> bool:
    # A temporary file of an interrupted first write counts as nothing written.
    return name.startswith(f".{STORE_NAME}.")


def _crc(fmt: int, epoch: int, leader: str) -> int:
    return zlib.crc32(f"{fmt}:{epoch}:{leader}".encode())


def encode(g: Granted) -> bytes:
    body = {"format": FORMAT, "epoch": g.epoch, "leader": g.leader}
    body["crc"] = _crc(FORMAT, g.epoch, g.leader)
    return (json.dumps(body, sort_keys=True) + "\n").encode()


def decode(data: bytes, where: str, advice: str = "") -> Granted:
    """The stored fact, or WitnessError saying what is wrong with the file
    (and what to do: `advice`, by default the built-in witness's)."""

    def bad(reason: str) -> WitnessError:
        return WitnessError(f"{where}: damaged witness store ({reason}); {advice or ADVICE}")

    try:
        obj: Any = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"not JSON: {exc}") from None
    if not isinstance(obj, dict) or set(obj) != {"format", "epoch", "leader", "crc"}:
        raise bad("expected an object with format, epoch, leader, crc")
    fmt, epoch, leader, crc = obj["format"], obj["epoch"], obj["leader"], obj["crc"]
    if fmt != FORMAT or isinstance(fmt, bool):
        raise bad(f"format {fmt!r}, this witness reads format {FORMAT}")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise bad(f"epoch {epoch!r} is not a whole number >= 0")
    if not isinstance(leader, str) or len(leader) > MAX_ID_LEN or (epoch > 0) != bool(leader):
        raise bad(f"leader {leader!r} does not fit epoch {epoch}")
    if crc != _crc(fmt, epoch, leader):
        raise bad("crc mismatch")
    return Granted(epoch, leader)


ADVICE = (
    "the witness will not start from a guess (it could elect a server that missed "
    "an epoch). If both servers run paired in the normal state (`zmqfail status`), "
    "neither is stale: remove the witness's data dir and start it again (it starts "
    "at epoch 0 and follows the servers' next election)"
)


class Store:
    """The witness's data directory: locked while this object is open."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / STORE_NAME
        self._lock_fd = -1

    def open(self) -> Granted:
        """Lock the directory and read the stored fact (a new directory starts at 0)."""
        d = self.data_dir
        if d.exists() and not d.is_dir():
            raise WitnessError(f"witness data dir {d} is not a directory")
        try:
            ensure_dir(d)
            self._lock()
            fresh = all(_fresh_ok(p.name) for p in d.iterdir())
        except OSError as exc:
            self.close()
            raise WitnessError(f"cannot use witness data dir {d}: {exc.strerror}") from None
        try:
            stored = self._read(fresh)
            mark = d / MARK_NAME
            if not mark.exists():  # after the store, so a start cut short here was new
                write_file(mark, MARK_TEXT.encode())
            write_file(d / PID_NAME, f"{os.getpid()}\n".encode())
        except BaseException:
            self.close()
            raise
        return stored

    def _read(self, fresh: bool) -> Granted:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            if not fresh:
                raise WitnessError(
                    f"{self.data_dir} holds other files but no {STORE_NAME}: it was deleted, "
                    f"or this is not the witness's data dir; {ADVICE}"
                ) from None
            first = Granted()
            self.save(first)  # from now on a missing file is a loss, not a new start
            return first
        except OSError as exc:
            raise WitnessError(f"cannot read witness store {self.path}: {exc.strerror}") from None
        return decode(data, str(self.path))

    def save(self, g: Granted) -> None:
        """Durable when it returns; WitnessError when the disk refused."""
        try:
            atomic_write(self.path, encode(g))
        except OSError as exc:
            raise WitnessError(f"cannot write witness store {self.path}: {exc.strerror}") from None

    def _lock(self) -> None:
        fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pidfile = self.data_dir / PID_NAME
            try:
                pid = pidfile.read_text().strip() or "?"
            except OSError:
                pid = "?"
            raise WitnessError(
                f"witness data dir {self.data_dir} is in use by another witness (pid {pid})"
            ) from None
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd < 0:
            return
        with contextlib.suppress(OSError):
            (self.data_dir / PID_NAME).unlink()
        os.close(self._lock_fd)
        self._lock_fd = -1
