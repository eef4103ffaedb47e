"""Fault plans for `zmqfail kill --plan`: parsing and scheduling, without I/O.

A plan is a TOML file of steps, each at a time offset from the start:

    [[step]]
    at = 1.0            # seconds from the start of the plan
    node = "primary"    # a node name, or "primary" / "backup" resolved when the step runs
    signal = "STOP"     # one of: signal, restart, link

    [[step]]
    at = 3.0
    node = "a"
    link = "main"       # main | failsafe | clients
    for = 1.5           # optional: the node heals itself after this long
    heal = false        # optional: true heals instead of cutting
    direction = "in"    # optional: in | out | both (default): which way is lost

    [[step]]
    at = 4.0
    node = "a"
    restart = true
    wait = true         # optional: later steps wait until the node is back

Steps run in plan order, each at its planned time. A restart (the one step
that takes seconds: the new process must come back, serving or as an in-sync
backup) runs alongside the later steps, so it delays nothing after it,
unless it says `wait = true`; every other step runs in turn on the plan's
thread (a few hundred ms at most), so a CONT can never overtake its STOP. A
step that is late (after a waiting restart, or a slow step) starts as soon as
the one before it is done; the report says when each began. The executor
takes its clock, its sleep and the pool restarts run on as arguments, so
tests run a plan in no time and the CLI runs it for real.
"""

from __future__ import annotations

import enum
import functools
import tomllib
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zmqfail.errors import ConfigError, ZmqfailError
from zmqfail.replication import LINKS
from zmqfail.tablecheck import check_keys

SIGNALS = ("KILL", "TERM", "STOP", "CONT")
LINK_NAMES = (*LINKS, "clients", "witness")  # every channel a node can be told to cut
ROLE_ALIASES = ("primary", "backup")


class Direction(enum.Enum):
    """Which way a cut channel loses traffic, seen from the node it is cut at:
    IN, it hears nothing on it; OUT, nothing it sends leaves; BOTH, neither.
    One-way loss is what a half-broken cable or a one-sided firewall rule
    does: each side sees a different story, which the failover must survive."""

    BOTH = "both"
    IN = "in"
    OUT = "out"

    @classmethod
    def parse(cls, v: object) -> Direction:
        try:
            return cls(v)
        except ValueError:
            names = ", ".join(d.value for d in cls)
            raise ValueError(f"direction must be one of {names}, got {v!r:.40}") from None


@dataclass(frozen=True, slots=True)
class Step:
    at: float
    node: str
    signal: str | None = None
    restart: bool = False
    link: str | None = None
    heal: bool = False
    seconds: float | None = None
    wait: bool = False  # a restart that later steps wait for
    direction: Direction = Direction.BOTH  # a cut's: which way traffic is lost

    def describe(self) -> str:
        waits = " (the plan waits for it)" if self.wait else ""
        if self.signal:
            return f"signal {self.signal} to {self.node}{waits}"
        if self.restart:
            return f"restart {self.node}{waits}"
        verb = "heal" if self.heal else "cut"
        if self.direction is not Direction.BOTH:
            verb += f" ({self.direction.value} only)"
        extra = f" for {self.seconds:g}s" if self.seconds else ""
        return f"{verb} {self.link} link at {self.node}{extra}{waits}"


def _number(v: object, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        raise ConfigError(f"{where} must be a non-negative number, got {v!r}")
    return float(v)


def parse_step(raw: object, i: int, nodes: tuple[str, ...]) -> Step:
    where = f"step {i + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    keys = ("at", "node", "signal", "restart", "link", "heal", "for", "wait", "direction")
    check_keys(f"{where}:", raw, keys)
    node = raw.get("node")
    if node not in nodes and node not in ROLE_ALIASES:
        raise ConfigError(
            f"{where}: node must be one of {', '.join((*nodes, *ROLE_ALIASES))}, got {node!r}"
        )
    kinds = [k for k in ("signal", "restart", "link") if k in raw]
    if len(kinds) != 1:
        raise ConfigError(f"{where} needs exactly one of signal, restart, link")
    signal = raw.get("signal")
    if signal is not None and signal not in SIGNALS:
        raise ConfigError(f"{where}: signal must be one of {', '.join(SIGNALS)}, got {signal!r}")
    restart = raw.get("restart", False)
    if not isinstance(restart, bool):
        raise ConfigError(f"{where}: restart must be true or false")
    link = raw.get("link")
    if link is not None and link not in LINK_NAMES:
        raise ConfigError(f"{where}: link must be one of {', '.join(LINK_NAMES)}, got {link!r}")
    heal = raw.get("heal", False)
    if not isinstance(heal, bool) or (heal and link is None):
        raise ConfigError(f"{where}: heal is true or false, and only for a link")
    wait = raw.get("wait", False)
    if not isinstance(wait, bool) or (wait and not restart):
        raise ConfigError(f"{where}: wait is true or false, and only for a restart")
    try:
        direction = Direction.parse(raw.get("direction", Direction.BOTH.value))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if "direction" in raw and (link is None or heal):
        raise ConfigError(f"{where}: 'direction' only goes with a link cut")
    seconds = raw.get("for")
    if seconds is not None:
        if link is None or heal:
            raise ConfigError(f"{where}: 'for' only goes with a link cut")
        seconds = _number(seconds, f"{where} for")
        if seconds == 0:
            raise ConfigError(f"{where}: 'for' must be positive")
    return Step(
        at=_number(raw.get("at", 0), f"{where} at"),
        node=str(node),
        signal=signal,
        restart=restart,
        link=link,
        heal=heal,
        seconds=seconds,
        wait=wait,
        direction=direction,
    )


def parse_plan(text: str, nodes: tuple[str, ...], source: str = "plan") -> list[Step]:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    steps = raw.get("step")
    if set(raw) - {"step"}:
        raise ConfigError(f"{source}: only [[step]] tables are allowed")
    if not isinstance(steps, list) or not steps:
        raise ConfigError(f"{source}: no [[step]] in the plan")
    parsed = [parse_step(s, i, nodes) for i, s in enumerate(steps)]
    return sorted(parsed, key=lambda s: s.at)  # stable: equal times keep file order


def load_plan(path: Path, nodes: tuple[str, ...]) -> list[Step]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read plan {path}: {exc.strerror}") from None
    return parse_plan(text, nodes, str(path))


POLL = 0.05  # seconds between looks at finished restarts while waiting for the next step


@dataclass(slots=True)
class _Started:
    step: Step
    began: float  # seconds after the plan's start
    future: Future[str]


def run_plan(
    steps: list[Step],
    do: Callable[[Step], str],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    report: Callable[[float, Step, str], Any],
    pool: Executor | None = None,
) -> int:
    """Run the steps in order, each at its offset; restarts without `wait` on
    `pool` (by default a thread each), the rest here. `do` carries a step out
    and returns a result line; `report(began, step, result)` runs on the
    caller's thread as each step finishes, `began` being when it started
    (seconds from the plan's start). Returns how many steps failed."""
    own = pool is None
    runner: Executor = pool or ThreadPoolExecutor(max(1, len(steps)), "plan-restart")
    start = clock()
    running: list[_Started] = []
    failed = 0

    def finish(began: float, step: Step, outcome: Callable[[], str]) -> None:
        nonlocal failed
        try:
            result = outcome()
        except ZmqfailError as exc:
            # Go on: a later step may be the one that undoes an earlier fault
            # (CONT after STOP, heal after cut); stopping here would leave it.
            failed += 1
            result = f"FAILED: {exc}"
        report(began, step, result)

    def collect() -> None:
        for r in [r for r in running if r.future.done()]:
            running.remove(r)
            finish(r.began, r.step, r.future.result)

    try:
        for step in steps:
            while (due := start + step.at - clock()) > 0:
                collect()
                sleep(min(POLL, due))
            collect()
            began = clock() - start
            if step.restart and not step.wait:
                running.append(_Started(step, began, runner.submit(do, step)))
            else:
                finish(began, step, functools.partial(do, step))
        while running:
            collect()
            if running:
                sleep(POLL)
    finally:
        if own:
            runner.shutdown(wait=True)
    return failed
