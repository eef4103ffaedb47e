"""Deterministic simulation campaigns: the real node core and client core on a
simulated network, disk and clock, under seeded fault schedules.

    tools/sim --seeds 2000                 # schedules 1..2000, the safe faults
    tools/sim --minutes 10 --start 5000    # as many as 10 minutes allow
    tools/sim --seeds 500 --unsafe         # any faults: checked for convergence
    tools/sim --replay 1234 [--unsafe]     # one seed again, with its event trace
    tools/sim --named audit-both-links-cut # a named case
    tools/sim --seeds 500 --app ledger     # the ledger: money conserved, no transfer twice
    tools/sim --seeds 500 --witness        # a witness elects; its faults and the split are safe
    tools/sim --named power-loss-backup-first --durability disk   # nothing lost

Exits 1 when any schedule breaks an invariant (the failing seeds are listed;
each replays exactly).
"""

from __future__ import annotations

import argparse
import logging
import sys

from zmqfail.app import SHIPPED
from zmqfail.config import Durability
from zmqfail.sim.campaign import campaign, replay, run_named
from zmqfail.sim.schedule import NAMED


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=200, help="how many schedules")
    ap.add_argument("--start", type=int, default=1, help="the first seed")
    ap.add_argument("--minutes", type=float, default=None, help="run for this long instead")
    ap.add_argument("--unsafe", action="store_true", help="faults outside the safe set too")
    ap.add_argument(
        "--witness",
        action="store_true",
        help="a witness elects the primary; its loss, its cut from a server and the "
        "servers split on every network join the safe faults",
    )
    ap.add_argument("--workers", type=int, default=2, help="processes")
    ap.add_argument("--replay", type=int, default=None, help="run one seed, print its trace")
    ap.add_argument("--named", choices=sorted(NAMED), default=None, help="run a named case")
    ap.add_argument(
        "--app", choices=sorted(SHIPPED), default="orders", help="the application the cluster runs"
    )
    ap.add_argument(
        "--durability",
        choices=[d.value for d in Durability],
        default=Durability.MEMORY.value,
        help='[flush] durability of the servers ("disk": fsynced on both before the ack)',
    )
    args = ap.parse_args()
    durability = Durability(args.durability)
    if args.replay is not None or args.named is not None:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        if args.named is not None:
            out = run_named(
                args.named, args.start, witness=args.witness, app=args.app, durability=durability
            )
            picked = [args.named]
        else:
            out, picked = replay(
                args.replay, args.unsafe, args.witness, app=args.app, durability=durability
            )
        print("\n".join(out.trace))
        print(f"faults: {', '.join(picked)}; acknowledged: {out.acked}; events: {out.events}")
        for v in out.violations:
            print(f"VIOLATION {v}")
        return 1 if out.violations else 0
    logging.disable(logging.CRITICAL)
    seeds = range(args.start, args.start + args.seeds)
    s = campaign(
        seeds,
        args.unsafe,
        args.workers,
        args.minutes,
        witness=args.witness,
        app=args.app,
        durability=durability,
    )
    mode = "any faults (lost and split allowed)" if args.unsafe else "safe faults"
    mode += f", {args.app}, durability {durability.value}"
    mode += ", a witness" if args.witness else ""
    print(
        f"{s.schedules} schedules ({mode}) in {s.seconds:.1f} s: {s.rate:.1f} schedules/s, "
        f"{s.sim_seconds / s.seconds:.0f} simulated s per s, {s.events / max(1, s.schedules):.0f} "
        f"events a schedule, {s.acked} requests acknowledged"
    )
    print("faults injected: " + ", ".join(f"{k} {n}" for k, n in sorted(s.faults.items())))
    for seed, violations in sorted(s.failed.items()):
        print(f"seed {seed}: " + "; ".join(violations))
    print(f"violations: {len(s.failed)} schedule(s)")
    return 1 if s.failed else 0


if __name__ == "__main__":
    sys.exit(main())
