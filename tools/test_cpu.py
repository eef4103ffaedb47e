"""Sum up a ZMQFAIL_TEST_CPU_LOG file (tests/conftest.py): the tests and the
test files that cost the most CPU, with their wall time beside it.

    ZMQFAIL_TEST_CPU_LOG=/tmp/cpu.tsv bin/test -q
    python tools/test_cpu.py /tmp/cpu.tsv [--top 40]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path)
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    rows: list[tuple[float, float, int, str]] = []
    for line in args.log.read_text().splitlines():
        cpu, wall, _worker, pythons, nodeid = line.split("\t", 4)
        rows.append((float(cpu), float(wall), int(pythons), nodeid))
    files: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    for cpu, wall, pythons, nodeid in rows:
        f = files[nodeid.split("::", 1)[0]]
        f[0] += cpu
        f[1] += wall
        f[2] += pythons
        f[3] += 1
    total_cpu = sum(r[0] for r in rows)
    total_wall = sum(r[1] for r in rows)
    started = sum(r[2] for r in rows)
    print(
        f"{len(rows)} tests: {total_cpu:.1f} s CPU, {total_wall:.1f} s wall (summed), "
        f"{started} Python processes started"
    )
    print(f"\n{'cpu':>8} {'wall':>8} {'procs':>5} {'tests':>5}  file")
    for name, (cpu, wall, pythons, n) in sorted(files.items(), key=lambda kv: -kv[1][0])[
        : args.top
    ]:
        print(f"{cpu:8.1f} {wall:8.1f} {int(pythons):5d} {int(n):5d}  {name}")
    print(f"\n{'cpu':>8} {'wall':>8} {'procs':>5}  test")
    for cpu, wall, pythons, nodeid in sorted(rows, reverse=True)[: args.top]:
        print(f"{cpu:8.1f} {wall:8.1f} {pythons:5d}  {nodeid}")


if __name__ == "__main__":
    main()
