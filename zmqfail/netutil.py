"""Finding free loopback ports for throw-away clusters (tests, bench, demo)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOW = 10_000


def _ephemeral() -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in _RANGE_FILE.read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_base_port(span: int = 40, host: str = "127.0.0.1") -> int:
    """A base port with `span` consecutive ports free above it.

    The range lies outside the kernel's ephemeral ports: between choosing a
    port and a node binding it, any outgoing connection on the machine (every
    client and test does connect) may be handed an ephemeral port, which made
    "address already in use" a test flake on a busy machine. A random start
    keeps concurrent runs apart, and every port is checked by binding it."""
    eph_lo, eph_hi = _ephemeral()
    spans = [(lo, hi) for lo, hi in ((_LOW, eph_lo - 1), (eph_hi + 1, 65535)) if hi - lo > span]
    rng = random.SystemRandom()
    for _ in range(500):
        lo, hi = rng.choice(spans)
        base = rng.randrange(lo, hi - span)
        if all(_bindable(host, p) for p in range(base, base + span)):
            return base
    raise RuntimeError("no free port range found")


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as t:
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            t.bind((host, port))
        except OSError:
            return False
    return True
