"""The client identity of `zmqfail client ...`: one client id per user, and
msg_ids that keep growing from one run to the next.

An order belongs to the client id that placed it, so a CLI that took a new
random id per call could never cancel what it placed. Reusing an id has its
own rule: the server answers a known `(client_id, msg_id)` from its stored
reply and refuses a msg_id at or below one it has forgotten, so a msg_id must
never be used twice under one id. Each call therefore reserves its msg_ids in
a state file *before* sending (a call killed mid-request cannot hand its msg_id
to the next one), and never goes below the wall clock in microseconds, so a
lost state file or another machine using the same id still numbers upward as
long as clocks do.

Calls under one user run one at a time (an flock on the state directory):
the server routes replies by client id, and two processes connected under
one id at once would take each other's replies.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from zmqfail.errors import ConfigError, ZmqfailError
from zmqfail.protocol import MAX_ID_LEN

STATE_FILE = "client.json"
LOCK_FILE = "client.lock"


def state_dir() -> Path:
    """$XDG_STATE_HOME/zmqfail, by default ~/.local/state/zmqfail."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "zmqfail"


def new_client_id() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = "user"
    user = "".join(ch for ch in user if ch.isalnum() or ch in "-_.")[:32] or "user"
    return f"cli-{user}-{uuid.uuid4().hex[:8]}"


def check_client_id(client_id: str) -> str:
    if not 0 < len(client_id) <= MAX_ID_LEN or not client_id.isprintable():
        raise ConfigError(f"--client-id must be 1..{MAX_ID_LEN} printable characters")
    return client_id


@dataclass
class Identity:
    """A locked identity; `reserve` hands out msg_ids and records them at once."""

    client_id: str
    path: Path
    state: dict[str, object]
    clock: Callable[[], float]

    def reserve(self, count: int = 1) -> int:
        """The first of `count` fresh msg_ids, written to the state file before use."""
        table = self.state.setdefault("next_msg_id", {})
        assert isinstance(table, dict)
        stored = table.get(self.client_id, 1)
        first = max(int(stored) if isinstance(stored, int) else 1, int(self.clock() * 1e6))
        table[self.client_id] = first + count
        _write(self.path, self.state)
        return first


def _write(path: Path, state: dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(state, f, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, object]:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ZmqfailError(
            f"cannot read {path} ({exc}); move it aside to start with a new client id"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("next_msg_id", {}), dict):
        raise ZmqfailError(f"{path} is not a zmqfail client state file; move it aside")
    return state


@contextlib.contextmanager
def claim(
    client_id: str | None,
    wait: float,
    directory: Path | None = None,
    clock: Callable[[], float] = time.time,
) -> Iterator[Identity]:
    """Lock the user's client state (waiting up to `wait` seconds for another
    call to finish) and yield the identity to use: `client_id` if given, else
    the user's stored id, made on first use."""
    d = directory or state_dir()
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_fd = os.open(d / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ZmqfailError(f"cannot use the client state directory {d}: {exc.strerror}") from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ZmqfailError(
                        f"another zmqfail client command holds {d / LOCK_FILE} "
                        f"(waited {wait:g}s); they run one at a time"
                    ) from None
                time.sleep(0.01)
        path = d / STATE_FILE
        state = _read(path)
        if client_id is None:
            stored = state.get("client_id")
            if not isinstance(stored, str) or not stored:
                stored = state["client_id"] = new_client_id()
                _write(path, state)
            client_id = stored
        yield Identity(check_client_id(client_id), path, state, clock)
    finally:
        os.close(lock_fd)  # closing the descriptor releases the lock
