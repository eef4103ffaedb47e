"""Helpers of the simulator's tests: quiet campaigns and planted-bug hunts."""

from __future__ import annotations

from zmqfail.sim.campaign import campaign


def caught(kinds: set[str], seeds: range, app: str = "orders") -> dict[int, list[str]]:
    """Run the safe campaign over `seeds` with `app` and return the schedules
    that broke one of `kinds` (it stops at the first)."""

    def wanted(vs: list[str]) -> bool:
        return any(v.split(":")[0] in kinds for v in vs)

    s = campaign(seeds, workers=2, stop_on=wanted, app=app)
    return {seed: vs for seed, vs in s.failed.items() if wanted(vs)}
