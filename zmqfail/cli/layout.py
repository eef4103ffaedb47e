"""How the cluster view is laid out on a terminal of a given width.

Above the table, in words: the verdict (protected / degraded / down, who is
primary, lag) and the last failover with its outage. The table's columns are
ranked; the most useful that fit the width are shown whole, in their natural
order, and the rest left out, so nothing is ever cut to `pri…`. The rate
history (a sparkline) comes only on wide terminals and only when every other
column already fits. Pure: a frame and a width in, rich renderables out.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from zmqfail.cli.health import UNREACHABLE, Transition, Verdict, failover_words
from zmqfail.cli.view import HISTORY, Frame, NodeRow
from zmqfail.replication import LINKS

HISTORY_FROM = 140  # columns from which the rate history is shown
MIN_WIDTH = 160  # off a terminal (pipes, files): lay out for this many columns

STATE_STYLES = {
    "normal": "green",
    "primary_only": "yellow",
    "backup_only": "yellow",
    "syncing": "cyan",
    "standby": "cyan",
    "starting": "cyan",
    "handoff": "magenta",
    "fenced": "red",
    "stopped": "red",
    UNREACHABLE: "grey50",
}
HEALTH_STYLES = {"up": "green", "down": "red", "cut": "magenta"}
VERDICT_STYLES = {
    Verdict.OK: "bold green",
    Verdict.DEGRADED: "bold yellow",
    Verdict.DOWN: "bold red",
}


@dataclass(frozen=True, slots=True)
class Column:
    head: str
    cell: Callable[[NodeRow], Text]
    rank: int  # lower ranks are kept first when the width runs out
    right: bool = False


def _plain(get: Callable[[NodeRow], str]) -> Callable[[NodeRow], Text]:
    return lambda r: Text(get(r))


def _link(lk: str) -> Callable[[NodeRow], Text]:
    def cell(r: NodeRow) -> Text:
        v = r.health.get(lk, "-")
        return Text(v, style=HEALTH_STYLES.get(v, ""))

    return cell


COLUMNS: tuple[Column, ...] = (
    Column("node", lambda r: Text(r.name, style="bold"), 0),
    Column("role", lambda r: Text(r.role, style=STATE_STYLES.get(r.state, "")), 0),
    Column("epoch", _plain(lambda r: r.epoch), 1, right=True),
    Column("lsn", _plain(lambda r: r.last_lsn), 1, right=True),
    Column("lag", _plain(lambda r: r.lag), 1, right=True),
    *(Column(lk, _link(lk), 2) for lk in LINKS),
    Column("req/s", _plain(lambda r: r.rate), 3, right=True),
    Column("clients", _plain(lambda r: r.clients), 4, right=True),
    Column("peer hb", _plain(lambda r: r.peers), 5),
    Column("link", _plain(lambda r: r.link), 6),
    Column("committed", _plain(lambda r: r.committed_lsn), 8, right=True),
    Column("flushed", _plain(lambda r: r.flushed_lsn), 8, right=True),
    Column("state", lambda r: Text(r.state, style=STATE_STYLES.get(r.state, "")), 9),
    Column("digest", _plain(lambda r: r.digest), 10),
    # Padded to its full width from the first poll, so the layout does not
    # change as the history fills up.
    Column("history", lambda r: Text(r.spark.ljust(HISTORY), style="cyan"), 7),
)


def make_console(file: IO[str] | None = None) -> Console:
    """Off a terminal (pipes, files) rich would assume 80 columns; lay out for
    MIN_WIDTH instead, unless COLUMNS says how wide the reader is."""
    out = file or sys.stdout
    console = Console(file=out)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(file=out, width=max(console.width, MIN_WIDTH))
    return console


def _table(rows: Sequence[NodeRow], columns: Sequence[Column]) -> Table:
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for c in columns:
        t.add_column(c.head, justify="right" if c.right else "left", no_wrap=True)
    for r in rows:
        t.add_row(*(c.cell(r) for c in columns), style=None if r.reachable else "grey50")
    return t


GAP = 3  # between columns: a space of padding each side of a blank rule (box.SIMPLE_HEAD)


def choose_columns(rows: Sequence[NodeRow], width: int, rates: bool) -> list[Column]:
    """The columns shown at `width`: by rank while they fit (every one at its
    natural width), in their natural order; the history only from HISTORY_FROM."""
    wanted = [c for c in COLUMNS if rates or c.head not in ("req/s", "history")]
    if width < HISTORY_FROM:
        wanted = [c for c in wanted if c.head != "history"]
    if not any(r.digest != "-" for r in rows):
        wanted = [c for c in wanted if c.head != "digest"]
    natural = {c.head: max([len(c.head)] + [c.cell(r).cell_len for r in rows]) for c in wanted}
    kept = [c for c in wanted if c.rank == 0]
    used = sum(natural[c.head] for c in kept) + GAP * (len(kept) - 1)
    for c in sorted(wanted, key=lambda c: c.rank):
        if c not in kept and used + GAP + natural[c.head] <= width:
            kept.append(c)
            used += GAP + natural[c.head]
    return [c for c in wanted if c in kept]


def table(rows: Sequence[NodeRow], width: int, rates: bool) -> Table:
    return _table(rows, choose_columns(rows, width, rates))


def clock_text(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"


def headline(frame: Frame, title: str) -> list[Text]:
    """Title, verdict and last failover: the answers before the details."""
    h = frame.health
    verdict = Text()
    verdict.append(h.verdict.word.upper(), style=VERDICT_STYLES[h.verdict])
    verdict.append(f"  {h.summary}")
    clock = clock_text(frame.failover.time) if frame.failover else ""
    return [Text(title, style="bold"), verdict, Text(failover_words(frame.failover, clock))]


def transitions_table(items: Sequence[Transition]) -> Table:
    t = Table(title="state changes (newest last)", box=None, pad_edge=False, title_justify="left")
    for h in ("time", "node", "change", "why", "epoch"):
        t.add_column(h, no_wrap=True)
    for tr in items:
        change = Text()
        change.append(tr.src, style=STATE_STYLES.get(tr.src, ""))
        change.append(" -> ")
        change.append(tr.dst, style=STATE_STYLES.get(tr.dst, ""))
        epoch = "-" if tr.epoch is None else str(tr.epoch)
        t.add_row(
            Text(clock_text(tr.time)),
            Text(tr.node, style="bold"),
            change,
            Text(tr.why),
            Text(epoch),
        )
    return t


def render(
    frame: Frame, title: str, width: int, rates: bool = True, max_transitions: int = 0
) -> RenderableType:
    parts: list[RenderableType] = [*headline(frame, title), table(frame.rows, width, rates)]
    shown = frame.transitions[-max_transitions:] if max_transitions > 0 else []
    if shown:
        parts += [Text(""), transitions_table(shown)]
    return Group(*parts)
