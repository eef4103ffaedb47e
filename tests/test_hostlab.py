"""The host lab itself (tests/hostlab.py): every cable cuts and heals only
its own pair of hosts, labs built at once never share a name or an address,
and a witness on its own host is reached from both servers' hosts (root
only; skipped elsewhere)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import zmq
from conftest import Procs, wait_for
from hostlab import ROOT, HostLab, available
from witnesskit import status_of

from zmqfail import config
from zmqfail.errors import ZmqfailError
from zmqfail.protocol import WitnessAnswer, decode_as

pytestmark = [pytest.mark.timeout(90), pytest.mark.process]

WHY = available()


@pytest.fixture
def lab() -> Iterator[HostLab]:
    if WHY:
        pytest.skip(WHY)
    lab = HostLab(("a", "b", "w"))
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


Matrix = dict[str, dict[str, bool]]


def matrix(lab: HostLab) -> Matrix:
    """Who reaches whom, every host asked at once."""
    hosts = (ROOT, *lab.hosts)
    with ThreadPoolExecutor(len(hosts)) as pool:
        return dict(zip(hosts, pool.map(lab.reach, hosts), strict=True))


def expected(lab: HostLab, cut: set[frozenset[str]]) -> Matrix:
    hosts = (ROOT, *lab.hosts)
    return {x: {y: frozenset((x, y)) not in cut for y in hosts if y != x} for x in hosts}


def test_each_cable_cuts_and_heals_only_its_own_pair(lab: HostLab) -> None:
    assert matrix(lab) == expected(lab, set())  # everyone reaches everyone
    pairs = lab.pairs()
    assert len(pairs) == 6  # t-a, t-b, t-w, a-b, a-w, b-w
    for x, y in pairs:
        lab.cut(x, y)
        # Cut both ways, and nothing else: the previous pair's heal shows here too.
        assert matrix(lab) == expected(lab, {frozenset((x, y))}), (x, y)
        lab.heal(x, y)
    # The split brain's network: a and b cut apart, each still reaching w.
    lab.cut("a", "b")
    lab.cut(ROOT, "b")
    got = matrix(lab)
    assert got == expected(lab, {frozenset(("a", "b")), frozenset((ROOT, "b"))})
    assert got["a"]["w"] and got["b"]["w"]
    lab.heal_all()
    assert lab.cut_pairs == set()
    lab.isolate("w")
    assert matrix(lab) == expected(lab, {frozenset(("w", h)) for h in (ROOT, "a", "b")})
    lab.heal_all()
    assert matrix(lab) == expected(lab, set())


def test_labs_built_at_once_share_no_name_or_address() -> None:
    if WHY:
        pytest.skip(WHY)
    one, two = HostLab(("a", "b")), HostLab(("a", "b"))
    try:
        one.up()
        two.up()
        assert one.slot != two.slot
        assert one.ns("a") != two.ns("a") and one.addr("a") != two.addr("a")
        two.cut("a", "b")  # a fault in one lab is not a fault in the other
        assert one.reach("a") == {ROOT: True, "b": True}
        assert two.reach("a") == {ROOT: True, "b": False}
    finally:
        two.down()
        one.down()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"zw{one.slot}-" not in listed and f"zw{two.slot}-" not in listed  # cleaned


def test_host_names_are_checked() -> None:
    for hosts in (("a",), ("a", "a"), ("a", "t"), ("a", "toolong"), ("a", "B")):
        with pytest.raises(ValueError, match="hosts must be"):
            HostLab(hosts)


# What a server does first with a witness: ask it for an election, from its host.
_ASK = """
import sys, zmq
from zmqfail.protocol import WitnessAsk
s = zmq.Context().socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.connect(sys.argv[1])
s.send(WitnessAsk(sys.argv[2], "elect", int(sys.argv[3]), int(sys.argv[4]), 7).encode())
sys.stdout.buffer.write(s.recv() if s.poll(int(sys.argv[5])) else b"")
"""


def ask_from(
    lab: HostLab, host: str, endpoint: str, epoch: int, known: int, wait_ms: int = 5000
) -> WitnessAnswer | None:
    argv = [*lab.on(host), sys.executable, "-c", _ASK, endpoint, host, str(epoch), str(known)]
    argv.append(str(wait_ms))
    out = subprocess.run(argv, capture_output=True, timeout=60, check=True).stdout
    return decode_as(out, WitnessAnswer) if out else None


def test_a_witness_on_its_own_host_serves_both_servers_hosts(
    lab: HostLab, procs: Procs, tmp_path: Path
) -> None:
    cfg = tmp_path / "lab.toml"
    cfg.write_text(lab.cluster_toml(("a", "b"), witness="w", lease_ms=100))
    w = config.load(cfg).witness
    assert w is not None
    ep = w.endpoint
    assert ep == f"tcp://{lab.addr('w')}:7200"
    procs.start("witness", "--config", str(cfg), log="witness", prefix=lab.on("w"))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:

        def answers() -> bool:
            try:
                return bool(status_of(ctx, ep))  # from the test's own host
            except ZmqfailError:
                return False

        wait_for(answers, 30, "the witness on host w")
        got_a = ask_from(lab, "a", ep, 1, 0)
        assert got_a is not None and got_a.granted and got_a.leader == "a"
        # Cut from a, the witness still serves b (a's 100 ms lease has run out).
        lab.cut("a", "w")
        assert ask_from(lab, "a", ep, 2, 1, wait_ms=1000) is None
        got_b = ask_from(lab, "b", ep, 2, 1)
        assert got_b is not None and got_b.granted and (got_b.epoch, got_b.leader) == (2, "b")
        lab.heal("a", "w")
        again = ask_from(lab, "a", ep, 2, 1)
        assert again is not None and not again.granted and again.leader == "b"
        st = status_of(ctx, ep)
        assert (st["epoch"], st["leader"], st["elections"]) == (2, "b", 2)
    finally:
        ctx.destroy(linger=0)
