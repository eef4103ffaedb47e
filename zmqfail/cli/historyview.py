"""`zmqfail history` as a person reads it: one line per entry of the nodes'
failover histories, merged by time, and what each node holds in quarantine.

Pure: entries (as the nodes write them to `DATA_DIR/history.jsonl`) in,
lines out, so the wording is tested without a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def merged(per_node: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Every node's entries in one list, oldest first; each names its node."""
    out = [{**e, "node": e.get("node", name)} for name, es in per_node.items() for e in es]
    out.sort(key=lambda e: (_time(e), str(e["node"])))
    return out


def _time(e: Mapping[str, Any]) -> float:
    t = e.get("time")
    return float(t) if isinstance(t, int | float) and not isinstance(t, bool) else 0.0


def clock(t: float) -> str:
    """Local date and time to the millisecond: entries of a night's incident
    are told apart and matched against the nodes' logs."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"


def change(e: Mapping[str, Any]) -> str:
    src = f"{e.get('from_role', '?')}/{e.get('from', '?')}"
    dst = f"{e.get('to_role', '?')}/{e.get('to', '?')}"
    return src if src == dst else f"{src} -> {dst}"


def details(e: Mapping[str, Any]) -> str:
    """What an entry adds to its reason: whom it took over from and the outage
    it saw, a forced promote's risk, the records a cut set aside."""
    out: list[str] = []
    if e.get("took_over_from"):
        seen = e.get("outage_ms")
        since = f", {seen} ms after it was last heard" if isinstance(seen, int) else ""
        out.append(f"took over from {e['took_over_from']}{since}")
    if e.get("may_lack_records"):
        out.append("may lack records its peers acknowledged")
    if isinstance(e.get("records"), int):
        acked = e.get("acknowledged_here")
        told = f"{acked} acknowledged here" if isinstance(acked, int) else "some maybe acknowledged"
        out.append(f"lsn {e.get('first_lsn')}..{e.get('last_lsn')}, {told}, in {e.get('file')}")
    if isinstance(e.get("quarantined"), int):
        out.append(f"{e['quarantined']} records in quarantine in all")
    return "; ".join(out)


def lines(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    if not entries:
        return ["no failover history yet"]
    node_w = max(4, *(len(str(e.get("node"))) for e in entries))
    change_w = max(6, *(len(change(e)) for e in entries))
    out = [f"{'time':<23}  {'node':<{node_w}}  {'change':<{change_w}}  {'epoch':>5}  why"]
    for e in entries:
        why = str(e.get("why", "?"))
        more = details(e)
        out.append(
            f"{clock(_time(e)):<23}  {e.get('node')!s:<{node_w}}  {change(e):<{change_w}}  "
            f"{e.get('epoch', '?')!s:>5}  {why}{f' ({more})' if more else ''}"
        )
    return out


def quarantine_lines(per_node: Mapping[str, Iterable[Mapping[str, Any]]]) -> list[str]:
    """Per node, the records it ever set aside (the newest total it wrote)."""
    out: list[str] = []
    for name, es in per_node.items():
        totals = [e["quarantined"] for e in es if isinstance(e.get("quarantined"), int)]
        if totals and totals[-1]:
            out.append(
                f"{name}: {totals[-1]} records set aside in quarantine (held by no other "
                "server; `zmqfail log dump --data-dir` on the directory named above reads them)"
            )
    return out
