"""The faults, done to real processes through the library's cluster helper
(zmqfail/cluster.py): signals to the node processes it started, link cuts
and delays through each node's control socket (the node drops or holds that
channel's traffic; every cut is sent with its duration, so the node heals
itself even if this tool dies), and the witness process killed and started.

Power loss of every server: both nodes are frozen at one instant (SIGSTOP),
then killed (SIGKILL) and restarted after the hold. What a node held in
memory (records acknowledged in the normal state and not yet flushed, at
most one flush interval of them) is gone, as at a power cut. What its writer
thread had already handed to the kernel survives in the page cache, where a
real power cut could tear it: a kill keeps the kinder of the outcomes a
power cut allows. The harsher one (a torn last batch) is what the simulator
(zmqfail/sim) and the log's fault tests (tests/test_txlog_faults.py) cover;
a real process gives no honest way to know which bytes an fsync had reached.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from subprocess import Popen

from zmqfail.client.control import call
from zmqfail.cluster import Cluster
from zmqfail.errors import Unavailable, ZmqfailError
from zmqfail.failover.state import Role
from zmqfail.netlab import NetLab
from zmqfail.replication import LINKS

from .netns import real_fault
from .schedule import Fault, Kind
from .tally import Done

RECOVER = 120.0  # seconds the pair gets to be whole again after a heal (a restart replays
# up to a snapshot interval of log, tens of seconds on a loaded 2-core machine)
POLL = 0.2  # seconds between two status readings of the split-brain poller
CUTS: dict[Kind, tuple[str, ...]] = {
    Kind.CUT_MAIN: ("main",),
    Kind.CUT_FAILSAFE: ("failsafe",),
    Kind.CUT_BOTH: LINKS,
    Kind.CUT_CLIENTS: ("clients",),
}


class Injector:
    """Does one fault at a time and waits for the pair to be whole again.
    `adopt` is given the witness process when it is started again (the
    caller's reaper ends it); nodes are handed over by the helper's spawn."""

    def __init__(
        self,
        cl: Cluster,
        adopt: Callable[[Popen[bytes]], object],
        say: Callable[[str], None],
        lab: NetLab | None = None,
    ) -> None:
        self.cl = cl
        self.lab = lab  # --netns: cuts on its cables where they exist (netns.py)
        self.real = False  # the fault being done is on a cable
        self.adopt = adopt
        self.say = say
        self.problems: list[str] = []  # violations seen while injecting (one line each)
        self.names = [n.name for n in cl.cfg.nodes]

    def resolve(self, target: str) -> str:
        """The node now primary (the highest epoch serving) or a backup."""
        rows = self.cl.statuses(timeout=1.0)
        serving = [r for r in rows if r.serving]
        primary = max(serving, key=lambda r: r.epoch or 0).name if serving else self.names[0]
        if target == "primary":
            return primary
        backups = [r.name for r in rows if r.role is Role.BACKUP and r.name != primary]
        return backups[0] if backups else next(n for n in self.names if n != primary)

    def restart(self, name: str) -> None:
        self.cl.start(name)  # the helper's spawn hands the process to the caller's reaper

    def _restart_all(self) -> None:
        for n in self.names:
            self.restart(n)

    def check_alive(self) -> None:
        """A node that died by itself is a finding: noted, then restarted."""
        for name, p in list(self.cl.procs.items()):
            rc = p.poll()
            if rc is not None:
                self.problems.append(
                    f"node {name} exited by itself with status {rc}; see {self.cl.log_of(name)}"
                )
                self.say(f"  ! node {name} exited by itself ({rc}): restarting it")
                self.restart(name)

    def do(self, fault: Fault) -> Done:
        self.check_alive()
        node = self.resolve(fault.target) if fault.kind.targets_node else ""
        started = time.monotonic()
        self.real = False
        heal = self._inject(fault, node)
        time.sleep(fault.hold)
        healed = time.monotonic()
        heal()
        try:
            self.cl.wait_whole(RECOVER)
            whole: float | None = time.monotonic()
        except Unavailable as exc:
            whole = None
            self.problems.append(f"after fault {fault.describe()} at {node or 'all'}: {exc}")
        done = Done(fault.index, fault.kind, node, started, healed, whole, self.real)
        back = f"whole after {done.end - started:.2f}s" if whole else "NOT whole again"
        how = " (cable)" if self.real else ""
        self.say(f"  {fault.describe()}{' -> ' + node if node else ''}{how}: {back}")
        return done

    def _inject(self, fault: Fault, node: str) -> Callable[[], object]:
        """Do the fault; returns what heals it."""
        kind, cl = fault.kind, self.cl
        if self.lab is not None:
            plug = real_fault(self.lab, kind, node, fault.direction)
            if plug is not None:
                self.real = True
                return plug
        if kind is Kind.KILL:
            cl.kill(node)
            return lambda: self.restart(node)
        if kind is Kind.PAUSE:
            cl.signal(node, signal.SIGSTOP)
            return lambda: cl.signal(node, signal.SIGCONT)
        if kind in CUTS:
            return self._links(node, CUTS[kind], {"for": fault.hold + 5.0}, "cut", "heal")
        if kind is Kind.ONE_WAY:
            one_way = {"for": fault.hold + 5.0, "direction": fault.direction}
            return self._links(node, LINKS, one_way, "cut", "heal")
        if kind is Kind.SLOW_LINKS:
            slow = {"ms": fault.delay_ms, "for": fault.hold + 5.0}
            return self._links(node, LINKS, slow, "delay", "delay", {"ms": 0})
        if kind is Kind.POWER:
            for n in self.names:  # every server stops at one instant...
                cl.signal(n, signal.SIGSTOP)
            for n in self.names:  # ...and never runs again
                cl.kill(n)
            return self._restart_all
        w = cl.witness  # Kind.WITNESS
        if w is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.pid, signal.SIGKILL)
            w.wait(20)
        return lambda: self.adopt(cl.start_witness())

    def _links(
        self,
        node: str,
        links: tuple[str, ...],
        args: Mapping[str, object],
        command: str,
        undo: str,
        undo_args: Mapping[str, object] | None = None,
    ) -> Callable[[], None]:
        """`command` on each link at `node` (each with `args`); the heal is
        `undo` on each (with `undo_args`)."""
        for link in links:
            self._control(node, command, {"link": link, **args})

        def heal() -> None:
            for link in links:
                self._control(node, undo, {"link": link, **(undo_args or {})})

        return heal

    def _control(self, node: str, command: str, args: dict[str, object]) -> None:
        try:
            call(self.cl.cfg.node(node).control, command, args, timeout=3.0)
        except ZmqfailError as exc:
            # A node too busy to answer in time still got a fault it heals by
            # itself; the campaign goes on and says so.
            self.say(f"  ! {command} at {node}: {exc}")


class Poller:
    """Reads every node's status every POLL seconds on its own thread:
    (time, how many say they serve), for the split-brain count."""

    def __init__(self, cl: Cluster) -> None:
        self.cl = cl
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-status", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            rows = self.cl.statuses(timeout=0.5)
            self.samples.append((t, sum(r.serving for r in rows)))
            self._stop.wait(POLL)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
