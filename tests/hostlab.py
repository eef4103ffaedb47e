"""Hosts of their own for end-to-end tests with a witness: each host a
network namespace with one address, every two hosts joined by their own
cable (a veth pair), so any two can be cut apart while the rest still talk.

    lab = HostLab(("a", "b", "w"))   # servers a and b, the witness w
    lab.up()
    procs.start("witness", "--config", cfg, prefix=lab.on("w"))
    lab.cut("a", "b")                # a and b cut from each other; both reach w
    lab.heal("a", "b")
    lab.down()

The test process itself is host `t` (`ROOT`, the root namespace), joined to
every host too: clients and operator tools run there, in the test, and reach
each host unless that cable is cut. A host's address (`lab.addr("a")`) is on
its loopback, so a server binds one address and is reached over whichever
cable joins the two hosts; nothing is forwarded between cables, so a cut pair
has no way round. A test asks for the `lab` fixture before `procs`, so that
its processes end before their namespaces go.

A cut takes the cable's end down in each host that is not `t`: nothing gets
through either way and no reset reaches the other side, as with a pulled
cable (a host whose end is down finds no route to its peer; the root
namespace's end stays up without carrier, so its route stays and nothing
leaks to its default route). Needs root and iproute2, like `zmqfail.netlab`;
tests skip elsewhere.

Names and addresses are apart from NetLab's (10.213.0.0/16, `zf...`): each lab
takes a slot S from 0 to 249, held by an flock for its lifetime, so labs in
parallel test processes (pytest-xdist) never share a name or an address:
namespaces `zwS-HOST`, cables `zwS-X-Y`, addresses 10.214.S.N. A slot left
behind by a killed process is cleaned when it is taken again.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from zmqfail.config import ENDPOINT_OFFSETS
from zmqfail.netlab import available

__all__ = ["ROOT", "HostLab", "available"]

ROOT = "t"
_LINK = ("records", "ack", "heartbeat")
SLOTS = 250
LOCKS = Path("/run/zmqfail-hostlab")
_HOST_RE = re.compile(r"^[a-su-z][a-z0-9]{0,3}$")  # up to 4 characters, not "t"


def _ip(commands: list[str], ns: str | None = None) -> None:
    """Run `ip` commands in one process (`ip -batch`), in a namespace or the root."""
    argv = ["ip", *(["-n", ns] if ns else []), "-batch", "-"]
    r = subprocess.run(
        argv, input="\n".join(commands) + "\n", capture_output=True, text=True, timeout=30
    )
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {r.stderr.strip()}")


@dataclass
class HostLab:
    hosts: tuple[str, ...] = ("a", "b", "w")
    slot: int = -1
    _lock_fd: int = field(default=-1, repr=False)
    _agents: dict[str, subprocess.Popen[str]] = field(default_factory=dict, repr=False)
    cut_pairs: set[frozenset[str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        bad = [h for h in self.hosts if not _HOST_RE.match(h)]
        if bad or len(set(self.hosts)) != len(self.hosts) or not 2 <= len(self.hosts) <= 10:
            raise ValueError(
                f"hosts must be 2 to 10 distinct names of 1-4 letters and digits, "
                f"not {ROOT!r}: {bad or self.hosts}"
            )

    # ------------------------------------------------------------- names
    def ns(self, host: str) -> str | None:
        """The host's namespace (None for the test's own host)."""
        self._known(host)
        return None if host == ROOT else f"zw{self.slot}-{host}"

    def addr(self, host: str) -> str:
        self._known(host)
        n = 254 if host == ROOT else self.hosts.index(host) + 1
        return f"10.214.{self.slot}.{n}"

    def dev(self, host: str, peer: str) -> str:
        """The end, in `host`, of the cable between `host` and `peer`."""
        return f"zw{self.slot}-{host}-{peer}"

    def on(self, host: str) -> tuple[str, ...]:
        """A command prefix that runs a program on `host` (`procs.start(prefix=...)`)."""
        ns = self.ns(host)
        return () if ns is None else ("ip", "netns", "exec", ns)

    def pairs(self) -> list[tuple[str, str]]:
        return list(itertools.combinations((ROOT, *self.hosts), 2))

    def _known(self, host: str) -> None:
        if host != ROOT and host not in self.hosts:
            raise ValueError(f"no host {host!r} in this lab ({', '.join(self.hosts)}, {ROOT})")

    def cluster_toml(
        self,
        servers: tuple[str, ...] = ("a", "b"),
        witness: str | None = "w",
        lease_ms: int = 1000,
        extra: str = "",
        base_port: int = 7100,
    ) -> str:
        """A config with each server on its own host (every endpoint on the
        host's address; the same ports on each host) and the witness on
        `witness`'s host at base_port + 100. `extra`: more TOML (say a
        [failover] table), appended."""
        lines = [f'[cluster]\nname = "lab"\nprimary = "{servers[0]}"\n']
        for name in servers:
            ep = {
                k: f"tcp://{self.addr(name)}:{base_port + o}" for k, o in ENDPOINT_OFFSETS.items()
            }
            link = 'records = "{}", ack = "{}", heartbeat = "{}"'
            lines.append(
                f"[nodes.{name}]\n"
                f'client = "{ep["client"]}"\ncontrol = "{ep["control"]}"\ndata_dir = "{name}"\n'
                f"main = {{ {link.format(*(ep[f'main_{k}'] for k in _LINK))} }}\n"
                f"failsafe = {{ {link.format(*(ep[f'failsafe_{k}'] for k in _LINK))} }}\n"
            )
        if witness is not None:
            lines.append(
                f'[witness]\nendpoint = "tcp://{self.addr(witness)}:{base_port + 100}"\n'
                f'data_dir = "witness"\nlease_ms = {lease_ms}\n'
            )
        return "\n".join([*lines, extra])

    # ---------------------------------------------------------- building
    def up(self) -> None:
        self._claim()
        self._clean()
        _ip([f"netns add {self.ns(h)}" for h in self.hosts])
        links = []
        for x, y in self.pairs():
            nsx, nsy = self.ns(x), self.ns(y)
            links.append(
                f"link add name {self.dev(x, y)}{f' netns {nsx}' if nsx else ''} type veth "
                f"peer name {self.dev(y, x)}{f' netns {nsy}' if nsy else ''}"
            )
        _ip(links)
        for h in (ROOT, *self.hosts):
            cmds = [] if h == ROOT else ["link set lo up", f"addr add {self.addr(h)}/32 dev lo"]
            for peer in (ROOT, *self.hosts):
                if peer == h:
                    continue
                dev = self.dev(h, peer)
                if h == ROOT:  # the root's loopback is the machine's: the address rides the cables
                    cmds.append(f"addr add {self.addr(h)}/32 dev {dev}")
                cmds += [f"link set {dev} up", self._route(h, peer)]
            _ip(cmds, self.ns(h))

    def _route(self, host: str, peer: str) -> str:
        return (
            f"route replace {self.addr(peer)}/32 dev {self.dev(host, peer)} src {self.addr(host)}"
        )

    def _claim(self) -> None:
        LOCKS.mkdir(parents=True, exist_ok=True)
        start = os.getpid() % SLOTS
        for i in range(SLOTS):
            slot = (start + i) % SLOTS
            fd = os.open(LOCKS / f"{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.slot, self._lock_fd = slot, fd
            return
        raise RuntimeError(f"all {SLOTS} host lab slots are taken")

    def _clean(self) -> None:
        """Remove whatever a killed process left in this slot (any host names)."""
        prefix = f"zw{self.slot}-"
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
        for line in listed.stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith(prefix):
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=10)
        for m in re.finditer(rf"^\d+: ({re.escape(prefix)}[^:@\s]+)", links.stdout, re.M):
            subprocess.run(["ip", "link", "del", m.group(1)], capture_output=True, timeout=10)

    def down(self) -> None:
        self._stop_agents()
        if self.slot < 0:
            return
        self._clean()
        os.close(self._lock_fd)
        self.slot, self._lock_fd = -1, -1
        self.cut_pairs.clear()

    # -------------------------------------------------------------- faults
    def cut(self, x: str, y: str) -> None:
        """Pull the cable between hosts x and y (both ways, no reset)."""
        self._cable(x, y, up=False)

    def heal(self, x: str, y: str) -> None:
        self._cable(x, y, up=True)

    def isolate(self, host: str) -> None:
        """Cut `host` from every other host (the test's own too)."""
        for peer in (ROOT, *self.hosts):
            if peer != host:
                self.cut(host, peer)

    def heal_all(self) -> None:
        for pair in list(self.cut_pairs):
            self.heal(*sorted(pair))

    def _cable(self, x: str, y: str, up: bool) -> None:
        self._known(x)
        self._known(y)
        if x == y:
            raise ValueError("a cable joins two different hosts")
        for h, peer in ((x, y), (y, x)):
            if h == ROOT:
                # Taken down here, the root's route would go and its packets
                # would leave by the default route; its end loses carrier instead.
                continue
            cmds = [f"link set {self.dev(h, peer)} {'up' if up else 'down'}"]
            _ip(cmds + ([self._route(h, peer)] if up else []), self.ns(h))
        if up:
            self.cut_pairs.discard(frozenset((x, y)))
        else:
            self.cut_pairs.add(frozenset((x, y)))

    # ------------------------------------------------------------- checks
    def reach(self, src: str, timeout: float = 0.5) -> dict[str, bool]:
        """Which hosts `src` reaches now: a TCP connect to a closed port on
        each; refused means the packets went both ways, silence means cut.
        Asked of a small agent living on `src` (started on first use), so a
        check costs the connects, not a process start."""
        agent = self._agents.get(src)
        if agent is None:
            argv = [*self.on(src), sys.executable, "-S", "-u", "-c", _AGENT]
            agent = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self._agents[src] = agent
        assert agent.stdin is not None and agent.stdout is not None
        targets = {h: self.addr(h) for h in (ROOT, *self.hosts) if h != src}
        agent.stdin.write(json.dumps([targets, timeout]) + "\n")
        agent.stdin.flush()
        line = agent.stdout.readline()
        if not line:
            raise RuntimeError(f"the reach agent on {src} exited ({agent.wait()})")
        got: dict[str, bool] = json.loads(line)
        return got

    def _stop_agents(self) -> None:
        for agent in self._agents.values():
            agent.kill()
            agent.wait(10)
            for pipe in (agent.stdin, agent.stdout):
                if pipe is not None:
                    pipe.close()
        self._agents.clear()


# Runs with `python -S` on a host: no site packages, so it starts fast. One
# line in ([targets, timeout]), one line out ({host: reached}); ends at EOF.
_AGENT = """
import concurrent.futures, json, socket, sys
def reach(addr, timeout):
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((addr, 9))
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        s.close()
    return True
pool = concurrent.futures.ThreadPoolExecutor(16)
for line in sys.stdin:
    targets, timeout = json.loads(line)
    found = pool.map(lambda a: reach(a, timeout), targets.values())
    print(json.dumps(dict(zip(targets, found))), flush=True)
"""
