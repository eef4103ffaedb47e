"""The failover machine's vocabulary: states, roles, the events a server
observes, the actions it is told to carry out, and the state it keeps.

Plain values only; the rules that connect them are in `machine.py`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    STARTING = "starting"
    STANDBY = "standby"
    SYNCING = "syncing"
    NORMAL = "normal"
    PRIMARY_ONLY = "primary_only"
    BACKUP_ONLY = "backup_only"
    FENCED = "fenced"
    HANDOFF = "handoff"
    STOPPED = "stopped"


class Role(enum.Enum):
    PRIMARY = "primary"
    BACKUP = "backup"


ACTIVE_STATES = frozenset({State.PRIMARY_ONLY, State.BACKUP_ONLY})


class IllegalTransition(Exception):
    """The event is not allowed in this state; nothing was changed."""


# ---------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class StartupDone:
    """The startup listening window is over and no active peer was heard."""


@dataclass(frozen=True, slots=True)
class PeerActive:
    """A peer acts as primary (heartbeat role primary, active state) at epoch."""

    peer: str
    epoch: int
    in_sync: tuple[str, ...] = ()
    handoff_to: str = ""
    last_lsn: int = 0  # the primary's, as of this heartbeat
    committed_lsn: int = 0  # what it has acknowledged: an in-sync backup holds it all
    last_epoch: int = 0  # the epoch of its record at last_lsn


@dataclass(frozen=True, slots=True)
class PeerSilent:
    """A peer has been silent on every path for the dead time."""

    peer: str


@dataclass(frozen=True, slots=True)
class PrimaryGone:
    """Step 420, "ok": the primary is silent on every replication path and has
    not answered our probes over the client network for the dead time. It is
    gone (or as good as gone: a stalled process wakes to a higher epoch)."""

    peer: str


@dataclass(frozen=True, slots=True)
class PrimaryReachable:
    """Step 420, "link failure": the primary is silent on every replication
    path but answers over the client network. It runs alone and acknowledges
    what we do not hold, so we may no longer take over: flush and wait."""

    peer: str


@dataclass(frozen=True, slots=True)
class WitnessElected:
    """The witness granted us the lead at `epoch` (and stored it durably)."""

    epoch: int


@dataclass(frozen=True, slots=True)
class ClientVote:
    """A client asked this (inactive) server to serve."""


@dataclass(frozen=True, slots=True)
class BackupsInSync:
    """Primary side: the backups the replication agent now waits for."""

    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HigherEpoch:
    """A frame from a higher epoch was seen: someone else took over."""

    epoch: int
    peer: str


@dataclass(frozen=True, slots=True)
class PeerProgress:
    """A peer's log position (epoch of its last record, last LSN), whether it is
    heard now, and whether it serves, for choosing the most up-to-date server.
    Sent for every peer, whatever its role, whenever one of these changes."""

    peer: str
    epoch: int
    last_lsn: int
    live: bool
    serving: bool = False


@dataclass(frozen=True, slots=True)
class PeerCandidate:
    """A peer asks to lead at `epoch` (nobody serves, and it holds the most:
    last_epoch, last_lsn). Leading at a new epoch without a primary to take
    over from needs every peer's grant: a server that does serve, or holds
    more, never grants, so nobody leads on an old report of its peers."""

    peer: str
    epoch: int
    last_epoch: int
    last_lsn: int


@dataclass(frozen=True, slots=True)
class PeerGrant:
    """A peer grants `to` the lead at `epoch` (it does not serve, holds less)."""

    peer: str
    to: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Switchover:
    """Operator: hand the primary role to an in-sync backup (`to`; "": the
    first in name order)."""

    to: str = ""


@dataclass(frozen=True, slots=True)
class Promote:
    """Operator: take over now, for one who knows the other server is dead.
    `heard`: the peers whose heartbeats are alive now (the shell's reading);
    `force`: promote even so, or from a state that may lack acknowledged
    records (STANDBY, SYNCING, FENCED)."""

    force: bool = False
    heard: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Pause:
    """Operator: hold automatic failover (maintenance). Nothing leads at a new
    epoch on its own until Resume; a primary may still run alone."""


@dataclass(frozen=True, slots=True)
class Resume:
    """Operator: automatic failover again, judged at once on what is known."""


@dataclass(frozen=True, slots=True)
class HandoffTimeout:
    """The switchover target did not take over in time."""


@dataclass(frozen=True, slots=True)
class Unlisted:
    """Our process identity (the incarnation our commit answers and heartbeats
    carry) changed: our loop stood still (SIGSTOP, a long stall: a primary may
    have judged us gone and acknowledged alone meanwhile), or we installed a
    snapshot or cut our log. No listing of the identity before counts any
    more: a NORMAL backup is in sync again only once its primary lists the
    new one (docs/reliability.md, "In-sync generations")."""


@dataclass(frozen=True, slots=True)
class Stop:
    pass


Event = (
    StartupDone
    | PeerActive
    | PeerSilent
    | PrimaryGone
    | PrimaryReachable
    | WitnessElected
    | ClientVote
    | BackupsInSync
    | HigherEpoch
    | PeerProgress
    | PeerCandidate
    | PeerGrant
    | Switchover
    | Promote
    | Pause
    | Resume
    | HandoffTimeout
    | Unlisted
    | Stop
)


# --------------------------------------------------------------- actions
class Action(enum.Enum):
    BECOME_PRIMARY = "become_primary"  # start the replication agent, serve clients
    TAKE_OVER = "take_over"  # 425a: disable mirroring, flush, apply, epoch+1, serve
    RECOVERY_SIGNAL = "recovery_signal"  # 429: tell clients to resend
    STEP_DOWN = "step_down"  # drop held replies, stop replicating, stop serving
    FLUSH = "flush"  # flush the transaction log now
    # Mirror the primary named in the state, keeping of our log only what it
    # shares with the primary's history (the rest is moved aside, counted).
    FOLLOW = "follow"
    HANDOFF = "handoff"  # stop taking requests; let the backup catch up and take over
    STOP = "stop"


# ----------------------------------------------------------------- state
@dataclass(frozen=True, slots=True)
class FailoverState:
    name: str
    peers: tuple[str, ...]  # every other server, in the config's fixed order
    state: State = State.STARTING
    role: Role = Role.BACKUP
    epoch: int = 1
    preferred: bool = False  # may start as primary when no active peer is heard
    first: str = ""  # the configured primary: ties of (epoch, LSN) go its way
    was_active: bool = False  # it served: its log may hold records others lack
    may_lead: bool = False  # it was the last active server it knows of
    lead_alone: bool = False  # ... and ran alone then: its log holds all it acknowledged
    primary: str = ""  # the primary this backup follows
    since: float = 0.0  # when the current state was entered
    vote_at: float | None = None  # last client vote
    primary_silent: bool = False  # silent on the replication paths
    primary_gone: bool = False  # ... and on the client network (step 420)
    in_sync: tuple[str, ...] = ()  # primary: backups it waits for
    progress: tuple[tuple[str, int, int, bool, bool], ...] = ()  # peer, epoch, lsn, live, serving
    last_lsn: int = 0  # ours, updated by the shell before each step ...
    last_epoch: int = 0  # ... with the epoch of the record at last_lsn
    handoff_to: str = ""
    vote_window: float = 1.0
    candidate: int = 0  # the epoch we ask to lead at (0: we do not ask)
    grants: tuple[str, ...] = ()  # peers that granted it
    granted: tuple[str, int] = ("", 0)  # whom we granted the lead, at which epoch
    witness: bool = False  # a witness is configured: every new epoch is its grant
    asking: int = 0  # the epoch we ask the witness to lead at (0: we do not ask)
    elected: int = 0  # the epoch the witness granted us
    paused: bool = False  # operator: no automatic leadership at a new epoch
    promoting: int = 0  # the epoch an operator's promote asks the witness for

    @property
    def active(self) -> bool:
        return self.role is Role.PRIMARY and self.state in (
            State.NORMAL,
            State.PRIMARY_ONLY,
            State.BACKUP_ONLY,
        )


def initial(
    name: str,
    peers: tuple[str, ...],
    epoch: int,
    preferred: bool,
    was_active: bool,
    now: float,
    vote_window: float = 1.0,
    may_lead: bool = False,
    lead_alone: bool = False,
    witness: bool = False,
    paused: bool = False,
    first: str = "",
) -> FailoverState:
    return FailoverState(
        name=name,
        peers=peers,
        epoch=max(1, epoch),
        last_epoch=max(1, epoch),  # the shell sets the real one before each step
        preferred=preferred,
        first=first,
        was_active=was_active or may_lead,
        may_lead=may_lead,
        lead_alone=may_lead and lead_alone,
        since=now,
        vote_window=vote_window,
        witness=witness,
        paused=paused,
    )


Result = tuple[FailoverState, list[Action]]
