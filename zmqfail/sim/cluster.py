"""A whole simulated cluster: servers, clients, network, disks and clock, and
the operations a fault schedule uses. `run` plays a schedule, heals every
fault, restarts every server, checks that service resumes and the invariants
hold, and returns what it found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import msgpack

from zmqfail import config
from zmqfail.apps.ledger.settings import parse as ledger_settings
from zmqfail.config import ClusterConfig
from zmqfail.failover.state import Role, State
from zmqfail.policies import Durability
from zmqfail.sim.check import (
    Truth,
    Violation,
    check_history,
    check_ledger,
    check_split,
    check_told,
)
from zmqfail.sim.client import SimClient
from zmqfail.sim.loop import Loop
from zmqfail.sim.net import SimNet
from zmqfail.sim.server import SimServer
from zmqfail.sim.witness import SimWitness
from zmqfail.txlog.record import REGISTER

SETTLE = 1.0  # seconds before faults start: the pair forms
RESUME_WITHIN = 8.0  # once healed, service must resume within this (liveness)


# Timing of the simulated cluster: the production ratios, slower, so that a run
# takes few events (heartbeats and ticks dominate): dead after 300 ms.
FAILOVER = {
    "heartbeat_interval_ms": 100,
    "heartbeat_misses": 3,
    "client_timeout_ms": 300,
    "link_timeout_ms": 300,
}
TICK = 0.05


WITNESS_LEASE = 1.0  # seconds


def sim_config(
    nodes: int,
    witness: bool = False,
    app: str = "orders",
    durability: Durability = Durability.MEMORY,
    **failover: int,
) -> ClusterConfig:
    text = config.render(nodes=nodes, base_port=20000, app=app)
    cfg = config.loads(text, Path("/nonexistent"))
    cfg = replace(cfg, flush=replace(cfg.flush, durability=durability))
    if failover:
        cfg = replace(cfg, failover=replace(cfg.failover, **failover))
    if witness:
        lease_ms = round(WITNESS_LEASE * 1000)
        w = config.WitnessConfig("tcp://127.0.0.1:1", Path("/nonexistent/w"), lease_ms)
        cfg = replace(cfg, witness=w)
    return cfg


@dataclass(slots=True)
class Outcome:
    seed: int
    violations: list[Violation] = field(default_factory=list)
    acked: int = 0
    faults: int = 0
    events: int = 0
    sim_seconds: float = 0.0
    trace: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


class Cluster:
    def __init__(
        self,
        seed: int,
        nodes: int = 2,
        clients: int = 2,
        window: int = 2,
        think: float = 0.1,
        witness: bool = False,
        app: str = "orders",
        durability: Durability = Durability.MEMORY,
    ) -> None:
        self.loop = Loop(seed)
        self.app = app
        self.cfg = sim_config(nodes, witness, app, durability, **FAILOVER)
        self.tick = TICK
        self.net = SimNet(self.loop)
        self.truth = Truth(keep=app == "ledger")
        self.trace: list[str] = []
        self.faults = 0
        self.healed = False  # after the heal, a server that stops is restarted
        self.servers: dict[str, SimServer] = {
            n.name: SimServer(self, n.name) for n in self.cfg.nodes
        }
        self.clients = [SimClient(self, f"c-{i}", window, think) for i in range(clients)]
        self.clients_by_ident = {c.ident: c for c in self.clients}
        self.witness = SimWitness(self, WITNESS_LEASE) if witness else None

    # ---------------------------------------------------------- bookkeeping
    def recorder(self, name: str) -> Callable[[int, bytes], None]:
        truth = self.truth
        records, payloads = truth.records, truth.payloads

        def note(lsn: int, payload: bytes) -> None:
            core = self.servers[name].core
            assert core is not None
            term = core.nlog.proc.history.last
            assert term is not None
            obj = msgpack.unpackb(payload, raw=False, strict_map_key=False)
            # A registration (or a system record) is no request of the workload.
            records[(term.term_id, lsn)] = (obj[2], obj[3]) if obj[3] != REGISTER else None
            if truth.keep:
                payloads[(term.term_id, lsn)] = payload

        return note

    def log(self, text: str) -> None:
        self.trace.append(f"{self.loop.now:9.4f} {text}")

    def stopped(self, server: SimServer) -> None:
        """A node stopped itself (a failed disk write): as a crash, logged."""
        self.log(f"{server.name} stopped (exit {server.core.exit_code if server.core else '?'})")
        server.crash()
        if self.healed:  # as systemd would
            self.loop.after(0.5, lambda: self.restart(server.name))

    # ----------------------------------------------------------- operations
    def start(self) -> None:
        for s in self.servers.values():
            s.start()
        for c in self.clients:
            c.start()

    def crash(self, name: str) -> None:
        self.faults += 1
        self.log(f"crash {name}")
        self.servers[name].crash()

    def restart(self, name: str) -> None:
        s = self.servers[name]
        if not s.up:
            self.log(f"restart {name}")
            s.start()

    def pause(self, name: str) -> None:
        self.faults += 1
        self.log(f"pause {name}")
        self.servers[name].pause()

    def resume(self, name: str) -> None:
        self.log(f"resume {name}")
        self.servers[name].resume()

    def cut(self, a: str, b: str, net: str, both: bool = True) -> None:
        self.faults += 1
        self.log(f"cut {a} {'<->' if both else '->'} {b} on {net}")
        self.net.cut(a, b, net, both)

    def power_loss(self) -> None:
        self.faults += 1
        self.log("power loss")
        for s in self.servers.values():
            s.crash()

    def heal(self) -> None:
        self.log("heal everything")
        self.healed = True
        self.net.heal_all()
        if self.witness is not None:
            self.witness.restart()
        for s in self.servers.values():
            s.resume()
            s.disk.fail_flushes = s.disk.fail_drains = 0
        for s in self.servers.values():
            if not s.up:
                s.start()

    def settled(self) -> str | None:
        """The primary, when one serves and every other server that is up
        follows it, at its epoch, in the normal state: one history to check
        against."""
        primary = self.primary()
        if primary is None:
            return None
        lead = self.servers[primary].core
        assert lead is not None
        epoch = lead.agent.fs.epoch
        for name, s in self.servers.items():
            if name == primary or not s.up or s.core is None:
                continue
            fs = s.core.agent.fs
            if (fs.state, fs.role, fs.primary, fs.epoch) != (
                State.NORMAL,
                Role.BACKUP,
                primary,
                epoch,
            ):
                return None
        return primary

    def primary(self) -> str | None:
        for name, s in self.servers.items():
            if s.up and s.core is not None and s.core.agent.fs.active:
                return name
        return None

    def resumed(self, c: SimClient, primary: str, healed: float, mark: int) -> int:
        """Acks `c` had (its `mark`-th on) from `primary`'s current term for
        writes answered since the heal: a reply the old primary sent just
        before it (still on its way) proves nothing, and stopping on it ended
        runs before the clients had found the new primary and been told what
        it lacks; nor does one from a server about to step down (seed 406148
        of the unsafe campaign: two leaders of one epoch, one served 17 ms
        past the heal, and the run ended before the pair settled on the
        other)."""
        core = self.servers[primary].core
        assert core is not None
        epoch = core.agent.fs.epoch
        return sum(
            1
            for a in c.acks[mark:]
            if a.sent_at >= healed and a.server == primary and a.epoch == epoch
        )

    # ------------------------------------------------------------------ run
    def run(self, faults: Callable[[Cluster], None], until: float) -> Outcome:
        """Start, let the pair form, apply `faults` (it schedules its own
        steps on the loop), run to `until`, heal, check."""
        loop = self.loop
        self.start()
        loop.run_until(SETTLE)
        faults(self)
        loop.run_until(until)
        self.heal()
        healed = loop.now
        marks = {c.id: len(c.acks) for c in self.clients}

        def served(least: int) -> bool:
            p = self.settled()
            return p is not None and all(
                self.resumed(c, p, healed, marks[c.id]) >= least for c in self.clients
            )

        deadline = healed + RESUME_WITHIN
        while loop.now < deadline:
            loop.run_until(loop.now + 0.1)
            if served(2):
                break
        out = Outcome(seed=loop.seed, faults=self.faults)
        if not served(1):
            out.violations.append(
                Violation("stuck", f"no settled pair serving {RESUME_WITHIN}s after healing")
            )
        for c in self.clients:
            c.sending = False
        loop.run_until(loop.now + 0.5)  # let what is in flight finish
        out.violations.extend(self.check())
        out.acked = sum(len(c.acks) for c in self.clients)
        out.events = loop.events
        out.sim_seconds = loop.now
        out.trace = self.trace
        return out

    def check(self) -> list[Violation]:
        acks = [a for c in self.clients for a in c.acks]
        written = set().union(*(c.written for c in self.clients))
        live = [s for s in self.servers.values() if s.up and s.core is not None]
        out: list[Violation] = []
        histories = {}
        for s in live:
            assert s.core is not None
            nlog = s.core.nlog
            histories[s.name] = self.truth.history(nlog.proc.history, nlog.held)
        if not histories:
            return [Violation("stuck", "no server is up")]
        names = sorted(histories)
        longest = max(names, key=lambda n: len(histories[n]))
        out.extend(check_history(histories[longest], acks, written))
        told = set().union(*(c.told for c in self.clients))
        out.extend(check_told(histories[longest], acks, told))
        if self.app == "ledger":
            core = self.servers[longest].core
            assert core is not None
            final = self.truth.transactions(core.nlog.proc.history, core.nlog.held)
            out.extend(check_ledger(final, ledger_settings(self.cfg.app.settings)))
        for n in names:
            h = histories[n]
            if h != histories[longest][: len(h)] or len(h) < len(histories[longest]) - 0:
                out.append(
                    Violation(
                        "diverged",
                        f"{n} ({len(h)} records) and {longest} ({len(histories[longest])})",
                    )
                )
        digests = {}
        for s in live:
            assert s.core is not None
            digests[s.name] = s.core.nlog.proc.digest()
            for broken in s.core.nlog.proc.app.check():
                out.append(Violation("invariant", f"{s.name}: {broken}"))
        if len(set(digests.values())) > 1:
            out.append(Violation("diverged", f"tables differ: {sorted(digests)}"))
        out.extend(check_split(acks))
        return out
