"""A chaos campaign against real zmqfail processes (run as `tools/chaos`).

Starts a pair (with --witness, a witness too) in a fresh directory, loads it
with `zmqfail client bench` recording every request, and for --minutes
injects a seeded random schedule of faults, one at a time, each healed and
the pair whole again before the next: kill -9 and restart of either node,
pause (SIGSTOP/SIGCONT), a cut of the main link, the failsafe link, both, or
the node's client network, one-way loss (both replication links at one node
lose only what it hears, or only what it sends), one-way slow replication,
power loss of every server, and (with --witness) the witness's loss. With
--netns (root), node b runs in a network namespace and the cuts are real
(tools/chaoskit/netns.py). Then it stops the load, checks the history and
every node's log (zmqfail/runcheck.py) and prints a table per fault kind.
Exit status 1 on any violation, 2 when it could not run. The same seed draws
the same faults (their timing meets a live system).
See docs/reliability.md, "tools/chaos".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchkit.procs import interrupt_on_signals
from chaoskit.campaign import Options, check, remove, run
from chaoskit.schedule import kinds_for, parse_kinds
from chaoskit.tally import format_table

from zmqfail import netlab
from zmqfail.errors import ZmqfailError


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tools/chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1, help="seed of the schedule (default 1)")
    p.add_argument("--minutes", type=float, default=1.0, help="minutes of faults (default 1)")
    p.add_argument("--faults", type=int, default=None, help="stop after this many faults")
    p.add_argument("--kinds", default=None, help="comma-separated fault kinds (default: all)")
    p.add_argument("--witness", action="store_true", help="run a witness; its loss is a fault")
    p.add_argument(
        "--netns",
        action="store_true",
        help="node b in a network namespace: cut real cables (root only; else socket cuts)",
    )
    p.add_argument("--app", default="orders", choices=("orders", "ledger"))
    p.add_argument(
        "--rate", type=float, default=None, help="requests/s in all (default: closed loop)"
    )
    p.add_argument("--dir", type=Path, default=None, help="run here and keep it (default: temp)")
    p.add_argument("--json", type=Path, default=None, help="write the table and verdict here")
    p.add_argument("--check", type=Path, default=None, metavar="DIR", help="judge a kept run")
    a = p.parse_args(argv)
    if a.minutes <= 0 or (a.faults is not None and a.faults < 1):
        p.error("--minutes must be positive and --faults at least 1")
    if a.rate is not None and not a.rate > 0:
        p.error("--rate must be positive")
    return a


def main(argv: list[str]) -> int:
    a = parse(argv)
    interrupt_on_signals()
    try:
        kinds = parse_kinds(a.kinds, a.witness) if a.kinds else kinds_for(a.witness)
    except ValueError as exc:
        print(f"tools/chaos: {exc}", file=sys.stderr)
        return 2
    netns = a.netns and a.check is None
    if netns and (why := netlab.available()):
        msg = f"tools/chaos: --netns: {why}; cutting through the control sockets instead"
        print(msg, file=sys.stderr)
        netns = False
    try:
        if a.check is not None:
            directory = a.check
        else:
            opts = Options(
                a.seed, a.minutes, a.app, a.witness, kinds, a.faults, a.dir, a.rate, netns
            )
            directory = run(opts, lambda line: print(line, flush=True))
        verdict = check(directory)
    except (ZmqfailError, OSError) as exc:
        print(f"tools/chaos: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: every process was ended on the way
        print(f"tools/chaos: interrupted ({exc or 'SIGINT'})", file=sys.stderr)
        return 130
    print(format_table(verdict.rows))
    for note in verdict.notes:
        print(f"note: {note}")
    for v in verdict.violations:
        print(f"VIOLATION: {v}")
    print(f"{len(verdict.violations)} violation(s)")
    if a.json is not None:
        a.json.write_text(json.dumps({"dir": str(directory), **verdict.as_dict()}, indent=1))
    keep = a.check is not None or a.dir is not None or bool(verdict.violations)
    if keep and a.check is None:
        print(f"run kept in {directory}")
    remove(directory, keep)
    return 1 if verdict.violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
