"""Finding free loopback ports for throw-away clusters (tests, bench, demo)."""

from __future__ import annotations

import socket


def free_base_port(span: int = 40, host: str = "127.0.0.1") -> int:
    """A base port with `span` consecutive ports free above it.

    Starts from a port the kernel hands out, so concurrent runs rarely meet,
    and checks every port of the range by binding it."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((host, 0))
            base: int = s.getsockname()[1]
        if base + span >= 65000:
            continue
        ok = True
        for p in range(base, base + span):
            with socket.socket() as t:
                t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    t.bind((host, p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range found")
