"""Prices as integer ticks, parsed and formatted by hand.

Clients send prices as decimal strings so that no float ever touches money.
Inside the engine a price is an int number of ticks (``10.50`` with two
decimals is 1050): comparing and hashing ints is what the hot path does most,
and a hand-rolled parser is several times faster than ``Decimal`` while being
stricter about what it accepts (no exponent, sign, blank, nan, ``inf``,
underscore or non-ASCII digit).
"""

from __future__ import annotations

# Bounds the integer part so that a price always fits comfortably in 64 bits.
MAX_WHOLE_DIGITS = 12
_CACHE_LIMIT = 4096


class PriceCodec:
    """Parses and formats prices for one ``price_decimals`` setting."""

    __slots__ = ("_cache", "_fmt", "_parsed", "_units", "decimals", "scale")

    def __init__(self, decimals: int) -> None:
        if not 0 <= decimals <= 8:
            raise ValueError(f"price_decimals must be within 0..8, got {decimals}")
        self.decimals = decimals
        self.scale: int = 10**decimals
        # _units[n]: ticks per unit of the n-th decimal digit's place.
        self._units: list[int] = [10 ** (decimals - n) for n in range(decimals + 1)]
        self._fmt = "{}.{:0" + str(decimals) + "d}" if decimals else "{}"
        # Formatting is pure, so memoising it cannot change any result; the
        # bound keeps memory flat whatever prices clients choose.
        self._cache: dict[int, str] = {}
        self._parsed: dict[str, int] = {}

    def parse(self, text: object) -> int | None:
        """Ticks of a strictly formatted positive price, or None if it is not one."""
        if not isinstance(text, str):
            return None
        ticks = self._parsed.get(text)
        if ticks is not None:
            return ticks
        if not text.isascii():
            return None
        whole, dot, frac = text.partition(".")
        if not whole.isdigit() or len(whole) > MAX_WHOLE_DIGITS:
            return None
        ticks = int(whole) * self.scale
        if dot:
            n = len(frac)
            if n == 0 or n > self.decimals or not frac.isdigit():
                return None
            ticks += int(frac) * self._units[n]
        if ticks <= 0:
            return None
        if len(self._parsed) < _CACHE_LIMIT:
            self._parsed[text] = ticks
        return ticks

    def format(self, ticks: int) -> str:
        """The canonical string of a price: always exactly ``decimals`` decimals."""
        s = self._cache.get(ticks)
        if s is None:
            s = self._fmt.format(*divmod(ticks, self.scale)) if self.decimals else str(ticks)
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[ticks] = s
        return s
