"""The crossed two-machine layout on machines of their own: two network
namespaces (tests/hostlab.py), each with one address and a cable to the
other and to the test's host, where the routing client runs. Machine 1 runs
s1's primary and s2's backup, machine 2 the reverse, as `config init
--shards 2 --machines 2 --hosts` lays them out. Under load every process on
machine 1 gets kill -9 at once (all that `ip netns pids` lists there); both
shards serve again from machine 2, machine 1's servers restart there and
rejoin as the backup of both, and every acknowledged order is in its own
shard's log exactly once and in no other's (the scenario and its checks:
shardkit.py). Root only; skipped elsewhere."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MakeCluster, wait_for
from hostlab import HostLab, available
from shardkit import MACHINE_1, lose_machine_one, stop_and_check_logs

from zmqfail import config

pytestmark = [pytest.mark.timeout(120), pytest.mark.process]

WHY = available()
MACHINES = ("m1", "m2")  # host names in the lab, as the node names end (s1-m1...)
LOCAL = "127.0.0.1"


@pytest.fixture
def lab() -> Iterator[HostLab]:
    if WHY:
        pytest.skip(WHY)
    lab = HostLab(MACHINES)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def machine(node: str) -> str:
    return node.rsplit("-", 1)[1]


def crossed_config(lab: HostLab, path: Path) -> None:
    """`config init --shards 2 --machines 2 --hosts` on the lab's addresses.
    It puts control and metrics on 127.0.0.1, for tools on the server's own
    machine; here the tools run on the test's host, so every endpoint of a
    server moves to its machine's address."""
    text = config.render_shards(2, 2, 7100, hosts=[lab.addr(m) for m in MACHINES])
    out, host = [], None
    for line in text.splitlines():
        head = re.match(r"^\[nodes\.(\S+)\]", line)
        if head:
            host = lab.addr(machine(head.group(1)))
        elif line.startswith("["):
            host = None
        out.append(line.replace(LOCAL, host) if host else line)
    assert LOCAL not in "\n".join(out)
    path.write_text("\n".join(out) + "\n")


def pids_on(lab: HostLab, host: str) -> set[int]:
    ns = lab.ns(host)
    assert ns is not None
    got = subprocess.run(
        ["ip", "netns", "pids", ns], capture_output=True, text=True, check=True, timeout=10
    )
    return {int(p) for p in got.stdout.split()}


def test_two_namespaces_crossed_survive_the_loss_of_a_machine(
    lab: HostLab, cluster: MakeCluster, tmp_path: Path
) -> None:
    path = tmp_path / "zmqfail.toml"
    crossed_config(lab, path)
    nodes = [n.name for n in config.load(path).nodes]
    whole = cluster(path, prefix={n: lab.on(machine(n)) for n in nodes})

    def kill_machine_1() -> None:
        # Each server runs on its own machine: `ip netns exec` execs the node in place.
        for n in nodes:
            assert whole.procs[n].pid in pids_on(lab, machine(n)), f"{n} not on {machine(n)}"
        doomed = pids_on(lab, "m1")
        for pid in doomed:  # the machine's power cut: everything on it, at once
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        dead = [whole.procs[n] for n in MACHINE_1]
        wait_for(lambda: all(p.poll() is not None for p in dead), 10, "machine 1's servers dead")
        assert [p.returncode for p in dead] == [-signal.SIGKILL] * 2
        wait_for(lambda: not pids_on(lab, "m1"), 10, "nothing left running on machine 1")

    load = lose_machine_one(whole, kill_machine_1)
    for n in nodes:  # machine 1's servers are back on machine 1
        assert whole.procs[n].pid in pids_on(lab, machine(n)), f"{n} not on {machine(n)}"
    stop_and_check_logs(whole, load)
