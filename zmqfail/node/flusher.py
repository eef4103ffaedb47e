"""The checkpoint agent's disk writer, on its own thread.

fsync releases the GIL, so while one batch is being made durable the node's
loop keeps taking and processing requests for the next batch: group commit
that overlaps the disk with the CPU. The thread reports each finished batch on
an inproc PAIR socket so the poll loop wakes up exactly when replies may go.
"""

from __future__ import annotations

import queue
import struct
import threading

import zmq

from zmqfail.errors import LogWriteFailed
from zmqfail.node import clock
from zmqfail.txlog.buffer import Batch
from zmqfail.txlog.segments import DiskLog

_DONE = struct.Struct("<qd")  # flushed lsn (-1 = failure), seconds the write took


class Flusher:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], disklog: DiskLog, name: str) -> None:
        self.disklog = disklog
        self.endpoint = f"inproc://flusher-{name}-{id(self)}"
        self.notify: zmq.Socket[bytes] = ctx.socket(zmq.PAIR)
        self.notify.setsockopt(zmq.LINGER, 0)
        self.notify.bind(self.endpoint)
        self._ctx = ctx
        self._queue: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self.busy = False
        self.error = ""
        self._thread = threading.Thread(target=self._run, name=f"flusher-{name}", daemon=True)
        self._thread.start()

    def submit(self, batch: Batch) -> None:
        self.busy = True
        self._queue.put(batch)

    def recv_done(self) -> tuple[int, float] | None:
        """Read one completion (flushed lsn, seconds); None if nothing is ready."""
        try:
            data = self.notify.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None
        lsn, took = _DONE.unpack(data)
        self.busy = False
        return lsn, took

    def _run(self) -> None:
        out: zmq.Socket[bytes] = self._ctx.socket(zmq.PAIR)
        out.setsockopt(zmq.LINGER, 0)
        out.connect(self.endpoint)
        try:
            while True:
                batch = self._queue.get()
                if batch is None:
                    return
                t0 = clock.now()
                try:
                    self.disklog.write(batch, sync=True)
                except (LogWriteFailed, OSError) as exc:
                    # Durability is gone: the node must not acknowledge anything more.
                    # The message names the file and what to do; the node logs it
                    # once, when it stops (node/storage.py).
                    self.error = str(exc)
                    out.send(_DONE.pack(-1, 0.0))
                    return
                out.send(_DONE.pack(batch.last_lsn, clock.now() - t0))
        finally:
            out.close(linger=0)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        self.notify.close(linger=0)
