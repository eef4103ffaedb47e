"""The normal state's data path overlaps its three processes (issue 10):
a backup's commit answer leaves before it applies the records to its tables,
and a primary takes a large batch of requests in parts, one a turn, each
part's records sent at the end of its turn. Shown on the simulator (real cores, the
simulated shell in the order the real one keeps: send, then `after_send`),
each with the old order planted back to show the test would see it."""

from __future__ import annotations

import pytest

from zmqfail.core.frontend import TURN_BUDGET
from zmqfail.core.node import NodeCore
from zmqfail.failover.state import State
from zmqfail.protocol import CommitAck, decode
from zmqfail.sim.cluster import SETTLE, Cluster

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("quiet_logs")]


def settled(window: int) -> Cluster:
    """A pair in the normal state, its one client about to keep `window`
    requests in flight (it sends nothing while the pair forms)."""
    cl = Cluster(seed=5, nodes=2, clients=1, window=window, think=0.0)
    (client,) = cl.clients
    client.sending = False
    cl.start()
    cl.loop.run_until(SETTLE)
    for name in ("a", "b"):
        core = cl.servers[name].core
        assert core is not None and core.agent.fs.state is State.NORMAL, name
    client.sending = True
    client.wake(cl.loop.now)
    return cl


def acks_ahead_of_tables(cl: Cluster, seconds: float) -> tuple[int, int]:
    """(commit answers the backup sent, of those how many confirmed records
    its tables did not hold yet when the answer left)."""
    server = cl.servers["b"]
    core = server.core
    assert core is not None
    real_route = server._route
    sent = ahead = 0

    def route(c: NodeCore) -> None:
        nonlocal sent, ahead
        for _link, data in c.out.answer:
            ack = decode(data)
            assert isinstance(ack, CommitAck)
            sent += 1
            ahead += ack.held > c.nlog.proc.last_lsn
        real_route(c)

    server._route = route  # type: ignore[method-assign,assignment]
    cl.loop.run_until(cl.loop.now + seconds)
    assert core.nlog.proc.last_lsn == core.nlog.held  # applied after each send
    return sent, ahead


def test_a_backup_answers_a_commit_before_it_applies_the_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent, ahead = acks_ahead_of_tables(settled(window=8), 0.1)
    assert sent > 20 and ahead > sent // 2, (sent, ahead)

    # Planted: the tables applied in the turn, before its frames leave (the
    # order before this change) -- every answer waits for them.
    real_end_turn = NodeCore.end_turn

    def applied_first(self: NodeCore, now: float) -> None:
        self.after_send()
        real_end_turn(self, now)

    monkeypatch.setattr(NodeCore, "end_turn", applied_first)
    sent, ahead = acks_ahead_of_tables(settled(window=8), 0.1)
    assert sent > 20 and ahead == 0, (sent, ahead)


def written_per_turn(cl: Cluster, seconds: float) -> list[int]:
    """Records the primary wrote in each of its turns that wrote any."""
    server = cl.servers["a"]
    core = server.core
    assert core is not None
    real_route = server._route
    written: list[int] = []
    last = core.nlog.held

    def route(c: NodeCore) -> None:
        nonlocal last
        if c.nlog.held > last:
            written.append(c.nlog.held - last)
        last = c.nlog.held
        real_route(c)

    server._route = route  # type: ignore[method-assign,assignment]
    cl.loop.run_until(cl.loop.now + seconds)
    return written


def test_a_primary_takes_a_large_batch_in_parts_that_leave_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One frame of 64 requests: at most TURN_BUDGET are taken (and their
    records sent) a turn, so the backup holds the first part while the
    primary takes the rest, and the client gets the first replies early."""
    cl = settled(window=4 * TURN_BUDGET)
    written = written_per_turn(cl, 0.05)
    assert len(written) > 20 and max(written) == TURN_BUDGET, written
    # Nothing lost or doubled by the parts: the backup's log is the primary's.
    a, b = cl.servers["a"].core, cl.servers["b"].core
    assert a is not None and b is not None
    assert a.nlog.held > 200 and b.nlog.held >= a.nlog.committed
    first = b.nlog.memlog.first_lsn
    n = b.nlog.held - first + 1
    assert b.nlog.memlog.get_range(first, n) == a.nlog.memlog.get_range(first, n)
    (client,) = cl.clients
    assert len({ack.msg_id for ack in client.acks}) == len(client.acks) > 200  # none twice

    # Planted: no budget, the whole frame in one turn (the order before).
    monkeypatch.setattr("zmqfail.core.frontend.TURN_BUDGET", 10**9)
    written = written_per_turn(settled(window=4 * TURN_BUDGET), 0.05)
    assert max(written) > TURN_BUDGET, written
