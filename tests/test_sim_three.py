"""Three servers on the simulator: the primary crashes, freezes, or crashes
and comes back, at a random moment under load, and exactly one of the two
backups may take over (the most up to date; ties by the configured order).
The CI campaign runs pairs only; `test_failover_live` has one real 3-node
takeover. A takeover by both backups at once is planted to show the sweep
sees it (two leaders of one epoch: split, and acknowledged writes lost)."""

from __future__ import annotations

import random

import pytest

from zmqfail.failover import lead
from zmqfail.sim.cluster import Cluster

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("quiet_logs")]

KINDS = ("crash", "pause", "crash-restart")


def violations(seed: int) -> list[str]:
    rng = random.Random(seed)
    kind = rng.choice(KINDS)

    def faults(cl: Cluster) -> None:
        def hit() -> None:
            p = cl.primary() or "a"
            if kind == "pause":
                cl.pause(p)
                cl.loop.at(cl.loop.now + rng.uniform(0.2, 1.0), lambda: cl.resume(p))
                return
            cl.crash(p)
            if kind == "crash-restart":
                cl.loop.at(cl.loop.now + rng.uniform(0.2, 1.0), lambda: cl.restart(p))

        cl.loop.at(cl.loop.now + rng.uniform(0.0, 0.5), hit)

    out = Cluster(seed, nodes=3).run(faults, until=3.0)
    return [f"seed {seed} ({kind}): {v}" for v in out.violations]


def test_three_servers_lose_nothing_when_the_primary_fails() -> None:
    found = [v for seed in range(1, 121) for v in violations(seed)]
    assert found == []


def test_both_backups_taking_over_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lead, "_best_candidate", lambda s: True)
    for seed in range(1, 41):
        found = violations(seed)
        if any("split" in v for v in found):
            return
    pytest.fail("a double takeover in 40 schedules went unseen")
