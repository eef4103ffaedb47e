"""A simulated network, with the delivery guarantees ZeroMQ over TCP gives.

Three networks, as in a real deployment: the two replication links (`main`,
`failsafe`) and the client network (`clients`). A cut blocks one direction
between two hosts on one network. Frames on one connection (a sender, a
receiver, a socket) arrive in order and none is skipped: TCP retransmits
through a cut cable, so frames sent into a cut are held and arrive, in order,
once it heals. They are lost only with their connection: when a process
dies or restarts, or a socket is closed and reopened (a reset REQ/PUSH).
Heartbeats (PUB/SUB) may also be dropped, as a PUB does for a slow
subscriber. Different connections race each other; extra delay can be put on
any direction of any network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from zmqfail.sim.loop import Loop

NETS = ("main", "failsafe", "clients")
LATENCY = (0.00005, 0.0002)  # seconds: base, spread
HEARTBEAT = "hb"


@dataclass(slots=True)
class Frame:
    src: str
    dst: str
    net: str
    pipe: tuple[str, str, str]
    gen: tuple[int, int, int]
    deliver: Callable[[], None]


class SimNet:
    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.blocked: set[tuple[str, str, str]] = set()  # (src, dst, net)
        self.delay: dict[tuple[str, str, str], float] = {}  # extra seconds on (src, dst, net)
        self.hb_loss = 0.0  # probability a heartbeat is dropped
        self.held: dict[tuple[str, str, str], list[Frame]] = {}  # by (src, dst, net), in order
        self._pipe_at: dict[tuple[str, str, str], float] = {}  # last delivery per connection
        self._pipe_gen: dict[tuple[str, str, str], int] = {}
        self.starts: dict[str, int] = {}  # process incarnations: a restart drops connections
        self.sent = 0
        self.dropped = 0

    # ------------------------------------------------------------- faults
    def cut(self, a: str, b: str, net: str, both: bool = True) -> None:
        self.blocked.add((a, b, net))
        if both:
            self.blocked.add((b, a, net))

    def heal(self, a: str, b: str, net: str) -> None:
        for key in ((a, b, net), (b, a, net)):
            self.blocked.discard(key)
            self._release(key)

    def heal_all(self) -> None:
        for key in list(self.blocked):
            self.blocked.discard(key)
            self._release(key)
        self.delay.clear()
        self.hb_loss = 0.0

    def reset_pipe(self, src: str, dst: str, kind: str) -> None:
        """A socket closed and reopened: what it had on the way is lost."""
        key = (src, dst, kind)
        self._pipe_gen[key] = self._pipe_gen.get(key, 0) + 1

    def restarted(self, host: str) -> None:
        """A process died (or restarted): its connections are gone."""
        self.starts[host] = self.starts.get(host, 0) + 1

    # ------------------------------------------------------------ sending
    def send(self, src: str, dst: str, net: str, kind: str, deliver: Callable[[], None]) -> None:
        self.sent += 1
        if kind == HEARTBEAT and self.hb_loss and self.loop.rng.random() < self.hb_loss:
            self.dropped += 1
            return
        pipe = (src, dst, kind)
        gen = (self._pipe_gen.get(pipe, 0), self.starts.get(src, 0), self.starts.get(dst, 0))
        frame = Frame(src, dst, net, pipe, gen, deliver)
        if (src, dst, net) in self.blocked:
            self.held.setdefault((src, dst, net), []).append(frame)
            return
        self._schedule(frame)

    def _schedule(self, f: Frame) -> None:
        loop = self.loop
        when = loop.now + loop.jitter(*LATENCY) + self.delay.get((f.src, f.dst, f.net), 0.0)
        when = max(when, self._pipe_at.get(f.pipe, 0.0))
        self._pipe_at[f.pipe] = when
        loop.at(when, lambda: self._arrive(f))

    def _arrive(self, f: Frame) -> None:
        if (f.src, f.dst, f.net) in self.blocked:
            self.held.setdefault((f.src, f.dst, f.net), []).append(f)  # waits for the heal
            return
        if not self._alive(f):
            self.dropped += 1
            return
        f.deliver()

    def _alive(self, f: Frame) -> bool:
        src, dst, _kind = f.pipe
        now = (self._pipe_gen.get(f.pipe, 0), self.starts.get(src, 0), self.starts.get(dst, 0))
        return now == f.gen

    def _release(self, key: tuple[str, str, str]) -> None:
        for f in self.held.pop(key, []):
            if self._alive(f):
                self._schedule(f)
            else:
                self.dropped += 1
