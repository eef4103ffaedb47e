"""The request history a bench can write for an independent checker.

One JSON object per line: ``invoke`` when a request is submitted, and exactly
one completion for it: ``ok`` (an ok or rejected reply: the cluster committed
to an answer), ``fail`` (an error reply: certainly not applied) or ``info``
(no reply, or a ``stale`` or ``expired`` one: the outcome is unknown). Times are
``time.monotonic()``, which on Linux is CLOCK_MONOTONIC and so one clock for
every client process. Each client writes its own part file (no locking, no
interleaving inside a line) and the parent merges the parts by time.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from zmqfail.protocol import STATUS_EXPIRED, STATUS_OK, STATUS_REJECTED, STATUS_STALE


def completion_type(status: str) -> str:
    """History type of a reply with `status`."""
    if status in (STATUS_OK, STATUS_REJECTED):
        return "ok"
    if status in (STATUS_STALE, STATUS_EXPIRED):
        return "info"  # the server no longer knows whether it processed the request
    return "fail"


class HistoryWriter:
    def __init__(self, path: Path, client_id: str) -> None:
        self.path = path
        self.client_id = client_id
        self._f: IO[str] = open(path, "w", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115

    def _write(self, event: dict[str, Any]) -> None:
        self._f.write(json.dumps(event, separators=(",", ":")) + "\n")

    def invoke(self, t: float, msg_id: int, body: dict[str, Any]) -> None:
        self._write(
            {
                "type": "invoke",
                "client_id": self.client_id,
                "msg_id": msg_id,
                "time": t,
                "body": body,
            }
        )

    def complete(
        self,
        t: float,
        kind: str,
        msg_id: int,
        server: str | None,
        epoch: int | None,
        status: str | None,
        result: dict[str, Any] | None,
    ) -> None:
        self._write(
            {
                "type": kind,
                "client_id": self.client_id,
                "msg_id": msg_id,
                "time": t,
                "server": server,
                "epoch": epoch,
                "status": status,
                "result": result,
            }
        )

    def close(self) -> None:
        self._f.close()


def _events(path: Path) -> Iterator[tuple[float, str]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)["time"], line


def merge_parts(parts: Sequence[Path], out: Path) -> int:
    """Merge part files (each already in time order) into `out` by time; returns
    the number of lines. Streams, so a long run never sits in memory whole."""
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for _, line in heapq.merge(*(_events(p) for p in parts if p.exists())):
            f.write(line if line.endswith("\n") else line + "\n")
            n += 1
    return n
