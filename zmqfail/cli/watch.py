"""`zmqfail watch`: the live view of a cluster.

Only the loop lives here; polling, the data model and the layout are in
`zmqfail/cli/view.py`, shared with `zmqfail status`.
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING

import click

from zmqfail.cli.common import config_option, groups, load_config, one_line_errors, shard_option
from zmqfail.cli.params import Number
from zmqfail.config import ClusterConfig

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from zmqfail.cli.view import Frame


@click.command("watch")
@config_option
@shard_option
@click.option(
    "--interval",
    default=0.25,
    show_default=True,
    type=Number(0.02, 3600),
    help="Seconds between polls.",
)
@click.option(
    "--once",
    is_flag=True,
    help="Print one frame and exit; it polls twice, --interval apart, so req/s is a real rate.",
)
@click.option(
    "--digest",
    "with_digest",
    is_flag=True,
    help="Also show the tables' digest (large tables are hashed by a forked child per poll).",
)
@click.option(
    "--timeout",
    default=0.5,
    show_default=True,
    type=Number(0.01, 3600),
    help="Seconds to wait for each node per poll.",
)
@one_line_errors
def watch_cmd(
    config_path: str | None,
    shard: str | None,
    interval: float,
    once: bool,
    with_digest: bool,
    timeout: float,
) -> None:
    """Live view of the cluster: one row per node, request rates, state changes.

    With [shards], one block per shard, each with its own verdict and last
    failover (--shard NAME: that one alone).

    On a terminal the view redraws in place; with stdout redirected every poll
    appends one frame. Ctrl-C stops it.
    """
    # Imported here: every `zmqfail node` start imports this module, and rich is not cheap.
    from rich.live import Live

    from zmqfail.cli.layout import make_console

    whole = load_config(config_path, shards=True)
    parts = groups(whole, shard)
    asked = parts[0] if len(parts) == 1 else whole  # every node of every shard shown
    console = make_console()
    # One thread per node: every node is asked at once, so a dead node delays
    # a refresh by one timeout, not one timeout per dead node.
    pool = ThreadPoolExecutor(max_workers=len(asked.nodes), thread_name_prefix="watch-poll")
    loop = _Loop(asked, parts, pool, with_digest, timeout, interval)
    # Ctrl-C ends the loop between polls: as an exception it could strike
    # inside the thread pool or a library and leave the exit waiting on a
    # half-started thread (seen once on a loaded machine).
    stop = loop.stop
    previous = signal.signal(signal.SIGINT, lambda _s, _f: stop.set())
    try:
        if once:
            loop.step()
            time.sleep(interval)
            console.print(loop.render(loop.step(), console.width, 20))
        elif console.is_terminal:
            with Live(console=console, auto_refresh=False, transient=False) as live:
                while not stop.is_set():
                    frames = loop.step()
                    room = _room(console, frames)
                    live.update(loop.render(frames, console.width, room), refresh=True)
                    loop.sleep()
        else:
            while not stop.is_set():
                console.print(loop.render(loop.step(), console.width, 10))
                console.file.flush()
                loop.sleep()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, previous)
        pool.shutdown(wait=False, cancel_futures=True)


def _room(console: Console, frames: list[Frame]) -> int:
    """State changes that fit under each table without scrolling the terminal
    (per block, the headline takes three lines, the table's head two, the gap
    one), shared out between the blocks."""
    rows = sum(len(f.rows) for f in frames)
    return max(3, (console.height - rows - 12 * len(frames)) // len(frames))


class _Loop:
    """Paces polls on a fixed schedule, so a slow poll does not stretch the next
    interval. `cfg`'s nodes are polled, all at once; each of `parts` (one
    failover group: the cluster, or a shard) keeps its own model and block."""

    def __init__(
        self,
        cfg: ClusterConfig,
        parts: list[ClusterConfig],
        pool: Executor,
        digest: bool,
        timeout: float,
        interval: float,
    ) -> None:
        self.cfg, self.pool, self.digest, self.timeout = cfg, pool, digest, timeout
        self.interval = interval
        from zmqfail.cli.view import WatchModel

        hb = cfg.failover.heartbeat_interval_ms
        self.parts = [([n.name for n in g.nodes], WatchModel(hb)) for g in parts]
        self.titles = [f"zmqfail cluster {g.name}" for g in parts]
        self.next_at = time.monotonic()
        self.stop = threading.Event()  # set by Ctrl-C

    def step(self) -> list[Frame]:
        from zmqfail.cli.view import poll

        statuses = {st.name: st for st in poll(self.cfg, self.digest, self.timeout, self.pool)}
        now, wall = time.monotonic(), time.time()
        return [m.update([statuses[n] for n in names], now, wall) for names, m in self.parts]

    def render(self, frames: list[Frame], width: int, max_transitions: int) -> RenderableType:
        from rich.console import Group
        from rich.text import Text

        from zmqfail.cli.layout import render

        blocks: list[RenderableType] = []
        for title, frame in zip(self.titles, frames, strict=True):
            stamp = time.strftime("%H:%M:%S", time.localtime(frame.polled_at))
            head = f"{title}  {stamp}  every {self.interval:g}s"
            if blocks:
                blocks.append(Text(""))
            blocks.append(render(frame, head, width, rates=True, max_transitions=max_transitions))
        return blocks[0] if len(blocks) == 1 else Group(*blocks)

    def sleep(self) -> None:
        self.next_at += self.interval
        now = time.monotonic()
        if self.next_at < now:  # fell behind (slow poll): start again from now
            self.next_at = now
        self.stop.wait(self.next_at - now)
