"""`zmqfail history` as a person reads it: one line per entry of the nodes'
failover histories, merged by time, and what each node holds in quarantine.

Pure: typed entries (`StateChange`, as the nodes write them to
`DATA_DIR/history.jsonl`) in, lines out, so the wording is tested without a
cluster.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

from zmqfail.core.journal import StateChange
from zmqfail.failover.state import Role


def merged(per_node: Mapping[str, Sequence[StateChange]]) -> list[StateChange]:
    """Every node's entries in one list, oldest first; each names its node."""
    out = [replace(e, node=e.node or name) for name, es in per_node.items() for e in es]
    out.sort(key=lambda e: (e.time, e.node))
    return out


def clock(t: float) -> str:
    """Local date and time to the millisecond: entries of a night's incident
    are told apart and matched against the nodes' logs."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"


def change(e: StateChange) -> str:
    src = f"{_role(e.src_role)}/{e.src.value}"
    dst = f"{_role(e.dst_role)}/{e.dst.value}"
    return src if src == dst else f"{src} -> {dst}"


def _role(role: Role | None) -> str:
    return "?" if role is None else role.value


def details(e: StateChange) -> str:
    """What an entry adds to its reason: whom it took over from and the outage
    it saw, a forced promote's risk, the records a cut set aside."""
    out: list[str] = []
    if e.took_over_from:
        seen = e.outage_ms
        since = f", {seen} ms after it was last heard" if seen is not None else ""
        out.append(f"took over from {e.took_over_from}{since}")
    if e.may_lack_records:
        out.append("may lack records its peers acknowledged")
    if e.set_aside is not None:
        cut = e.set_aside
        acked = cut.acknowledged_here
        told = f"{acked} acknowledged here" if acked is not None else "some maybe acknowledged"
        out.append(f"lsn {cut.first_lsn}..{cut.last_lsn}, {told}, in {cut.file}")
    if e.quarantined is not None:
        out.append(f"{e.quarantined} records in quarantine in all")
    return "; ".join(out)


def lines(entries: Sequence[StateChange]) -> list[str]:
    if not entries:
        return ["no failover history yet"]
    node_w = max(4, *(len(e.node) for e in entries))
    change_w = max(6, *(len(change(e)) for e in entries))
    out = [f"{'time':<23}  {'node':<{node_w}}  {'change':<{change_w}}  {'epoch':>5}  why"]
    for e in entries:
        more = details(e)
        out.append(
            f"{clock(e.time):<23}  {e.node:<{node_w}}  {change(e):<{change_w}}  "
            f"{e.epoch:>5}  {e.why}{f' ({more})' if more else ''}"
        )
    return out


def quarantine_lines(per_node: Mapping[str, Sequence[StateChange]]) -> list[str]:
    """Per node, the records it ever set aside (the newest total it wrote)."""
    out: list[str] = []
    for name, es in per_node.items():
        totals = [e.quarantined for e in es if e.quarantined is not None]
        if totals and totals[-1]:
            out.append(
                f"{name}: {totals[-1]} records set aside in quarantine (held by no other "
                "server; `zmqfail log dump --data-dir` on the directory named above reads them)"
            )
    return out
