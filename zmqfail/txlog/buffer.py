"""The append side of the transaction log: records framed into a buffer that
the disk writer takes whole.

Pure (bytes in, bytes out): the node core owns one and hands each `Batch` to
its disk port, which writes and fsyncs it on another thread (or, in the
simulator, keeps it in RAM until a simulated fsync). `take` swaps in a fresh
buffer, so the writer never shares a mutable object with the core.
"""

from __future__ import annotations

from dataclasses import dataclass

from zmqfail.txlog.frames import FRAME_HEADER, MAX_PAYLOAD, frame_crc


@dataclass(frozen=True, slots=True)
class Batch:
    """Encoded frames taken from the buffer, ready to be written as one unit."""

    frames: bytearray
    first_lsn: int
    last_lsn: int
    count: int
    nbytes: int


class LogBuffer:
    def __init__(self, next_lsn: int) -> None:
        if next_lsn < 1:
            raise ValueError(f"next_lsn must be >= 1, got {next_lsn}")
        self._next_lsn = next_lsn
        self._buf = bytearray()
        self._buf_first = next_lsn
        self.pending_records = 0
        self.pending_bytes = 0

    @property
    def next_lsn(self) -> int:
        """The lsn the next ``append`` must carry."""
        return self._next_lsn

    def append(self, lsn: int, payload: bytes) -> None:
        if lsn != self._next_lsn:
            raise ValueError(f"append out of order: expected lsn {self._next_lsn}, got {lsn}")
        n = len(payload)
        if n > MAX_PAYLOAD:
            raise ValueError(f"payload of {n} bytes exceeds the {MAX_PAYLOAD} byte limit")
        buf = self._buf
        buf += FRAME_HEADER.pack(n, frame_crc(lsn, payload), lsn)
        buf += payload
        self._next_lsn = lsn + 1
        self.pending_records += 1
        self.pending_bytes += FRAME_HEADER.size + n

    def take(self) -> Batch | None:
        if not self.pending_records:
            return None
        batch = Batch(
            self._buf,
            self._buf_first,
            self._next_lsn - 1,
            self.pending_records,
            self.pending_bytes,
        )
        self._buf = bytearray()
        self._buf_first = self._next_lsn
        self.pending_records = 0
        self.pending_bytes = 0
        return batch
