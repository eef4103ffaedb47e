"""Finding free loopback ports for throw-away clusters (tests, bench, demo)."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

from zmqfail.errors import ConfigError

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOW = 10_000
# "K/N": draw ports only from part K (0-based) of N equal parts of the range.
# Parallel test workers each get their own part (inherited by the processes
# they start), so one can never pick a range that another picked but has not
# bound yet: the bind check below cannot see a range that is only promised.
SLICE_ENV = "ZMQFAIL_PORT_SLICE"


def _ephemeral() -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in _RANGE_FILE.read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _slice() -> tuple[int, int]:
    text = os.environ.get(SLICE_ENV, "0/1")
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        k = n = -1
    if not 0 <= k < n:
        raise ConfigError(f"{SLICE_ENV} must be K/N with 0 <= K < N, got {text!r}")
    return k, n


def port_ranges(span: int) -> list[tuple[int, int]]:
    """The [lo, hi] ranges a base port is drawn from: outside the kernel's
    ephemeral ports, cut down to this process's slice, each with room for
    `span` ports."""
    eph_lo, eph_hi = _ephemeral()
    k, n = _slice()
    out = []
    for lo, hi in ((_LOW, eph_lo - 1), (eph_hi + 1, 65535)):
        part = (hi - lo + 1) // n
        lo, hi = lo + k * part, lo + (k + 1) * part - 1
        if hi - lo > span:
            out.append((lo, hi))
    if not out:
        raise ConfigError(f"no port range of {span} ports outside the ephemeral ones")
    return out


def free_base_port(span: int = 40, host: str = "127.0.0.1") -> int:
    """A base port with `span` consecutive ports free above it.

    The range lies outside the kernel's ephemeral ports: between choosing a
    port and a node binding it, any outgoing connection on the machine (every
    client and test does connect) may be handed an ephemeral port, which made
    "address already in use" a test flake on a busy machine. A random start
    keeps concurrent runs apart, and every port is checked by binding it."""
    spans = port_ranges(span)
    rng = random.SystemRandom()
    for _ in range(500):
        lo, hi = rng.choice(spans)
        base = rng.randrange(lo, hi - span + 1)
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
