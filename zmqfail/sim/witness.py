"""The witness in the simulator: the real decisions (zmqfail/witness/logic.py)
behind a simulated host `w` on the client network. Its durable fact survives
a crash (it is stored before an answer goes out); its leases do not, and
after a restart it honours a possibly-live lease of its last leader, as the
real one does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zmqfail.errors import ProtocolError
from zmqfail.protocol import WitnessAnswer, WitnessAsk, WitnessKind, decode_as
from zmqfail.witness.logic import Granted, Witness

if TYPE_CHECKING:
    from zmqfail.sim.cluster import Cluster

NAME = "w"


class SimWitness:
    def __init__(self, cluster: Cluster, lease: float) -> None:
        self.cluster = cluster
        self.lease = lease
        self.stored = Granted()  # on disk
        self.logic = Witness(self.stored, lease, cluster.loop.now)
        self.up = True

    def crash(self) -> None:
        self.up = False
        self.cluster.net.restarted(NAME)

    def restart(self) -> None:
        if not self.up:
            self.logic = Witness(self.stored, self.lease, self.cluster.loop.now)
            self.up = True

    def ask(self, server: str, data: bytes) -> None:
        if not self.up:
            return
        try:
            ask = decode_as(data, WitnessAsk)
        except ProtocolError:
            return
        now = self.cluster.loop.now
        if ask.kind == WitnessKind.ELECT.value:
            verdict = self.logic.elect(ask.server, ask.epoch, ask.known, now)
            self.stored = self.logic.stored  # durable before the answer
            if verdict.granted:
                self.cluster.log(f"witness elects {ask.server} at epoch {ask.epoch}")
        else:
            verdict = self.logic.renew(ask.server, ask.epoch, now)
        answer = WitnessAnswer(
            verdict.granted,
            verdict.epoch,
            verdict.leader,
            round(self.lease * 1000),
            ask.nonce,
            verdict.why[:200],
        ).encode()
        target = self.cluster.servers.get(server)
        if target is not None:
            self.cluster.net.send(
                NAME, server, "clients", "w-answer", lambda: target.deliver("witness", answer)
            )
