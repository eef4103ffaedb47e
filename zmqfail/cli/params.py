"""Parameter types for numbers a person types, and a command class that lets
them be negative.

Click reads a word like `-5` as an option and answers "No such option: -5",
which tells a person who typed a negative quantity nothing useful. Commands
built on `NumberArgs` hand such words to their parameter types instead, which
refuse them (and numbers too large for the wire, which would otherwise end in
an encoder's OverflowError) with one line that says what is allowed.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import click

from zmqfail.apps.orders.prices import PriceCodec

# A Unicode minus sign: click takes a word starting with it for a plain
# argument; the types below read it back as "-".
_MINUS = "\u2212"
_NEGATIVE = re.compile(r"^-(\d+(\.\d*)?|\.\d+)$")
MAX_ID = 2**63 - 1  # order ids and msg_ids travel as 64-bit integers
_ANY_PRICE = PriceCodec(8)  # the most decimals any cluster allows; the server checks its own


if TYPE_CHECKING:  # click's ParamType is generic only from 8.2 on; 8.1 is supported
    _IntParam = click.ParamType[int]
    _StrParam = click.ParamType[str]
    _FloatParam = click.ParamType[float]
else:
    _IntParam = _StrParam = _FloatParam = click.ParamType


def _plain(value: str) -> str:
    return value.replace(_MINUS, "-")


class NumberArgs(click.Command):
    """A command whose arguments may be negative numbers (to be refused by their type)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # An option that takes a value consumes the next word whatever it looks
        # like; only the other words need the rewrite.
        takes_value = {
            name
            for p in self.params
            if isinstance(p, click.Option) and not p.is_flag and not p.count
            for name in p.opts
        }
        out: list[str] = []
        for i, a in enumerate(args):
            prev = args[i - 1] if i else ""
            out.append(_MINUS + a[1:] if _NEGATIVE.match(a) and prev not in takes_value else a)
        return super().parse_args(ctx, out)


class WholeNumber(_IntParam):
    """An integer within [lo, hi], read from what a person typed."""

    name = "integer"

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            n = value
        else:
            text = _plain(str(value))
            try:
                n = int(text)
            except ValueError:
                self.fail(f"{text!r} is not a whole number", param, ctx)
        if not self.lo <= n <= self.hi:
            shown = str(n) if len(str(n)) <= 24 else f"{str(n)[:20]}... ({len(str(n))} digits)"
            self.fail(f"must be within {self.lo}..{self.hi}, got {shown}", param, ctx)
        return n


class Price(_StrParam):
    """A positive decimal price as the engine reads it (no sign, no exponent)."""

    name = "price"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = _plain(str(value))
        if _ANY_PRICE.parse(text) is None:
            self.fail(f"must be a positive decimal like 10.50, got {text!r}", param, ctx)
        return text


class Number(_FloatParam):
    """A finite number within [lo, hi] (seconds, a rate): nan, inf and 1e400
    are refused here, not by a sleep or a timestamp deep inside the command."""

    name = "number"

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        text = _plain(str(value))
        try:
            x = float(value) if isinstance(value, int | float) else float(text)
        except ValueError:
            self.fail(f"{text!r} is not a number", param, ctx)
        if not (math.isfinite(x) and self.lo <= x <= self.hi):
            self.fail(f"must be within {self.lo:g}..{self.hi:g}, got {text}", param, ctx)
        return x
