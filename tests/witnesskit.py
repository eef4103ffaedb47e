"""A server's side of the witness protocol, for tests: one DEALER asking."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import zmq

from zmqfail.config import WitnessConfig
from zmqfail.protocol import Message, WitnessAnswer, WitnessAsk, WitnessKind, decode, decode_as
from zmqfail.witness.server import WitnessServer


class Asker:
    """Asks as server `server` would; each answer must echo its ask's nonce."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, server: str) -> None:
        self.server = server
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.nonces = itertools.count(1)

    def ask(self, kind: WitnessKind, epoch: int, known: int, timeout: float = 5.0) -> WitnessAnswer:
        nonce = next(self.nonces)
        self.sock.send(WitnessAsk(self.server, kind.value, epoch, known, nonce).encode())
        ans = decode_as(self.recv(timeout), WitnessAnswer)
        assert ans.nonce == nonce, (ans, nonce)
        return ans

    def elect(self, epoch: int, known: int, timeout: float = 5.0) -> WitnessAnswer:
        return self.ask(WitnessKind.ELECT, epoch, known, timeout)

    def lease(self, epoch: int, timeout: float = 5.0) -> WitnessAnswer:
        return self.ask(WitnessKind.LEASE, epoch, epoch, timeout)

    def send_raw(self, *frames: bytes) -> None:
        self.sock.send_multipart(list(frames))

    def recv(self, timeout: float = 5.0) -> bytes:
        if not self.sock.poll(int(timeout * 1000)):
            raise TimeoutError(f"no answer from the witness within {timeout}s")
        return self.sock.recv()

    def recv_msg(self, timeout: float = 5.0) -> Message:
        return decode(self.recv(timeout))

    def close(self) -> None:
        self.sock.close(linger=0)


def status_of(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> dict[str, Any]:
    from zmqfail.client.control import call

    return call(endpoint, "status", {}, 2.0, ctx)


class Running:
    """A witness on a thread of the test process, with its own context."""

    def __init__(self, cfg: WitnessConfig) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.server = WitnessServer(cfg, self.ctx)
        self.server.open()
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.rc = self.server.run()

    def asker(self, name: str) -> Asker:
        return Asker(self.ctx, self.server.cfg.endpoint, name)

    def stop(self) -> int | None:
        self.server.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.ctx.destroy(linger=0)
        return self.rc
