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

The executor takes its clock and sleep as arguments, so tests run a plan in
no time and the CLI runs it for real.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zmqfail.errors import ConfigError, ZmqfailError
from zmqfail.replication import LINKS

SIGNALS = ("KILL", "TERM", "STOP", "CONT")
LINK_NAMES = (*LINKS, "clients")  # every channel a node can be told to cut
ROLE_ALIASES = ("primary", "backup")


@dataclass(frozen=True, slots=True)
class Step:
    at: float
    node: str
    signal: str | None = None
    restart: bool = False
    link: str | None = None
    heal: bool = False
    seconds: float | None = None

    def describe(self) -> str:
        if self.signal:
            return f"signal {self.signal} to {self.node}"
        if self.restart:
            return f"restart {self.node}"
        verb = "heal" if self.heal else "cut"
        extra = f" for {self.seconds:g}s" if self.seconds else ""
        return f"{verb} {self.link} link at {self.node}{extra}"


def _number(v: object, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        raise ConfigError(f"{where} must be a non-negative number, got {v!r}")
    return float(v)


def parse_step(raw: object, i: int, nodes: tuple[str, ...]) -> Step:
    where = f"step {i + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(raw) - {"at", "node", "signal", "restart", "link", "heal", "for"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
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


def run_plan(
    steps: list[Step],
    do: Callable[[Step], str],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    report: Callable[[float, Step, str], Any],
) -> int:
    """Run each step at its offset; `do` carries it out and returns a result line.
    Returns how many steps failed."""
    start = clock()
    failed = 0
    for step in steps:
        wait = start + step.at - clock()
        if wait > 0:
            sleep(wait)
        try:
            result = do(step)
        except ZmqfailError as exc:
            # Go on: a later step may be the one that undoes an earlier fault
            # (CONT after STOP, heal after cut); stopping here would leave it.
            failed += 1
            result = f"FAILED: {exc}"
        report(clock() - start, step, result)
    return failed
