"""A simulated network: delay, loss, partitions (any direction), per pipe.

Three networks, as in a real deployment: the two replication links (`main`,
`failsafe`) and the client network (`clients`). A partition blocks one
direction between two hosts on one network (so one-way and link-only faults
are the same thing). Frames on one pipe (a sender, a receiver, a socket)
arrive in order, as over one TCP connection; different pipes race each other.
A frame is checked against partitions when sent and when it arrives (a cut
at the edge drops what reaches it). Resetting a pipe (a REQ/PUSH closed and
reopened) drops what was still on the way.
"""

from __future__ import annotations

from collections.abc import Callable

from zmqfail.sim.loop import Loop

NETS = ("main", "failsafe", "clients")
LATENCY = (0.00005, 0.0002)  # seconds: base, spread


class SimNet:
    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.blocked: set[tuple[str, str, str]] = set()  # (src, dst, net)
        self.delay: dict[tuple[str, str, str], float] = {}  # extra seconds on (src, dst, net)
        self.loss: dict[str, float] = {}  # net -> probability a frame is lost
        self._pipe_at: dict[tuple[str, str, str], float] = {}  # last delivery per pipe
        self._pipe_gen: dict[tuple[str, str, str], int] = {}
        self.sent = 0
        self.dropped = 0

    def cut(self, a: str, b: str, net: str, both: bool = True) -> None:
        self.blocked.add((a, b, net))
        if both:
            self.blocked.add((b, a, net))

    def heal_all(self) -> None:
        self.blocked.clear()
        self.delay.clear()
        self.loss.clear()

    def reset_pipe(self, src: str, dst: str, kind: str) -> None:
        key = (src, dst, kind)
        self._pipe_gen[key] = self._pipe_gen.get(key, 0) + 1

    def send(self, src: str, dst: str, net: str, kind: str, deliver: Callable[[], None]) -> None:
        self.sent += 1
        rng = self.loop.rng
        if (src, dst, net) in self.blocked or rng.random() < self.loss.get(net, 0.0):
            self.dropped += 1
            return
        pipe = (src, dst, kind)
        gen = self._pipe_gen.get(pipe, 0)
        when = self.loop.now + self.loop.jitter(*LATENCY) + self.delay.get((src, dst, net), 0.0)
        when = max(when, self._pipe_at.get(pipe, 0.0))
        self._pipe_at[pipe] = when

        def arrive() -> None:
            if (src, dst, net) in self.blocked or self._pipe_gen.get(pipe, 0) != gen:
                self.dropped += 1
                return
            deliver()

        self.loop.at(when, arrive)
