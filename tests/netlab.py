"""Real network partitions for tests: a network namespace joined to the root
namespace by one veth pair per network (clients, main link, failsafe link).

Cutting a cable is `ip link set DEV down` on the root side: packets are lost
both ways with no reset, as with a pulled cable, unlike the control-socket
cuts. Needs root and iproute2; tests skip when the machine does not allow it.
Addresses are in 10.213.0.0/16, inside namespaces this lab creates and
removes itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

NETS = ("clients", "main", "failsafe")


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
    ns: str = ""
    devs: dict[str, str] = field(default_factory=dict)  # net -> root-side device
    a_ip: dict[str, str] = field(default_factory=dict)
    b_ip: dict[str, str] = field(default_factory=dict)

    def up(self) -> None:
        self.ns = f"zfb{self.tag}"
        self.devs = {net: f"zf{self.tag}{net[0]}a" for net in NETS}
        self.down()  # leftovers of a crashed run with the same names
        _ip("netns", "add", self.ns)
        _ip("link", "set", "lo", "up", ns=self.ns)
        for i, net in enumerate(NETS):
            root, peer = f"zf{self.tag}{net[0]}a", f"zf{self.tag}{net[0]}b"
            self.devs[net] = root
            self.a_ip[net] = f"10.213.{i}.1"
            self.b_ip[net] = f"10.213.{i}.2"
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

    def down(self) -> None:
        for dev in self.devs.values():
            subprocess.run(["ip", "link", "del", dev], capture_output=True, timeout=10)
        if self.ns:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=10)

    def in_b(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]
