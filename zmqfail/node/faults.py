"""The faults an operator can inject on one node's channels: cuts (each way
or both) and delayed replication, and when each heals by itself. Only the
bookkeeping: `node/links.py` applies them at the sockets.
"""

from __future__ import annotations

from zmqfail.chaos import LINK_NAMES, Direction
from zmqfail.errors import ProtocolError
from zmqfail.replication import LINKS


class Faults:
    """Cut and delayed channels, and when they heal by themselves.

    A cut has a direction (`Direction`): `deaf` holds the channels this node
    hears nothing on, `mute` those it sends nothing on; a cut both ways is in
    both. Reading checks `deaf`, sending checks `mute`, nothing else."""

    def __init__(self) -> None:
        self.deaf: set[str] = set()
        self.mute: set[str] = set()
        self.delays: dict[str, float] = {}  # link -> seconds its records wait
        self.heal_at: dict[str, float] = {}  # channel or "delay:link" -> when it ends

    @property
    def cut(self) -> set[str]:
        """Channels cut in either direction."""
        return self.deaf | self.mute

    def one_way(self) -> dict[str, str]:
        """Channels cut in one direction only, and which ("in" or "out")."""
        out = {lk: Direction.IN.value for lk in self.deaf - self.mute}
        return out | {lk: Direction.OUT.value for lk in self.mute - self.deaf}

    def cut_link(
        self, link: str, seconds: float | None, now: float, direction: Direction = Direction.BOTH
    ) -> None:
        """Cut `link` (a new cut replaces an earlier one's direction and end)."""
        _check_link(link)
        self.deaf.discard(link)
        self.mute.discard(link)
        if direction is not Direction.OUT:
            self.deaf.add(link)
        if direction is not Direction.IN:
            self.mute.add(link)
        if seconds is not None:
            # The node heals itself: a cut must not outlive a dead operator tool.
            self.heal_at[link] = now + seconds
        else:
            self.heal_at.pop(link, None)

    def heal(self, link: str) -> None:
        _check_link(link)
        self.deaf.discard(link)
        self.mute.discard(link)
        self.heal_at.pop(link, None)

    def delay(self, link: str, ms: float, seconds: float | None, now: float) -> None:
        if link not in LINKS:
            raise ProtocolError(f"link must be one of {', '.join(LINKS)}, got {link!r}")
        key = f"delay:{link}"
        if ms:
            self.delays[link] = ms / 1000.0
            if seconds is not None:
                self.heal_at[key] = now + seconds
        else:
            self.delays.pop(link, None)
            self.heal_at.pop(key, None)

    def due(self, now: float) -> None:
        for key, when in list(self.heal_at.items()):
            if now >= when:
                kind, _, link = key.rpartition(":")
                if kind == "delay":
                    self.delay(link, 0, None, now)
                else:
                    self.heal(link)

    def next_deadline(self) -> float | None:
        return min(self.heal_at.values()) if self.heal_at else None


def _check_link(link: str) -> None:
    if link not in LINK_NAMES:
        raise ProtocolError(f"link must be one of {', '.join(LINK_NAMES)}, got {link!r}")
