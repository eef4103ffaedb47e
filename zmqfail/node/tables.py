"""Loading a node's tables from its data directory, robust to a log whose
records do not apply.

Recovery (``txlog.recovery``) guarantees the log is intact, not that it is
one history: a log that mixes two servers' records at the same LSNs (the
audit's power-loss case, before terms existed) replays into a record that
does not apply (an order that is not on the book). A node must not die on
that at every start. It keeps the records from the first one that fails
aside in quarantine, rebuilds its tables from what is left, and may not lead
until it has followed a primary again (its caller clears ``may_lead``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from zmqfail.config import ClusterConfig
from zmqfail.core.ports import Loaded
from zmqfail.core.replay import replay
from zmqfail.errors import ProtocolError
from zmqfail.txlog.recovery import recover
from zmqfail.txlog.truncate import Cut, truncate_after

log = logging.getLogger("zmqfail.node")

MAX_ATTEMPTS = 3


def load(cfg: ClusterConfig, data_dir: Path, name: str, meta: dict[str, Any]) -> Loaded:
    cuts: list[Cut] = []
    for _ in range(MAX_ATTEMPTS):
        loaded = _try_load(cfg, data_dir, name, meta)
        if isinstance(loaded, Loaded):
            loaded.cuts = cuts
            return loaded
        lsn, exc = loaded
        cut = truncate_after(data_dir, lsn - 1, reason="does-not-apply")
        cuts.append(cut)
        log.critical(
            "%s: record %d of the log does not apply to the tables (%s: %s): the log mixes "
            "two histories. %d record(s) from lsn %d moved to %s; this server will follow "
            "its peer and may not lead until then",
            name,
            lsn,
            type(exc).__name__,
            exc,
            cut.records,
            lsn,
            cut.quarantine,
        )
    raise ProtocolError(f"{data_dir}: the log does not replay after {MAX_ATTEMPTS} cuts")


def _try_load(
    cfg: ClusterConfig, data_dir: Path, name: str, meta: dict[str, Any]
) -> Loaded | tuple[int, Exception]:
    rec = recover(data_dir)
    snap = rec.snapshot
    got = replay(
        cfg,
        name,
        rec.epoch,
        (snap.lsn, snap.epoch, snap.state) if snap is not None else None,
        rec.records,
        rec.last_lsn,
        meta,
    )
    if isinstance(got, Loaded):
        got.torn_bytes = rec.truncated_bytes
    return got
