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

from zmqfail.cli.common import config_option, load_config, one_line_errors
from zmqfail.cli.params import Number
from zmqfail.config import ClusterConfig

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from zmqfail.cli.view import Frame


@click.command("watch")
@config_option
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
    config_path: str | None, interval: float, once: bool, with_digest: bool, timeout: float
) -> None:
    """Live view of the cluster: one row per node, request rates, state changes.

    On a terminal the view redraws in place; with stdout redirected every poll
    appends one frame. Ctrl-C stops it.
    """
    # Imported here: every `zmqfail node` start imports this module, and rich is not cheap.
    from rich.live import Live

    from zmqfail.cli.layout import make_console

    cfg = load_config(config_path)
    console = make_console()
    # One thread per node: every node is asked at once, so a dead node delays
    # a refresh by one timeout, not one timeout per dead node.
    pool = ThreadPoolExecutor(max_workers=len(cfg.nodes), thread_name_prefix="watch-poll")
    loop = _Loop(cfg, pool, with_digest, timeout, interval)
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
                    frame = loop.step()
                    room = _room(console, frame)
                    live.update(loop.render(frame, console.width, room), refresh=True)
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


def _room(console: Console, frame: Frame) -> int:
    """State changes that fit under the table without scrolling the terminal
    (the headline takes three lines, the table's head two, the gap one)."""
    return max(3, console.height - len(frame.rows) - 12)


class _Loop:
    """Paces polls on a fixed schedule, so a slow poll does not stretch the next interval."""

    def __init__(
        self, cfg: ClusterConfig, pool: Executor, digest: bool, timeout: float, interval: float
    ) -> None:
        self.cfg, self.pool, self.digest, self.timeout = cfg, pool, digest, timeout
        self.interval = interval
        from zmqfail.cli.view import WatchModel

        self.model = WatchModel(cfg.failover.heartbeat_interval_ms)
        self.next_at = time.monotonic()
        self.stop = threading.Event()  # set by Ctrl-C
        self.title = f"zmqfail cluster {cfg.name}"

    def step(self) -> Frame:
        from zmqfail.cli.view import poll

        statuses = poll(self.cfg, self.digest, self.timeout, self.pool)
        return self.model.update(statuses, time.monotonic(), time.time())

    def render(self, frame: Frame, width: int, max_transitions: int) -> RenderableType:
        stamp = time.strftime("%H:%M:%S", time.localtime(frame.polled_at))
        title = f"{self.title}  {stamp}  every {self.interval:g}s"
        from zmqfail.cli.layout import render

        return render(frame, title, width, rates=True, max_transitions=max_transitions)

    def sleep(self) -> None:
        self.next_at += self.interval
        now = time.monotonic()
        if self.next_at < now:  # fell behind (slow poll): start again from now
            self.next_at = now
        self.stop.wait(self.next_at - now)
