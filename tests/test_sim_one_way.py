"""One-way loss on both replication links, in the simulator: whichever way
the cut goes, service goes on during it, not only after the heal.

Primary -> backup lost: the backup hears nothing, finds the primary alive
over the client network and stands by; the primary still hears the backup's
heartbeats but none of its commits is answered. It must not wait for the
heal (a half-broken cable may last hours): after STALLED dead times without
an answer it runs alone. Backup -> primary lost: the primary hears nothing
from the backup and runs alone after the dead time and its probe.
"""

from __future__ import annotations

import pytest

from zmqfail.core import leader
from zmqfail.sim.cluster import SETTLE, Cluster

pytestmark = pytest.mark.timeout(60)

CUT = 4.0  # seconds the loss lasts


def acks_during_cut(src: str, dst: str) -> tuple[int, list[str]]:
    """Acknowledgements of requests sent in the second half of a one-way
    cut src -> dst on both links (after every detection has run), and the
    violations found once healed."""
    c = Cluster(3)
    t0 = SETTLE + 0.5

    def faults(c: Cluster) -> None:
        def cut() -> None:
            for net in ("main", "failsafe"):
                c.cut(src, dst, net, both=False)

        c.loop.at(t0, cut)

    out = c.run(faults, until=t0 + CUT)
    late = [a for cl in c.clients for a in cl.acks if t0 + CUT / 2 <= a.sent_at <= t0 + CUT]
    return len(late), [f"{v.kind}: {v.detail}" for v in out.violations]


@pytest.mark.parametrize(("src", "dst"), [("a", "b"), ("b", "a")])
def test_service_goes_on_during_one_way_loss(src: str, dst: str) -> None:
    served, violations = acks_during_cut(src, dst)
    assert violations == []
    assert served > 20, f"{src} -> {dst} lost: the primary stalled until the heal"


def test_without_the_stall_rule_the_primary_waits_for_the_heal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Planted: a primary that drops a backup only when its heartbeats stop
    too (the rule before) acknowledges nothing while its records are lost."""
    monkeypatch.setattr(leader, "STALLED", 10**9)
    served, violations = acks_during_cut("a", "b")
    assert violations == [] and served == 0
