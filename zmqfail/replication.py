"""The primary's replication agent, as pure logic (method 250a, per backup).

For every backup the primary keeps: the highest LSN the backup confirmed it
holds (``held``), how far it has pushed records on the link in use
(``sent``), and for each link (main, failsafe) the commit request in flight.
The node calls ``pump`` after each round of work and ``on_ack`` when an
answer arrives; both return actions for the I/O shell to carry out. Nothing
here reads a clock or touches a socket, so link failures, lost acks and
catch-up are tested with a fake clock.

Rules:
- Records go out on the link in use; the commit request asks "do you hold
  everything up to ``sent``?". Only one request per link is in flight (REQ).
- An answer that does not come within ``ack_timeout`` marks that link down:
  its REQ is reset (closed and reopened: a REQ is stuck after a lost reply),
  replication moves to the other link and everything after ``held`` is pushed
  again. The backup ignores what it already holds, so nothing is lost or
  repeated.
- While on failsafe, main is probed with empty commit requests; when main
  answers again, replication moves back.
- A backup counts toward the commit point once it is close (``in_sync``,
  within ``in_sync_lag`` records): from then on nothing is acknowledged
  without it. It is a **full copy** (``full_copies``: named in heartbeats, may
  take over) only once it also holds everything acknowledged before it
  counted; until then the primary still acknowledges as if alone, after its
  own flush and the backup's ack both.
- Every admission and every drop of a backup opens a new **generation** of
  it (one counter per primary term), named in the heartbeat with the
  backup's incarnation. A drop is final only once the backup said it holds
  itself to that generation (it no longer counts itself in sync: `confirm`),
  once it is judged gone, or once a new incarnation of it answers; until
  then it is **leaving**: the commit point still waits for what it holds,
  so nothing is acknowledged that a backup still believing itself in sync
  (from a heartbeat sent before the drop, say) would lack if it took over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LINKS = ("main", "failsafe")
# An incarnation is a process's random nonce above RENEWAL_BITS bits that
# count its renewals (a stall, a snapshot installed, a cut log): two of one
# process are ordered, two of different processes are not. 32 bits: a
# process never runs out of renewals (the third review showed a wrap to a
# new nonce read as another process).
RENEWAL_BITS = 32
MAX_RETIRED = 64  # process nonces remembered per backup


def same_process(a: int, b: int) -> bool:
    return a >> RENEWAL_BITS == b >> RENEWAL_BITS


def later_renewal(a: int, b: int) -> bool:
    """Whether incarnation `a` is a later renewal of the process `b` is of."""
    return same_process(a, b) and a > b


@dataclass(frozen=True, slots=True)
class Push:
    peer: str
    link: str
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Commit:
    peer: str
    link: str
    lsn: int


@dataclass(frozen=True, slots=True)
class ResetLink:
    """Close and reopen the peer's REQ (and PUSH) on this link."""

    peer: str
    link: str


@dataclass(frozen=True, slots=True)
class SendSnapshot:
    """The backup needs records the primary no longer keeps in RAM."""

    peer: str
    link: str


Action = Push | Commit | ResetLink | SendSnapshot


@dataclass(slots=True)
class LinkState:
    up: bool = True
    inflight_lsn: int | None = None
    inflight_since: float = 0.0
    last_answer: float = 0.0


@dataclass(slots=True)
class PeerState:
    name: str
    held: int = 0
    sent: int = 0
    link: str = "main"
    in_sync: bool = False
    heard: bool = False
    snapshot_pending: bool = False
    last_answer: float = 0.0
    incarnation: int = 0  # the backup process's id, from its acks
    diverged: bool = False  # holds records we never had: needs a snapshot
    snapshot_floor: int = 0  # LSN of a snapshot sent and not yet confirmed
    must_hold: int = 0  # acknowledged before it counted: a full copy holds this
    gen: int = 0  # generation of its last admission or drop (0: neither yet)
    leaving: bool = False  # dropped, and may not know it yet: the commit point waits
    # Process nonces of incarnations it had before its current one: their
    # answers, late on a slowed link, are not a new restart (fourth review).
    retired: set[int] = field(default_factory=set)
    links: dict[str, LinkState] = field(default_factory=lambda: {n: LinkState() for n in LINKS})


@dataclass(slots=True)
class ReplicationTracker:
    peers: dict[str, PeerState]
    ack_timeout: float = 0.1
    keepalive: float = 0.05
    max_push: int = 500
    # Records pushed beyond what a backup confirmed, at most: a backup
    # catching up is fed about as fast as it holds them instead of being
    # handed the whole backlog at once (its queue, its I/O thread and a link
    # reset all grew with it). At 20,000, a link slowed to 300 ms still
    # carries 66,000 records a second.
    max_ahead: int = 20_000
    in_sync_lag: int = 500
    epoch: int = 0  # the primary's epoch ...
    epoch_start: int = 0  # ... and the LSN it began at: records after it carry `epoch`
    gen: int = 0  # the last generation opened (admissions and drops of any backup)

    @classmethod
    def for_peers(cls, names: list[str], **kw: float | int) -> ReplicationTracker:
        return cls({n: PeerState(n) for n in names}, **kw)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ events
    def on_ack(
        self,
        peer: str,
        link: str,
        held: int,
        gap: bool,
        now: float,
        waiting: bool = False,
        incarnation: int = 0,
        last_epoch: int | None = None,
    ) -> None:
        p = self.peers[peer]
        ls = p.links[link]
        ls.inflight_lsn = None
        ls.up = True
        ls.last_answer = now
        p.last_answer = now
        if p.incarnation and later_renewal(p.incarnation, incarnation):
            # Sent by this process before its latest renewal, late on the
            # other link: nothing new, and no restart.
            return
        if incarnation >> RENEWAL_BITS in p.retired:
            # Sent by a process before the current one (it crashed, another
            # started), late on a slowed link: taken for a restart holding
            # less, it dropped the backup at once and the primary
            # acknowledged alone what the current process lacked.
            return
        restarted = incarnation != p.incarnation
        if restarted and p.incarnation and not same_process(incarnation, p.incarnation):
            if len(p.retired) >= MAX_RETIRED:
                p.retired.clear()  # a restart loop: forget the oldest nonces
            p.retired.add(p.incarnation >> RENEWAL_BITS)
        if restarted and p.leaving and p.incarnation:
            # The process we dropped is gone: no later incarnation takes a
            # listing of it as its own.
            p.leaving = False
        if waiting:
            # Alive, but not following us yet: its held LSN means nothing to us.
            # (A new process: the one we counted is gone, the drop is final.)
            p.heard = False
            self._drop(p, confirmed=restarted and p.incarnation != 0)
            return
        p.heard = True
        if last_epoch is not None and last_epoch < self.epoch and held > self.epoch_start:
            # It holds older-epoch records past the point our epoch began: records
            # the old primary never got acknowledged, and we never had. Replace
            # its state with ours.
            p.incarnation = incarnation
            self._drop(p)
            p.diverged = True
            return
        p.incarnation = incarnation
        if held < p.held and not restarted:
            # Within one incarnation `held` only grows: this is an older answer
            # that came late on the other link. Nothing new.
            return
        if held < p.held:
            # A new incarnation holding less than the old one confirmed: it
            # restarted and lost its RAM log. It is syncing again and no longer
            # counts for commits.
            p.held = held
            p.sent = held
            self._drop(p, confirmed=True)
        elif held > p.held:
            p.held = held
        p.snapshot_floor = 0 if held >= p.snapshot_floor or gap else p.snapshot_floor
        if gap or p.sent < p.held:
            # A gap means records were lost in transit: push again from what it holds.
            p.sent = p.held
        if link == "main" and p.link != "main":
            p.link = "main"  # main is back: move replication home
            p.sent = p.held

    def on_snapshot_sent(self, peer: str, lsn: int) -> None:
        p = self.peers[peer]
        p.snapshot_pending = False
        p.diverged = False
        p.sent = lsn
        p.snapshot_floor = lsn

    def mark_lost(self, peer: str, gone: bool = False) -> None:
        """The failover agent stops counting this backup: at once if it is
        `gone` (judged so on every path, or it said goodbye), else once it
        confirms the drop (it may still believe itself in sync)."""
        p = self.peers[peer]
        self._drop(p, confirmed=gone)
        p.heard = False
        p.sent = p.held

    def _drop(self, p: PeerState, confirmed: bool = False) -> None:
        if p.in_sync:
            self.gen += 1
            p.gen = self.gen
            # Leaving only if it was a full copy under this admission: else
            # no heartbeat ever listed it in sync at this generation, and
            # older listings it holds itself past (it confirmed those drops,
            # or is another incarnation since).
            p.leaving = not confirmed and p.held >= p.must_hold
        elif confirmed:
            p.leaving = False
        p.in_sync = False
        p.must_hold = 0

    def renewed(self, peer: str, incarnation: int) -> bool:
        """`peer`'s heartbeat names `incarnation`: if it is leaving and that is
        a later renewal of the process we dropped, it takes no listing of the
        one we dropped, and the drop is final. Another process's proves
        nothing: the last heartbeat we hold may be older than the commit
        answers that told us the incarnation we dropped (a restarted backup
        whose answers came and heartbeats did not: the third review's loss);
        a new process's own commit answers end the wait (`on_ack`). True if
        this ended it."""
        p = self.peers.get(peer)
        if p is None or not p.leaving or not later_renewal(incarnation, p.incarnation):
            return False
        p.leaving = False
        return True

    def confirm(self, peer: str, gen: int) -> bool:
        """`peer` says it holds itself to generation `gen`: a drop at or below
        it is final. True if this ended its leaving."""
        p = self.peers.get(peer)
        if p is None or not p.leaving or gen < p.gen:
            return False
        p.leaving = False
        return True

    def admitted(self) -> list[tuple[str, int, int]]:
        """(backup, incarnation, generation) of every backup admitted or dropped
        in this term: what the heartbeat lists."""
        return [(p.name, p.incarnation, p.gen) for p in self.peers.values() if p.gen]

    def leaving(self) -> list[str]:
        return [p.name for p in self.peers.values() if p.leaving]

    # -------------------------------------------------------------------- pump
    def pump(
        self, now: float, last_lsn: int, first_kept: int, committed_lsn: int = 0
    ) -> list[Action]:
        """What to send now, given the primary's last LSN, the oldest LSN still
        in RAM, and the highest LSN acknowledged so far."""
        out: list[Action] = []
        for p in self.peers.values():
            self._timeouts(p, now, out)
            if not p.in_sync and p.held >= last_lsn - self.in_sync_lag and p.heard:
                p.in_sync = True
                p.leaving = False  # counted again: the commit point waits for it anyway
                p.must_hold = committed_lsn
                self.gen += 1
                p.gen = self.gen
            cur = p.links[p.link]
            if p.diverged and cur.up and not p.snapshot_pending:
                p.snapshot_pending = True
                out.append(SendSnapshot(p.name, p.link))
            elif p.heard and p.sent < last_lsn and cur.up and not p.diverged:
                if p.sent + 1 < first_kept:
                    if not p.snapshot_pending:
                        p.snapshot_pending = True
                        out.append(SendSnapshot(p.name, p.link))
                else:
                    last = min(last_lsn, p.sent + self.max_push, p.held + self.max_ahead)
                    if last > p.sent:
                        out.append(Push(p.name, p.link, p.sent + 1, last))
                        p.sent = last
            for name, ls in p.links.items():
                if ls.inflight_lsn is not None:
                    continue
                carrying = name == p.link
                want = p.sent if carrying else p.held
                due = (carrying and p.held < p.sent) or now - ls.last_answer >= self.keepalive
                if due:
                    ls.inflight_lsn = want
                    ls.inflight_since = now
                    out.append(Commit(p.name, name, want))
        return out

    def _timeouts(self, p: PeerState, now: float, out: list[Action]) -> None:
        for name, ls in p.links.items():
            if ls.inflight_lsn is not None and now - ls.inflight_since >= self.ack_timeout:
                ls.inflight_lsn = None
                ls.up = False
                ls.last_answer = now  # retry after a keepalive period, not at once
                out.append(ResetLink(p.name, name))
                if name == p.link:
                    other = LINKS[1] if name == LINKS[0] else LINKS[0]
                    p.link = other
                    # A backup installing a snapshot answers nothing for a while:
                    # go on from the snapshot, not from before it (a lost snapshot
                    # shows up as a gap answer and is sent again).
                    p.sent = max(p.held, p.snapshot_floor)

    # ------------------------------------------------------------------ queries
    def commit_point(self) -> int | None:
        """Highest LSN every in-sync or leaving backup holds; None when there
        is none (the primary acknowledges alone)."""
        helds = [p.held for p in self.peers.values() if p.in_sync or p.leaving]
        return min(helds) if helds else None

    def in_sync(self) -> list[str]:
        """Backups the commit point waits for."""
        return [p.name for p in self.peers.values() if p.in_sync]

    def full_copies(self) -> list[str]:
        """Backups holding every acknowledged record: in sync, and past what was
        acknowledged before they counted. Only these may take over."""
        return [p.name for p in self.peers.values() if p.in_sync and p.held >= p.must_hold]

    def silent_for(self, peer: str, now: float) -> float:
        return now - self.peers[peer].last_answer

    def lag(self, last_lsn: int) -> int | None:
        """Records the furthest-behind backup still lacks; None if none was heard."""
        helds = [p.held for p in self.peers.values() if p.heard]
        return last_lsn - min(helds) if helds else None

    def carrying_link(self) -> str | None:
        for p in self.peers.values():
            if p.heard:
                return p.link
        return None
