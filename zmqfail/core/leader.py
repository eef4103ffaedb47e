"""Primary side of the replication agent: carries out ReplicationTracker's
decisions as frames in the outbox (PUSH records + REQ commit, per backup, per
link) and takes the backups' answers.

A backup that needs records the RAM log no longer holds is sent an image of
the tables, built by the disk port from a copy-on-write fork (so the loop
keeps serving and heartbeating) and pushed when it is ready.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from zmqfail.core.log import NodeLog
from zmqfail.core.peers import Verdict
from zmqfail.core.ports import Disk, Outbox, state_history
from zmqfail.errors import ProtocolError
from zmqfail.protocol import (
    AckStatus,
    CommitAck,
    CommitRequest,
    ReplRecords,
    SnapshotImage,
    decode_as,
)
from zmqfail.replication import (
    Commit,
    Push,
    ReplicationTracker,
    ResetLink,
    SendSnapshot,
)
from zmqfail.txlog.memlog import Trimmed

log = logging.getLogger("zmqfail.replication")
# Dead times a counted backup may answer no commit while its heartbeats arrive
# before we run alone: long enough that a link reset and reconnect under load
# is not mistaken for it, short enough that one-way loss is an outage of a
# second, not of the cut's whole length.
STALLED = 3


@dataclass(slots=True)
class Transfer:
    """A table image being built for one or more backups."""

    key: int
    lsn: int
    epoch: int
    history: list[list[object]]
    waiting: dict[str, str]  # peer -> link


class Leader:
    def __init__(
        self,
        name: str,
        peers: tuple[str, ...],
        nlog: NodeLog,
        out: Outbox,
        disk: Disk,
        epoch: int,
        ack_timeout: float,
        keepalive: float,
    ) -> None:
        self.name = name
        self.nlog = nlog
        self.out = out
        self.disk = disk
        self.epoch = epoch
        self.tracker = ReplicationTracker.for_peers(
            list(peers), ack_timeout=ack_timeout, keepalive=keepalive
        )
        self.tracker.epoch = epoch
        self.tracker.epoch_start = nlog.held
        self.bad_acks = 0
        self.snapshots_sent = 0
        self.link_resets = 0  # commits unanswered in time: the link was reset
        self.transfer: Transfer | None = None
        self._next_key = 1
        self._resets: dict[tuple[str, str], int] = {}  # (peer, link) -> resets in a row

    # ---------------------------------------------------------------- pump
    def pump(self, now: float) -> None:
        nlog = self.nlog
        acts = self.tracker.pump(now, nlog.held, nlog.memlog.first_lsn, nlog.committed)
        if self._resets:
            self._answered_again()
        for act in acts:
            if isinstance(act, Push):
                self._push(act)
            elif isinstance(act, Commit):
                msg = CommitRequest(self.name, self.epoch, act.lsn).encode()
                self.out.commit.append((act.peer, act.link, msg))
            elif isinstance(act, ResetLink):
                self.link_resets += 1
                self._log_reset(act.peer, act.link)
                self.out.reset.append((act.peer, act.link))
            elif isinstance(act, SendSnapshot):
                self._send_snapshot(act.peer, act.link)

    def _log_reset(self, peer: str, link: str) -> None:
        """A link to a backup that is down times out every few hundred ms; say
        so once, and once more when it answers again, not at every retry."""
        key = (peer, link)
        n = self._resets[key] = self._resets.get(key, 0) + 1
        if n == 1:
            log.info(
                "%s: %s link to %s timed out; reset, retrying quietly until it answers",
                self.name,
                link,
                peer,
            )
        else:
            log.debug("%s: %s link to %s timed out again; reset", self.name, link, peer)

    def _answered_again(self) -> None:
        for (peer, link), n in list(self._resets.items()):
            if self.tracker.peers[peer].links[link].up:
                del self._resets[(peer, link)]
                log.info(
                    "%s: %s link to %s answers again (after %d resets)", self.name, link, peer, n
                )

    def _push(self, act: Push) -> None:
        peer = self.tracker.peers[act.peer]
        try:
            records = self.nlog.memlog.get_range(act.first, act.last - act.first + 1)
        except Trimmed:
            peer.sent = peer.held
            return
        msg = ReplRecords(self.name, self.epoch, act.first, records).encode()
        self.out.push.append((act.peer, act.link, msg))

    def push_failed(self, peer: str) -> None:
        """The shell could not queue a push (peer not connected, queue full): the
        commit answer will show the gap and the records go again."""
        p = self.tracker.peers.get(peer)
        if p is not None:
            p.sent = p.held

    # ------------------------------------------------------------ snapshots
    def _send_snapshot(self, peer: str, link: str) -> None:
        if self.transfer is not None:
            self.transfer.waiting[peer] = link
            return
        nlog = self.nlog
        lsn = nlog.proc.last_lsn
        key, self._next_key = self._next_key, self._next_key + 1
        self.transfer = Transfer(
            key, lsn, self.epoch, state_history(nlog.proc.history, lsn), {peer: link}
        )
        self.disk.transfer(key, nlog.proc.snapshot)

    def on_transfer_ready(self, key: int, state: bytes | None) -> None:
        job = self.transfer
        if job is None or job.key != key:
            return
        self.transfer = None
        for peer, link in job.waiting.items():
            p = self.tracker.peers[peer]
            if not state:
                p.snapshot_pending = False  # try again
                continue
            msg = SnapshotImage(self.name, job.epoch, job.lsn, state, job.history).encode()
            self.out.push.append((peer, link, msg))
            self.snapshots_sent += 1
            self.tracker.on_snapshot_sent(peer, job.lsn)
            log.info(
                "%s: sent a snapshot at lsn %d (%d bytes) to %s over %s",
                self.name,
                job.lsn,
                len(state),
                peer,
                link,
            )

    # ----------------------------------------------------------------- acks
    def on_ack(self, peer: str, link: str, parts: list[bytes], now: float) -> CommitAck | None:
        """Take a backup's answer; returns it when it tells of a higher epoch
        (the caller steps down), else None."""
        try:
            if len(parts) != 1:
                raise ProtocolError(f"an ack is one frame, got {len(parts)}")
            ack = decode_as(parts[0], CommitAck)
            if ack.sender != peer:
                raise ProtocolError(f"an ack from {peer}'s endpoint names {ack.sender}")
        except ProtocolError:
            self.bad_acks += 1
            return None
        if ack.status is AckStatus.FENCED or ack.epoch > self.epoch:
            return ack
        self.tracker.on_ack(
            peer,
            link,
            ack.held,
            ack.status is AckStatus.GAP,
            now,
            waiting=ack.status is AckStatus.WAIT,
            incarnation=ack.incarnation,
            last_epoch=ack.last_epoch,
        )
        return None

    # -------------------------------------------------------------- queries
    def commit_point(self) -> int | None:
        return self.tracker.commit_point()

    def full_copies(self) -> tuple[str, ...]:
        return tuple(self.tracker.full_copies())

    def mark_lost_silent(
        self,
        now: float,
        dead_after: float,
        hb_age: dict[str, float],
        verdict: Callable[[str], Verdict | None],
        said_bye: set[str],
        unanswered: Callable[[str], bool],
    ) -> None:
        """Step 280: stop waiting for a counted backup silent on every path (no
        answer and no heartbeat for the dead time), once our probe over the
        client network had its answer or its dead time: if that backup took
        over meanwhile, the answer carries its higher epoch and we step down
        instead of acknowledging alone. `said_bye`: peers that said they
        stopped cleanly, which changes only the words of the log.

        A counted backup whose heartbeats arrive but that answers no commit
        for STALLED dead times is dropped too: what we send it is lost on the
        way (one-way loss, a half-broken cable) and nothing could be
        acknowledged until the cut heals. Its fresh heartbeats are the
        verdict: it lives, as a backup at our epoch (a higher one in them
        makes us step down first).

        A backup dropped while it may still count itself in sync (it lives:
        stalled, or answering the probe) is only *leaving*: nothing more is
        acknowledged alone until it confirms (`confirm`) or is judged gone
        here (`unanswered`: our probe had no answer for the dead time)."""
        tracker = self.tracker
        leaving = set(tracker.leaving())
        for name in [*tracker.in_sync(), *leaving]:
            silent = tracker.silent_for(name, now)
            if name in leaving:
                quiet = silent > dead_after and hb_age[name] > dead_after
                if quiet and (unanswered(name) or name in said_bye):
                    log.warning("%s: dropped backup %s is gone; running alone", self.name, name)
                    tracker.mark_lost(name, gone=True)
                continue
            if silent > STALLED * dead_after and hb_age[name] <= dead_after:
                log.warning(
                    "%s: backup %s answers no commit for %.0f ms though its heartbeats "
                    "arrive (one-way loss?); running alone once it confirms the drop",
                    self.name,
                    name,
                    silent * 1000,
                )
                tracker.mark_lost(name)
                continue
            if silent > dead_after and hb_age[name] > dead_after:
                seen = verdict(name)
                if seen is None and name not in said_bye:
                    continue
                if name in said_bye:
                    log.info("%s: backup %s stopped cleanly; running alone", self.name, name)
                elif seen is Verdict.REACHABLE:
                    log.warning(
                        "%s: backup %s silent on every link but answers on the client "
                        "network; running alone once it confirms the drop",
                        self.name,
                        name,
                    )
                else:
                    log.warning(
                        "%s: backup %s silent on every link (gone); running alone",
                        self.name,
                        name,
                    )
                tracker.mark_lost(name, gone=seen is Verdict.GONE or name in said_bye)

    def confirm(self, peer: str, gen: int) -> None:
        """`peer` holds itself to generation `gen` (its heartbeat, or its answer
        to our probe): a drop it knows of is final."""
        if self.tracker.confirm(peer, gen):
            log.info(
                "%s: dropped backup %s no longer counts itself in sync (generation %d); "
                "running alone",
                self.name,
                peer,
                gen,
            )

    def renewed(self, peer: str, incarnation: int) -> None:
        """`peer`'s heartbeat names its incarnation: another than the one we
        dropped takes no listing of that one, so the drop is final."""
        if self.tracker.renewed(peer, incarnation):
            log.info(
                "%s: dropped backup %s is another process now (restarted, resynchronised "
                "or stalled); running alone",
                self.name,
                peer,
            )

    def gen_of(self, peer: str) -> int:
        """The generation of `peer` here: what our answer to its probe carries."""
        p = self.tracker.peers.get(peer)
        return p.gen if p is not None else 0

    def lag(self) -> int | None:
        return self.tracker.lag(self.nlog.held)

    def carrying_link(self) -> str | None:
        return self.tracker.carrying_link()
