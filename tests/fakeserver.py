"""A fake zmqfail server for the client library's tests: no node process,
one ROUTER in a thread speaking just enough of the client protocol."""

from __future__ import annotations

import threading

import zmq

from zmqfail.netutil import free_base_port
from zmqfail.protocol import (
    Hello,
    Message,
    Register,
    ReplyBatch,
    Request,
    RequestBatch,
    SessionGrant,
    Welcome,
    batch_requests,
    decode,
    decode_all,
    encode_batch,
    encode_reply,
)

# A limit order the fake servers take (they answer without reading it).
ORDER = {"op": "new", "instrument": "ABC", "side": "buy", "type": "limit", "qty": 1, "price": "1"}


class FakeServer:
    """A ROUTER that says it is active, grants a session, and (when
    `answer`) answers every request frame with one frame of replies. Every
    other frame it takes (requests, pings) is kept, decoded."""

    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], answer: bool = True, endpoint: str = ""
    ) -> None:
        self.endpoint = endpoint or f"tcp://127.0.0.1:{free_base_port(1)}"
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(self.endpoint)
        self.answer = answer
        self.frames: list[Message] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        s = self.sock
        while not self.stop.is_set():
            if not s.poll(20):
                continue
            ident, data = s.recv_multipart()
            msg = decode(data)
            if isinstance(msg, Register):
                s.send_multipart([ident, SessionGrant(msg.nonce, 1, 256, 1, "x").encode()])
            elif isinstance(msg, Hello):
                s.send_multipart([ident, Welcome("x", 1, True).encode()])
            else:
                self.frames.append(msg)
                reqs = [r for r in decode_all(data) if isinstance(r, Request)]
                if self.answer and reqs:  # a ping is kept, not answered
                    reps = [encode_reply(r.msg_id, "ok", {"n": r.msg_id}, 1, "x") for r in reqs]
                    one = reps[0] if len(reps) == 1 else encode_batch(ReplyBatch, reps)
                    s.send_multipart([ident, one])

    def requests(self) -> list[int]:
        """The msg_ids of every request taken, in the order taken."""
        ids: list[int] = []
        for f in self.frames:
            if isinstance(f, RequestBatch):
                ids.extend(r.msg_id for r in batch_requests(f) if isinstance(r, Request))
            elif isinstance(f, Request):
                ids.append(f.msg_id)
        return ids

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
