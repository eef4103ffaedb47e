"""A server running alone acknowledges only under the witness's lease, also
when its replies are released by a flush (core/node.py `_release_alone`):
found by the etcd live test (test_witness_etcd_live.py), where a primary cut
from its backup and from etcd went on acknowledging on every flush after its
lease had ended; the same hole was there with the built-in witness, shown
here on the simulator (real cores, simulated clock)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from zmqfail.core.node import NodeCore
from zmqfail.failover.state import State
from zmqfail.sim.cluster import SETTLE, WITNESS_LEASE, Cluster

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def acked(cl: Cluster) -> int:
    return sum(len(c.acks) for c in cl.clients)


def test_a_primary_cut_from_its_backup_and_the_witness_acknowledges_nothing_after_its_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def run(planted: bool) -> tuple[int, int]:
        if planted:  # the hole: a flush alone releases replies whatever the lease
            monkeypatch.setattr(
                NodeCore, "_release_alone", lambda self, lsn: self.frontend.commit(lsn)
            )
        cl = Cluster(seed=11, nodes=2, witness=True)
        cl.start()
        cl.loop.run_until(SETTLE)
        for net in ("main", "failsafe"):
            cl.cut("a", "b", net)
        cl.cut("a", "w", "clients")  # a's lease asks go nowhere; b still probes a
        cl.loop.run_until(cl.loop.now + 1.0)
        a = cl.servers["a"].core
        assert a is not None and a.agent.fs.state is State.PRIMARY_ONLY
        before = acked(cl)
        cl.loop.run_until(cl.loop.now + WITNESS_LEASE + 1.0)
        quiet_from = acked(cl)
        cl.loop.run_until(cl.loop.now + 2.0)
        return before, acked(cl) - quiet_from

    before, late = run(planted=False)
    assert before > 0 and late == 0, f"{late} acknowledged without a lease"
    _, late = run(planted=True)
    assert late > 0, "the planted hole must show: this test would not see it otherwise"
