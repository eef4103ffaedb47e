"""The `alarms` scenario of tools/bench (false alarms against detection time):
its counting of takeovers, running-alone episodes and stalls, the config
rewrite that sets the detection timing, and, on a real pair, that an episode
made on purpose (both replication links cut for a moment) is counted, so a
zero in docs/reliability.md means none happened, not that none was seen."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from benchkit.alarms import AlarmRow, false_alarms, format_row, tuned
from benchkit.cluster import Cluster
from benchkit.procs import BenchError, Reaper

from zmqfail import config
from zmqfail.client.control import call
from zmqfail.core.journal import StateChange
from zmqfail.core.status import NodeStatus
from zmqfail.failover.state import Role, State

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(60)


def node(name: str, epoch: int, counters: dict[str, int], *moves: StateChange) -> NodeStatus:
    return NodeStatus(
        name,
        Role.PRIMARY if name == "a" else Role.BACKUP,
        State.NORMAL,
        epoch=epoch,
        counters=counters,
        transitions=list(moves),
    )


def test_counts_only_what_happened_after_the_first_snapshot() -> None:
    old = StateChange(50.0, State.NORMAL, State.PRIMARY_ONLY, "earlier", 1)
    before = {
        "a": node("a", 1, {"takeovers": 0, "pauses": 2}, old),
        "b": node("b", 1, {"takeovers": 0, "pauses": 0}),
    }
    alone = StateChange(101.0, State.NORMAL, State.PRIMARY_ONLY, "backup silent", 1)
    back = StateChange(101.2, State.PRIMARY_ONLY, State.NORMAL, "backup back", 1)
    took = StateChange(102.0, State.NORMAL, State.BACKUP_ONLY, "primary gone", 2)
    after = {
        "a": node("a", 1, {"takeovers": 0, "pauses": 5}, old, alone, back),
        "b": node("b", 2, {"takeovers": 1, "pauses": 0}, took),
    }
    assert false_alarms(before, after, since=100.0) == (1, 2, 3)
    assert false_alarms(before, before, since=100.0) == (0, 0, 0)


def test_a_new_epoch_counts_even_when_the_counter_was_reset() -> None:
    before = {"a": node("a", 3, {"takeovers": 4}), "b": node("b", 3, {})}
    after = {"a": node("a", 3, {"takeovers": 4}), "b": node("b", 4, {})}
    assert false_alarms(before, after, since=0.0)[0] == 1


def test_tuned_sets_the_detection_timing_of_a_generated_config() -> None:
    cfg = config.loads(tuned(20, 7)(config.render(base_port=6100)), ROOT)
    assert (cfg.failover.heartbeat_interval_ms, cfg.failover.heartbeat_misses) == (20, 7)
    with pytest.raises(BenchError, match="heartbeat_misses"):
        tuned(20, 7)("[failover]\nheartbeat_interval_ms = 30\n")


def test_rows_read_as_a_sentence() -> None:
    row = AlarmRow(30, 10, "loaded", 60.0, 2, 0, 1, 4, 12345, 0)
    assert format_row(row) == (
        "dead  300 ms (30 x 10) loaded hogs 2: 60 s, false takeovers 0, "
        "running alone 1, stalls noticed 4, 12,345 replies, client failovers 0"
    )
    kills = AlarmRow(30, 5, "kills", 0.0, 2, detect_ms=(300.0, 250.0, 410.0))
    assert format_row(kills).endswith("3 kill -9, detected and serving p50 300.0 ms, max 410.0 ms")


@pytest.mark.process
def test_an_episode_made_on_purpose_is_counted() -> None:
    """The planted false alarm: both replication links of the primary cut
    for a moment make it run alone once; the scenario's counting sees it."""
    with Reaper() as reaper:
        cl = Cluster(reaper, 2, ["a", "b"], tune=tuned(30, 10))
        try:
            assert cl.cfg.failover.heartbeat_misses == 10
            cl.wait_state("a", State.NORMAL, 30)
            cl.wait_state("b", State.NORMAL, 30)
            before = {s.name: s for s in cl.nodes.statuses()}
            since = time.time() - 1.0  # the nodes share this machine's clock
            for link in ("main", "failsafe"):
                call(cl.cfg.node("a").control, "cut", {"link": link, "for": 30.0}, 2.0)
            cl.wait_state("a", State.PRIMARY_ONLY, 20)
            for link in ("main", "failsafe"):
                call(cl.cfg.node("a").control, "heal", {"link": link}, 2.0)
            cl.wait_state("a", State.NORMAL, 30)
            after = {s.name: s for s in cl.nodes.statuses()}
            takeovers, alone, _ = false_alarms(before, after, since)
            assert alone >= 1, [t for s in after.values() for t in s.transitions]
            assert takeovers == 0  # a link failure: the backup's probe finds a alive
        finally:
            cl.close()
