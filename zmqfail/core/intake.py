"""What our peers tell us outside replication, turned into observations for
the failure detector and the failover agent: heartbeats on both links, the
goodbye of a peer that stops cleanly, and the answers to our step-420 probes.

Frames come from the network, so none is trusted: a frame that does not
decode, or that names a server that is not our peer, is counted and dropped,
never a reason to change state. What decodes goes to the `PeerTable` (a
heartbeat), the `Prober` (an answer) or, when an answer shows a newer epoch,
to the failover agent through `higher_epoch`. Nothing here reads a clock or
touches a socket: the shell passes the frames and `now`.
"""

from __future__ import annotations

from collections.abc import Callable

from zmqfail.core.peers import PeerTable, Prober
from zmqfail.errors import ProtocolError
from zmqfail.protocol import Goodbye, Heartbeat, Welcome, decode, decode_as
from zmqfail.txlog.history import EpochHistory

# Distinct heartbeat frames remembered (two links per peer, a few peers).
DECODED_KEPT = 16


class PeerIntake:
    def __init__(
        self,
        peers: PeerTable,
        prober: Prober,
        epoch: Callable[[], int],
        higher_epoch: Callable[[int, str, float], None],
        peer_gen: Callable[[str, int, int], None] = lambda _p, _e, _g: None,
    ) -> None:
        self.peers = peers
        self.prober = prober
        self._epoch = epoch  # ours now: an answer above it means someone took over
        self._higher_epoch = higher_epoch
        self._peer_gen = peer_gen  # (peer, its epoch, the generation its answer names)
        self.bad_frames = 0
        # Peers whose last word was a clean stop: read by the status, the
        # words of the leader's "running alone" line, and the leader's drop
        # of a silent backup (final at once: a stopped process believes no
        # listing of it in sync).
        self.said_bye: set[str] = set()
        # Heartbeats already decoded, by their bytes: a peer repeats the same
        # frame every interval while nothing changes (an idle pair), and the
        # decode was a good part of an idle node's work. Equal bytes decode alike;
        # both objects are never changed once made.
        self._decoded: dict[bytes, tuple[Heartbeat, EpochHistory]] = {}

    def on_heartbeats(self, link: str, frames: list[bytes], now: float) -> None:
        for data in frames:
            known = self._decoded.get(data)
            if known is not None:
                hb, history = known
            else:
                try:
                    msg = decode(data)
                    if isinstance(msg, Goodbye) and msg.name in self.peers.views:
                        self.said_bye.add(msg.name)
                        continue
                    if not isinstance(msg, Heartbeat):
                        raise ProtocolError(f"expected hb, got {msg.TYPE}")
                    history = EpochHistory.from_wire(msg.history)
                except ProtocolError:
                    self.bad_frames += 1
                    continue
                hb = msg
                if len(self._decoded) >= DECODED_KEPT:
                    self._decoded.clear()
                self._decoded[data] = (hb, history)
            if self.peers.heard(hb, history, link, now):
                self.said_bye.discard(hb.name)
            else:
                self.bad_frames += 1

    def on_ack(self, peer: str) -> None:
        """A valid commit ack from `peer`: it runs, so a goodbye it said
        before is old news (it restarted, and its acks came before its first
        heartbeat did)."""
        self.said_bye.discard(peer)

    def on_probe_reply(self, peer: str, frames: list[bytes], now: float) -> None:
        """Answers to our step-420 probes, from `peer`'s client frontend, on the
        connection we opened to it (so a stranger cannot answer for it)."""
        for data in frames:
            try:
                welcome = decode_as(data, Welcome)
            except ProtocolError:
                self.bad_frames += 1
                continue
            if welcome.server != peer:
                self.bad_frames += 1
                continue
            self.prober.answered(peer, now)
            self._peer_gen(peer, welcome.epoch, welcome.gen)
            if welcome.epoch > self._epoch():
                # Someone took over while we could not hear it on the links.
                self._higher_epoch(welcome.epoch, peer, now)
