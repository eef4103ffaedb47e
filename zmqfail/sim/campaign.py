"""Running many seeded schedules, in several processes, and summing up.

A seed determines everything: the faults, when they strike, every delay and
loss, every random choice of the servers and clients. `replay(seed)` runs one
again and returns its event trace.
"""

from __future__ import annotations

import gc
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from zmqfail.policies import Durability
from zmqfail.sim.cluster import SETTLE, Cluster, Outcome
from zmqfail.sim.schedule import ALLOWED_UNSAFE, random_schedule

FAULT_WINDOW = 2.0  # seconds of faults after the pair formed, then everything heals


def run_one(
    seed: int,
    unsafe: bool = False,
    witness: bool = False,
    app: str = "orders",
    durability: Durability = Durability.MEMORY,
) -> tuple[Outcome, list[str]]:
    apply, picked = random_schedule(seed, safe=not unsafe, witness=witness)
    cluster = Cluster(seed, witness=witness, app=app, durability=durability)
    out = cluster.run(apply, until=SETTLE + FAULT_WINDOW)
    if unsafe:
        allowed = allowed_unsafe(picked, durability)
        out.violations = [v for v in out.violations if v.kind not in allowed]
    return out, picked


def allowed_unsafe(picked: list[str], durability: Durability) -> frozenset[str]:
    """The violations an unsafe schedule of these faults may show by design."""
    allowed = ALLOWED_UNSAFE
    split = "split-servers" in picked
    if durability is Durability.DISK and not split:
        # Fsynced on every server before the ack: only split brain loses.
        allowed = allowed - {"lost"}
    return allowed


def _few_collections() -> None:
    """A worker's garbage collector looks at its young objects every 20,000
    allocations instead of 700: a schedule allocates and drops millions of
    small objects (frames, events, closures) and keeps few cycles, so the
    default thresholds spend several per cent of a campaign looking for
    garbage that reference counting already freed (`tools/sim --seeds 2000`
    on an idle machine: 96 s of CPU before, 87 s after). What the worker
    inherited from its parent (under pytest: every test module) is frozen out
    of the collections altogether."""
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def _worker(
    args: tuple[int, bool, bool, str, Durability],
) -> tuple[int, list[str], list[str], int, int, float, int]:
    seed, unsafe, witness, app, durability = args
    try:
        out, picked = run_one(seed, unsafe, witness, app, durability)
    except Exception as exc:  # a bug in the core or the simulator: report the seed
        again = f"tools/sim --replay {seed}" + (f" --app {app}" if app != "orders" else "")
        crash = f"crash: {type(exc).__name__}: {exc} ({again})"
        return seed, [], [crash], 0, 0, 0.0, 0
    return (
        seed,
        picked,
        [str(v) for v in out.violations],
        out.acked,
        out.faults,
        out.sim_seconds,
        out.events,
    )


@dataclass(slots=True)
class Summary:
    schedules: int = 0
    seconds: float = 0.0
    sim_seconds: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    acked: int = 0
    events: int = 0
    failed: dict[int, list[str]] = field(default_factory=dict)  # seed -> violations

    @property
    def rate(self) -> float:
        return self.schedules / self.seconds if self.seconds else 0.0


def campaign(
    seeds: range,
    unsafe: bool = False,
    workers: int = 2,
    minutes: float | None = None,
    stop_on: Callable[[list[str]], bool] | None = None,
    witness: bool = False,
    app: str = "orders",
    durability: Durability = Durability.MEMORY,
) -> Summary:
    """Run `seeds` (or as many as `minutes` allow, from seeds.start on), the
    cluster running `app` (orders or ledger). `stop_on(violations)` true ends
    the run at that schedule (a planted bug is shown caught without running
    every seed)."""
    s = Summary()
    t0 = time.monotonic()
    deadline = t0 + minutes * 60 if minutes else None
    todo = iter(seeds) if deadline is None else iter(range(seeds.start, 2**62))
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_few_collections) as pool:
        for seed, picked, violations, acked, _faults, sim_s, events in pool.imap_unordered(
            _worker,
            ((seed, unsafe, witness, app, durability) for seed in todo),
            chunksize=4,  # a short tail: the last chunks end close together
        ):
            s.schedules += 1
            s.faults.update(picked)
            s.acked += acked
            s.sim_seconds += sim_s
            s.events += events
            if violations:
                s.failed[seed] = violations
            stop = bool(violations) and stop_on is not None and stop_on(violations)
            if stop or (deadline is not None and time.monotonic() > deadline):
                pool.terminate()
                break
    s.seconds = time.monotonic() - t0
    return s


def replay(
    seed: int,
    unsafe: bool = False,
    witness: bool = False,
    app: str = "orders",
    durability: Durability = Durability.MEMORY,
) -> tuple[Outcome, list[str]]:
    return run_one(seed, unsafe, witness, app, durability)


def run_named(
    name: str,
    seed: int = 1,
    witness: bool = False,
    app: str = "orders",
    durability: Durability = Durability.MEMORY,
) -> Outcome:
    from zmqfail.sim.schedule import DURATION, NAMED

    cluster = Cluster(seed, witness=witness, app=app, durability=durability)
    return cluster.run(NAMED[name], until=SETTLE + DURATION.get(name, 2.5))
