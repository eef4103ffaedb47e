"""Real network partitions: a network namespace joined to the root namespace
by one veth pair per network (clients, main link, failsafe link), for the
process tests and `tools/chaos --netns` (both import it from here).

The root namespace is host A (node a, the clients, the operator tools and a
witness); the namespace is host B (node b). Cutting a cable is `ip link set
DEV down` on the root side: packets are lost both ways with no reset, as
with a pulled cable, unlike the control-socket cuts. One-way loss is a
blackhole route on one host to the other's address on that network: what
that host sends there vanishes while what it is sent still arrives (TCP
then stalls, as over a real half-broken path; sch_netem is often not built
in, routes always are). Needs root and iproute2; `available` says why not.
Addresses are 10.213.B.0/30 per network, B from `block`: labs with
different blocks and tags live side by side.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

NETS = ("clients", "main", "failsafe")
SIDES = ("a", "b")  # a: the root namespace; b: the lab's namespace
_LOCAL = "127.0.0.1"


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *args] if ns is None else ["ip", "netns", "exec", ns, "ip", *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=10)


def available() -> str:
    """Why a lab cannot be built here, or "" when it can."""
    if os.geteuid() != 0:
        return "needs root for ip netns"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    probe = f"zfq{os.getpid() % 100000}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"ip netns not permitted: {exc}"
    _ip("netns", "del", probe)
    return ""


@dataclass
class NetLab:
    """Root namespace = host A; namespace `ns` = host B."""

    tag: str = field(default_factory=lambda: str(os.getpid() % 10000))
    block: int = 0  # third octet of the first network's /30 (the next two follow)
    ns: str = ""
    devs: dict[str, str] = field(default_factory=dict)  # net -> root-side device
    a_ip: dict[str, str] = field(default_factory=dict)
    b_ip: dict[str, str] = field(default_factory=dict)

    def up(self) -> None:
        self.ns = f"zfb{self.tag}"
        self.devs = {net: f"zf{self.tag}{net[0]}a" for net in NETS}
        for i, net in enumerate(NETS):
            self.a_ip[net] = f"10.213.{self.block + i}.1"
            self.b_ip[net] = f"10.213.{self.block + i}.2"
        self.down()  # leftovers of a crashed run with the same names
        _ip("netns", "add", self.ns)
        _ip("link", "set", "lo", "up", ns=self.ns)
        for net in NETS:
            root, peer = f"zf{self.tag}{net[0]}a", f"zf{self.tag}{net[0]}b"
            self.devs[net] = root
            _ip("link", "add", root, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", self.ns)
            _ip("addr", "add", f"{self.a_ip[net]}/30", "dev", root)
            _ip("addr", "add", f"{self.b_ip[net]}/30", "dev", peer, ns=self.ns)
            _ip("link", "set", root, "up")
            _ip("link", "set", peer, "up", ns=self.ns)

    def cut(self, net: str) -> None:
        _ip("link", "set", self.devs[net], "down")

    def heal(self, net: str) -> None:
        _ip("link", "set", self.devs[net], "up")

    def lose(self, net: str, side: str) -> None:
        """Everything `side` ("a" or "b") sends on `net` is lost; what it is
        sent still arrives."""
        self._blackhole("add", net, side)

    def unlose(self, net: str, side: str) -> None:
        self._blackhole("del", net, side)

    def _blackhole(self, verb: str, net: str, side: str) -> None:
        if side not in SIDES:
            raise ValueError(f"side must be a or b, got {side!r}")
        other = self.b_ip if side == "a" else self.a_ip
        ns = None if side == "a" else self.ns
        _ip("route", verb, "blackhole", f"{other[net]}/32", ns=ns)

    def down(self) -> None:
        """Remove everything the lab made (also what a killed run left): host
        A's blackhole routes, the cables, the namespace with its routes."""
        for ip in self.b_ip.values():
            cmd = ["ip", "route", "del", "blackhole", f"{ip}/32"]
            subprocess.run(cmd, capture_output=True, timeout=10)
        for dev in self.devs.values():
            subprocess.run(["ip", "link", "del", dev], capture_output=True, timeout=10)
        if self.ns:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=10)

    def in_b(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def place(self, toml: str) -> str:
        """A two-node config (as `config.render` writes it, endpoints on
        127.0.0.1) with node a on host A's addresses and node b on host B's,
        each endpoint on its network (client, control and metrics on the
        clients' network), and the witness, if any, on host A's clients
        address: every node and tool in the lab reaches each endpoint over
        the cable of its network."""
        out: list[str] = []
        ips: dict[str, str] | None = None
        for line in toml.splitlines():
            head = re.match(r"^\[(nodes\.(\w+)|witness)\]", line)
            if head:
                ips = self.a_ip if head.group(2) in (None, "a") else self.b_ip
                if head.group(2) not in (None, "a", "b"):
                    raise ValueError(f"a lab holds nodes a and b, not {head.group(2)}")
            elif line.startswith("["):
                ips = None
            if ips is not None and _LOCAL in line:
                key = line.split("=", 1)[0].strip()
                line = line.replace(_LOCAL, ips[key if key in ("main", "failsafe") else "clients"])
            out.append(line)
        return "\n".join(out) + "\n"
