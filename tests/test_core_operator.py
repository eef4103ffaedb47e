"""Operator control of failover through the node core's methods (what the
control socket calls), on the simulator: real cores, clients and disks on a
simulated clock, so every case is exact and fast. Each run ends with the
simulator's checks (nothing acknowledged lost or applied twice, one history).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from zmqfail.core.journal import StateChange
from zmqfail.core.node import NodeCore
from zmqfail.errors import ZmqfailError
from zmqfail.failover.state import State
from zmqfail.sim.cluster import SETTLE, Cluster

pytestmark = pytest.mark.timeout(120)

DEAD = 0.3  # the simulator's dead time (100 ms heartbeats x 3)


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def started(nodes: int = 2, witness: bool = False) -> Cluster:
    cl = Cluster(seed=7, nodes=nodes, witness=witness)
    cl.start()
    cl.loop.run_until(SETTLE)
    assert role(cl, "a") == ("primary", "normal")
    return cl


def run(cl: Cluster, seconds: float) -> None:
    cl.loop.run_until(cl.loop.now + seconds)


def core(cl: Cluster, name: str) -> NodeCore:
    c = cl.servers[name].core
    assert c is not None
    return c


def role(cl: Cluster, name: str) -> tuple[str, str]:
    fs = core(cl, name).agent.fs
    return fs.role.value, fs.state.value


def operate(cl: Cluster, name: str, fn: Callable[[NodeCore, float], Any]) -> Any:
    """Call a core method in the node's next turn, as the control socket does;
    returns its answer or the error it raised."""
    out: list[Any] = []

    def call(c: NodeCore) -> None:
        try:
            out.append(fn(c, cl.loop.now))
        except ZmqfailError as exc:
            out.append(exc)

    cl.servers[name].deliver("call", call)
    run(cl, 0.01)
    assert len(out) == 1
    return out[0]


def acked(cl: Cluster) -> int:
    return sum(len(c.acks) for c in cl.clients)


def served_after(cl: Cluster, seconds: float) -> bool:
    before = acked(cl)
    run(cl, seconds)
    return acked(cl) > before


def healthy(cl: Cluster) -> None:
    for c in cl.clients:
        c.sending = False
    run(cl, 1.0)
    assert cl.check() == []


def history(cl: Cluster, name: str) -> list[StateChange]:
    return core(cl, name).operator.history()


def test_paused_pair_does_not_fail_over_and_resume_takes_over_at_once() -> None:
    cl = started()
    for n in ("a", "b"):
        assert operate(cl, n, lambda c, now: c.operator.pause(now))["paused"] is True
    cl.crash("a")
    run(cl, 5 * DEAD)
    assert role(cl, "b") == ("backup", "normal")
    assert not served_after(cl, 0.5)
    notes = [e.why for e in history(cl, "b")]
    assert "PrimaryGone: not acted on, failover paused" in notes
    resumed_at = cl.loop.now
    assert operate(cl, "b", lambda c, now: c.operator.resume(now))["paused"] is False
    assert role(cl, "b") == ("primary", "backup_only")  # at once, no new detection
    (took,) = [e for e in history(cl, "b") if e.dst is State.BACKUP_ONLY]
    assert (took.why, took.took_over_from, took.epoch) == ("Resume", "a", 2)
    assert took.outage_ms is not None and took.outage_ms >= 5 * DEAD * 1000
    assert took.time <= resumed_at + 0.02
    assert served_after(cl, 1.0)
    cl.restart("a")
    run(cl, 2.0)
    assert role(cl, "a") == ("backup", "normal")
    assert core(cl, "a").agent.fs.paused  # it was paused when it died: still is
    healthy(cl)


def test_the_pause_survives_a_restart_and_holds_a_lone_restart_from_leading() -> None:
    cl = started()
    operate(cl, "a", lambda c, now: c.operator.pause(now))
    assert core(cl, "a").meta()["paused"] is True
    cl.servers["b"].crash()
    run(cl, 3 * DEAD)
    assert role(cl, "a") == ("primary", "primary_only")  # alone keeps service, paused or not
    assert served_after(cl, 0.5)
    cl.crash("a")  # ran alone: it would lead at a new epoch on its own when back
    cl.restart("a")
    run(cl, 3.0)
    assert role(cl, "a") == ("backup", "starting") and core(cl, "a").agent.fs.paused
    assert not served_after(cl, 0.5)
    started_notes = [e for e in history(cl, "a") if e.why == "started"]
    assert started_notes[-1].paused is True and not started_notes[0].paused
    assert history(cl, "a")[-1].why == "StartupDone: not acted on, failover paused"
    operate(cl, "a", lambda c, now: c.operator.resume(now))
    run(cl, 0.5)
    assert role(cl, "a") == ("primary", "primary_only") and core(cl, "a").epoch == 2
    cl.restart("b")
    run(cl, 2.0)
    assert role(cl, "b") == ("backup", "normal")
    healthy(cl)


def test_promote_is_refused_while_the_primary_is_heard_then_takes_over() -> None:
    cl = started()
    for n in ("a", "b"):
        operate(cl, n, lambda c, now: c.operator.pause(now))  # so only the operator acts
    refused = operate(cl, "b", lambda c, now: c.operator.promote(False, now))
    assert isinstance(refused, ZmqfailError)
    assert str(refused).startswith("cannot promote b: b hears a (heartbeats alive)")
    assert role(cl, "b") == ("backup", "normal") and core(cl, "b").epoch == 1
    cl.crash("a")
    run(cl, 2 * DEAD)
    got = operate(cl, "b", lambda c, now: c.operator.promote(False, now))
    assert (got["was"], got["role"], got["state"], got["epoch"]) == (
        "backup/normal",
        "primary",
        "backup_only",
        2,
    )
    assert got["may_lack_records"] is False and got["asking"] == 0
    assert served_after(cl, 1.0)
    (took,) = [e for e in history(cl, "b") if e.dst is State.BACKUP_ONLY]
    assert took.why == "Promote" and not took.may_lack_records
    assert "may_lack_records" not in took.to_wire()
    cl.restart("a")
    run(cl, 2.0)
    assert role(cl, "a") == ("backup", "normal")
    healthy(cl)


def test_promote_of_a_primary_or_a_starting_server_is_refused() -> None:
    cl = started()
    err = operate(cl, "a", lambda c, now: c.operator.promote(True, now))
    assert isinstance(err, ZmqfailError) and "already serves" in str(err)
    cl.crash("b")
    cl.restart("b")
    run(cl, 0.05)
    err = operate(cl, "b", lambda c, now: c.operator.promote(True, now))
    assert isinstance(err, ZmqfailError) and "still starting" in str(err)


def test_forced_promote_of_a_standby_server_is_told_it_may_lack_records() -> None:
    cl = started()
    operate(cl, "b", lambda c, now: c.operator.pause(now))
    cl.cut("a", "b", "main")
    cl.cut("a", "b", "failsafe")  # a runs alone; b hears it over the client network
    run(cl, 4 * DEAD)
    assert role(cl, "b") == ("backup", "standby")
    err = operate(cl, "b", lambda c, now: c.operator.promote(False, now))
    assert isinstance(err, ZmqfailError) and "only --force" in str(err)
    cl.crash("a")  # the operator knows it is dead now
    got = operate(cl, "b", lambda c, now: c.operator.promote(True, now))
    assert (got["was"], got["state"], got["may_lack_records"]) == (
        "backup/standby",
        "backup_only",
        True,
    )
    (took,) = [e for e in history(cl, "b") if e.dst is State.BACKUP_ONLY]
    assert took.why == "Promote --force" and took.may_lack_records is True


def test_switchover_to_a_named_backup_of_three() -> None:
    cl = started(nodes=3)
    run(cl, 1.0)
    err = operate(cl, "a", lambda c, now: c.operator.switchover(now, "zz"))
    assert isinstance(err, ZmqfailError) and "zz is not an in-sync backup" in str(err)
    assert role(cl, "a") == ("primary", "normal")
    got = operate(cl, "a", lambda c, now: c.operator.switchover(now, "c"))
    assert got["handoff_to"] == "c"
    run(cl, 1.0)
    assert role(cl, "c")[0] == "primary" and role(cl, "b") == ("backup", "normal")
    healthy(cl)


def test_with_a_witness_promote_waits_for_the_grant() -> None:
    cl = started(witness=True)
    for n in ("a", "b"):
        operate(cl, n, lambda c, now: c.operator.pause(now))
    cl.crash("a")
    run(cl, 2 * DEAD)
    got = operate(cl, "b", lambda c, now: c.operator.promote(False, now))
    assert (got["state"], got["asking"]) == ("normal", 2)  # a's lease has not run out
    run(cl, 2.0)
    assert role(cl, "b") == ("primary", "backup_only") and core(cl, "b").epoch == 2
    whys = [e.why for e in history(cl, "b")]
    assert "Promote: asking the witness for epoch 2" in whys
    assert "Promote (granted by the witness)" in whys
    assert served_after(cl, 1.0)


def test_history_is_kept_on_disk_across_a_crash_and_bounded() -> None:
    cl = started()
    cl.crash("b")
    cl.restart("b")
    run(cl, 2.0)
    entries = history(cl, "b")
    whys = [e.why for e in entries]
    assert whys.count("started") == 2 and whys[-1] == "PeerActive"
    times = [e.time for e in entries]
    assert {e.node for e in entries} == {"b"} and times == sorted(times) and times[-1] > 0
    assert core(cl, "b").journal.recent[-1] == entries[-1]  # memory and disk agree
    disk = cl.servers["b"].disk
    for i in range(2000):
        disk.append_history({"why": f"filler {i}"})
    assert len(disk.read_history()) == 1000
    assert disk.read_history()[-1]["why"] == "filler 1999"
