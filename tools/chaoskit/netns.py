"""`tools/chaos --netns`: node b on a host of its own (a network namespace
joined to this one by a cable per network, zmqfail/netlab.py), so cuts are
real: a cable's end taken down (main, failsafe, both, and b's client
network), and one-way loss a blackhole route on the side that must send
nothing. Node a, the clients, the tools and a witness stay in the root
namespace, so a's own client network has no cable to pull: that cut, and
the faults that are not about the network, go the usual way.

One lab at a time on a machine (a lock): its names and addresses are fixed,
so a run killed without cleaning up is cleaned by the next.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from zmqfail import config
from zmqfail.errors import ZmqfailError
from zmqfail.netlab import NetLab
from zmqfail.netutil import free_base_port
from zmqfail.replication import LINKS

from .schedule import Kind

IN_LAB = "b"  # the node in the namespace; "a" shares the root namespace with the clients
LOCK = Path("/run/zmqfail-chaos-netns.lock")
TAG, BLOCK = "ch", 100  # device names zfch?a, addresses 10.213.100-102.0/30
CABLES: dict[Kind, tuple[str, ...]] = {
    Kind.CUT_MAIN: ("main",),
    Kind.CUT_FAILSAFE: ("failsafe",),
    Kind.CUT_BOTH: LINKS,
}


@contextlib.contextmanager
def lab() -> Iterator[NetLab]:
    """The lab, built and (also on failure) removed; one at a time."""
    fd = os.open(LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ZmqfailError(f"another tools/chaos --netns is running ({LOCK})") from None
        net = NetLab(tag=TAG, block=BLOCK)
        try:
            net.up()
            yield net
        finally:
            net.down()
    finally:
        os.close(fd)


def write_config(net: NetLab, directory: Path, app: str, witness: bool) -> Path:
    """The campaign's config with each node on its host's addresses."""
    text = config.render(
        nodes=2, base_port=free_base_port(25), app=app, name="chaos", witness=witness
    )
    path = directory / "zmqfail.toml"
    path.write_text(net.place(text))
    return path


def prefix(net: NetLab, name: str) -> list[str]:
    """The command a node is started under: b in its namespace."""
    return net.in_b([]) if name == IN_LAB else []


def real_fault(net: NetLab, kind: Kind, node: str, direction: str) -> Callable[[], None] | None:
    """Do the fault on the lab's cables when it has a real form there;
    returns its heal, or None (the caller does it the usual way)."""
    nets = CABLES.get(kind)
    if nets is None and kind is Kind.CUT_CLIENTS and node == IN_LAB:
        nets = ("clients",)
    if nets is not None:
        cables = nets
        for n in cables:
            net.cut(n)

        def plug() -> None:
            for n in cables:
                net.heal(n)

        return plug
    if kind is Kind.ONE_WAY:
        # "out" at node: it sends nothing; "in": its peer sends it nothing.
        side = node if direction == "out" else next(s for s in ("a", "b") if s != node)
        for n in LINKS:
            net.lose(n, side)

        def unblock() -> None:
            for n in LINKS:
                net.unlose(n, side)

        return unblock
    return None
