"""A real etcd for tests: one member on free loopback ports, a temporary data
dir, ended by the fixture also when the test fails; skipped with the reason
when the `etcd` binary (Debian's etcd-server) or the etcd3gw package is absent."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for

from zmqfail.netutil import free_base_port


def missing() -> str:
    if shutil.which("etcd") is None:
        return "no etcd binary on PATH (apt-get install etcd-server; .ci/run installs it)"
    if importlib.util.find_spec("etcd3gw") is None:
        return "the etcd3gw package is not installed (pip install -e '.[etcd]')"
    return ""


class Etcd:
    def __init__(self, tmp: Path) -> None:
        port = free_base_port(2)
        self.url = f"http://127.0.0.1:{port}"
        peer = f"http://127.0.0.1:{port + 1}"
        self.log = tmp / "etcd.log"
        args = [
            "etcd",
            "--name=t",
            f"--data-dir={tmp / 'etcd-data'}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=t={peer}",
            # etcd's shortest lease is 1.5 election timeouts, rounded up to
            # whole seconds: 500 ms makes 1 s leases real (2 s by default).
            "--election-timeout=500",
            "--heartbeat-interval=50",
            "--logger=zap",
            "--log-level=warn",
        ]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self.healthy, 30, f"etcd on {self.url} (log: {self.log})", interval=0.1)

    def healthy(self) -> bool:
        import urllib.request

        assert self.proc.poll() is None, f"etcd exited: {self.log.read_text()[-2000:]}"
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no http_proxy
        try:
            with direct.open(f"{self.url}/health", timeout=1) as r:
                return b'"true"' in r.read()
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()


def started(tmp: Path) -> Iterator[Etcd]:
    """For a fixture: a running etcd, ended afterwards (also on failure)."""
    why = missing()
    if why:
        pytest.skip(why)
    e = Etcd(tmp)
    try:
        yield e
    finally:
        e.stop()
