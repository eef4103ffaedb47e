"""`[flush] durability`: the config setting, and what "disk" changes in the
pure core (fake clock, in-memory disk): the backup confirms only what it has
flushed, and the primary replies only once its own log is flushed too. The
power loss itself is in test_durability_live.py and test_sim_power_loss.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import run_zmqfail
from test_core import CFG, FollowerRig, hb, records

from zmqfail import config
from zmqfail.checkpoint import PERIODIC, SYNC
from zmqfail.config import Durability
from zmqfail.core.checkpoint import CheckpointAgent
from zmqfail.core.log import NodeLog
from zmqfail.errors import ConfigError
from zmqfail.processor import Processor
from zmqfail.protocol import AckStatus, CommitRequest
from zmqfail.sim.disk import SimDisk
from zmqfail.sim.loop import Loop
from zmqfail.txlog.history import EpochHistory, Term

pytestmark = pytest.mark.timeout(60)

DISK = replace(CFG, flush=replace(CFG.flush, durability=Durability.DISK))


def with_flush(line: str) -> str:
    return config.render(nodes=2, base_port=21000).replace(
        'durability = "memory"', line.strip() or "#", 1
    )


def test_durability_defaults_to_memory_and_reads_disk() -> None:
    text = config.render(nodes=2, base_port=21000)
    assert 'durability = "memory"' in text  # config init writes the choice out
    assert config.loads(text, Path("/x")).flush.durability is Durability.MEMORY
    assert config.loads(with_flush(""), Path("/x")).flush.durability is Durability.MEMORY
    cfg = config.loads(with_flush('durability = "disk"'), Path("/x"))
    assert cfg.flush.durability is Durability.DISK
    assert cfg.flush.interval_ms == 100  # the other keys still read


@pytest.mark.parametrize("value", ['"fsync"', '"DISK"', "1", "true", '""'])
def test_a_bad_durability_is_a_clear_config_error(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.loads(with_flush(f"durability = {value}"), Path("/x"))
    assert str(info.value).startswith('[flush] durability must be "memory" or "disk", got ')


def test_config_check_says_so_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(with_flush('durability = "sync"'))
    out = run_zmqfail("config", "check", str(path))
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and 'durability must be "memory" or "disk", got \'sync\'' in lines[0]


def test_a_disk_backup_confirms_only_what_it_flushed() -> None:
    r = FollowerRig()
    r.nlog = NodeLog(Processor.create(DISK, "b", 1), 0, DISK.flush)
    r.f.nlog = r.nlog
    r.peers.heard(hb("a"), EpochHistory([Term(1, "a", 9, 1)]), "main", 0.0)
    r.f.on_records("main", [records(1, 3)], 0.0)
    r.f.on_commit("main", [CommitRequest("a", 1, 3).encode()], 0.0)
    assert r.out.answer == [] and r.nlog.held == 3
    r.f.answer_pending(5.0)  # held, not flushed: no gap, the flush is coming
    assert r.out.answer == [] and r.f.next_deadline() is None
    batch = r.nlog.flush_due(5.0)
    assert batch is not None and batch.last_lsn == 3  # every record, at once
    r.nlog.flushed_to(2, 5.0)  # (a shorter flush, as a test of the bound)
    r.f.answer_pending(5.0)
    assert r.out.answer == []
    r.nlog.flushed_to(3, 5.001)
    r.f.answer_pending(5.001)
    (ack,) = r.answers()
    assert (ack.status, ack.held, ack.last_epoch) == (AckStatus.OK, 3, 1)
    # A request for records not held at all still gets its gap, with the flushed LSN.
    r.f.on_commit("main", [CommitRequest("a", 1, 9).encode()], 6.0)
    r.f.answer_pending(6.0 + 0.02)
    (gap,) = r.answers()
    assert (gap.status, gap.held) == (AckStatus.GAP, 3)


def test_memory_mode_confirms_what_it_holds() -> None:
    r = FollowerRig()
    r.peers.heard(hb("a"), EpochHistory([Term(1, "a", 9, 1)]), "main", 0.0)
    r.f.on_records("main", [records(1, 3)], 0.0)
    r.f.on_commit("main", [CommitRequest("a", 1, 3).encode()], 0.0)
    (ack,) = r.answers()
    assert (ack.status, ack.held) == (AckStatus.OK, 3) and r.nlog.flushed == 0


@pytest.mark.parametrize(("cfg", "paired"), [(CFG, PERIODIC), (DISK, SYNC)])
def test_disk_flushes_every_group_even_paired(cfg: config.ClusterConfig, paired: str) -> None:
    nlog = NodeLog(Processor.create(cfg, "a", 1), 0, cfg.flush)
    agent = CheckpointAgent("a", nlog, SimDisk(Loop(1), cfg, "a"), lambda: False, print)
    agent.apply_mode()
    assert nlog.policy.mode == paired
