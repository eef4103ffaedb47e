"""The witness process: the shell around `Witness` (logic.py).

One ROUTER on `[witness] endpoint` takes `w_ask` from the servers and `ctl`
status requests from operator tools. Each turn of the loop reads the clock
once, answers what arrived, and stores a granted election before its answer
is sent. A frame it cannot decode is counted and answered with an error (or
dropped when its framing leaves no one sure to answer): no input stops the
witness. A store that cannot be written stops it with exit status 3 and no
answer to that election, as a node stops on a failed log write: a grant that
is not on disk could be granted again after a restart.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import zmq

from zmqfail.config import WitnessConfig
from zmqfail.errors import ProtocolError, WitnessError
from zmqfail.node import clock
from zmqfail.protocol import (
    Channel,
    ControlReply,
    ControlRequest,
    WitnessAnswer,
    WitnessAsk,
    WitnessKind,
    decode,
    limit_socket,
)
from zmqfail.security import Curve, ServerKeys
from zmqfail.witness.logic import Verdict, Witness, reply
from zmqfail.witness.store import Store
from zmqfail.zap import Authenticator, for_witness, stopped_on_failure

log = logging.getLogger("zmqfail.witness")

TURN_MS = 100  # the longest poll: how soon a signal's stop flag is seen
BATCH = 256  # frames answered per turn before the clock is read again
EXIT_STORE_FAILED = 3


class WitnessServer:
    def __init__(
        self, cfg: WitnessConfig, ctx: zmq.Context[zmq.Socket[bytes]] | None = None
    ) -> None:
        self.cfg = cfg
        self.ctx: zmq.Context[zmq.Socket[bytes]] = ctx or zmq.Context.instance()
        self.store = Store(cfg.data_dir)
        self.stopping = False
        self.exit_code = 0
        self.bad_frames = 0
        self.renewals = 0
        self.unsent = 0  # answers dropped because the asker's queue was full
        self.auth: Authenticator | None = None

    def open(self) -> None:
        # Keys first: a missing one is one line, and nothing was opened.
        keys, self.auth = for_witness(self.cfg.security, self.ctx)
        with stopped_on_failure(self.auth):
            self._open(keys)

    def _open(self, keys: ServerKeys | None) -> None:
        stored = self.store.open()
        now = clock.now()
        self.started = now
        self.logic = Witness(stored, self.cfg.lease_ms / 1000.0, now)
        sock: zmq.Socket[bytes] = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        limit_socket(sock, Channel.CONTROL)
        if keys is not None:
            keys.serve(sock, Curve.WITNESS)
        try:
            sock.bind(self.cfg.endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            self.store.close()
            raise WitnessError(f"cannot listen on {self.cfg.endpoint}: {exc}") from None
        self.sock = sock

    def _where(self) -> tuple[str, str]:
        return self.cfg.endpoint, str(self.cfg.data_dir)

    def stop(self) -> None:
        self.stopping = True

    # ------------------------------------------------------------------- loop
    def run(self) -> int:
        """Serve until stopped; the exit status (0, or 3: the store failed)."""
        g = self.logic.stored
        if g.leader:
            log.info(
                "witness on %s, data %s: epoch %d granted to %s, who may still hold a "
                "lease: no other server is elected for %.3f s",
                *self._where(),
                g.epoch,
                g.leader,
                self.logic.lease,
            )
        else:
            log.info("witness on %s, data %s: nothing granted yet", *self._where())
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        try:
            while not self.stopping:
                if not poller.poll(TURN_MS):
                    continue
                now = clock.now()  # the reading the whole turn works with
                self.turn(now)
        except WitnessError as exc:
            log.critical("%s; stopping without answering that election", exc)
            self.exit_code = EXIT_STORE_FAILED
        finally:
            self.close()
        return self.exit_code

    def turn(self, now: float) -> None:
        for _ in range(BATCH):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                self.bad_frames += 1  # no one sure to answer: dropped and counted
                continue
            ident, payload = frames
            answer = self.answer(payload, now)
            try:
                self.sock.send_multipart((ident, answer), zmq.NOBLOCK)
            except zmq.Again:
                self.unsent += 1

    def answer(self, payload: bytes, now: float) -> bytes:
        """The reply to one frame. A granted election is stored before this returns."""
        try:
            msg = decode(payload)
            if isinstance(msg, WitnessAsk):
                return self._ask(msg, now).encode()
            if isinstance(msg, ControlRequest):
                return self._control(msg, now).encode()
            raise ProtocolError(f"expected w_ask or ctl, got {msg.TYPE}")
        except ProtocolError as exc:
            self.bad_frames += 1
            return ControlReply(False, {}, f"bad frame: {exc}").encode()

    def _ask(self, ask: WitnessAsk, now: float) -> WitnessAnswer:
        w = self.logic
        if ask.kind == WitnessKind.ELECT.value:
            before = w.stored
            v = w.elect(ask.server, ask.epoch, ask.known, now)
            if v.granted and w.stored != before:
                self.store.save(w.stored)  # durable before anyone hears of it
                log.info(
                    "elected %s at epoch %d (it knows epoch %d); lease %.3f s",
                    ask.server,
                    ask.epoch,
                    ask.known,
                    w.lease,
                )
            elif v.granted:  # asked again: the same grant, already on disk
                log.info(
                    "elected %s at epoch %d again (its answer was lost or late)",
                    ask.server,
                    ask.epoch,
                )
            else:  # one template per kind: the repeat filter keeps them apart
                log.warning(
                    "refused election of %s at epoch %d (it knows epoch %d): %s",
                    ask.server,
                    ask.epoch,
                    ask.known,
                    v.why,
                )
        else:
            v = w.renew(ask.server, ask.epoch, now)
            self.renewals += v.granted
            if not v.granted:
                log.warning("refused lease of %s at epoch %d: %s", ask.server, ask.epoch, v.why)
        return self._reply(v, ask.nonce)

    def _reply(self, v: Verdict, nonce: int) -> WitnessAnswer:
        return reply(v, nonce, self.cfg.lease_ms)

    def _control(self, req: ControlRequest, now: float) -> ControlReply:
        if req.command != "status":
            raise ProtocolError(f"the witness answers only 'status', not {req.command!r}")
        return ControlReply(True, self.status(now), "")

    def status(self, now: float) -> dict[str, Any]:
        w = self.logic
        holder = w.live_holder(now)
        return {
            "name": "witness",
            "role": "witness",
            "endpoint": self.cfg.endpoint,
            "epoch": w.stored.epoch,
            "leader": w.stored.leader,
            "lease_holder": holder,
            "lease_left_ms": round((w.until - now) * 1000) if holder else 0,
            "lease_ms": self.cfg.lease_ms,
            "elections": w.elections,
            "refusals": w.refusals,
            "renewals": self.renewals,
            "bad_frames": self.bad_frames,
            "unsent": self.unsent,
            "pid": os.getpid(),
            "up_s": round(now - self.started, 3),
        }

    def close(self) -> None:
        self.sock.close(linger=0)
        self.store.close()
        if self.auth is not None:
            self.auth.close()
        g = self.logic.stored
        log.info("witness stopped at epoch %d (leader %s)", g.epoch, g.leader or "nobody")
