"""Digests of large tables, computed in forked children.

A digest hashes every table, which takes longer than the failure-detection
time once the tables are large (about 0.35 s for 100,000 orders). Computed on
the loop it would stop heartbeats and replies, and an operator's `zmqfail
status` could look like a dead primary. A forked child sees the tables as
they were at the fork (copy-on-write) and sends the hex digest back on a pipe;
the control reply is sent when it arrives.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from zmqfail.processor import Processor

INLINE_MAX_ROWS = 5000  # below this a digest takes a few ms: just compute it


@dataclass(slots=True)
class DigestJob:
    pid: int
    fd: int
    ident: bytes
    status: dict[str, Any]


class DigestJobs:
    def __init__(self) -> None:
        self.jobs: list[DigestJob] = []

    @staticmethod
    def small(proc: Processor) -> bool:
        return proc.rows() < INLINE_MAX_ROWS

    def start(self, proc: Processor, ident: bytes, status: dict[str, Any]) -> None:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                os.close(r)
                os.write(w, proc.digest().encode())
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        self.jobs.append(DigestJob(pid, r, ident, status))

    def finished(self) -> list[tuple[bytes, dict[str, Any]]]:
        done: list[tuple[bytes, dict[str, Any]]] = []
        for job in list(self.jobs):
            pid, _status = os.waitpid(job.pid, os.WNOHANG)
            if pid == 0:
                continue
            self.jobs.remove(job)
            with os.fdopen(job.fd, "rb") as f:
                text = f.read().decode(errors="replace")
            job.status["digest"] = text or None
            done.append((job.ident, job.status))
        return done

    def close(self) -> None:
        for job in self.jobs:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(job.pid, 0)
            with contextlib.suppress(OSError):
                os.close(job.fd)
        self.jobs = []
