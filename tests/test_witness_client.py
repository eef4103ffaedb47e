"""A server's side of the witness (zmqfail/core/witness.py) on a fake clock:
what it asks and when, how long it believes a lease, and what an answer
means for the failover machine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from zmqfail import config
from zmqfail.core.witness import MARGIN, WitnessClient
from zmqfail.errors import ConfigError
from zmqfail.failover.state import (
    FailoverState,
    HigherEpoch,
    Role,
    State,
    WitnessElected,
    initial,
)
from zmqfail.protocol import WitnessAnswer, WitnessAsk, decode_as

pytestmark = pytest.mark.timeout(30)

T0 = 1000.0
LEASE = 1.0


def leader(epoch: int = 1, state: State = State.PRIMARY_ONLY) -> FailoverState:
    s = initial("a", ("b",), epoch, False, False, T0, witness=True)
    return replace(s, role=Role.PRIMARY, state=state)


def asks(out: list[bytes]) -> list[WitnessAsk]:
    return [decode_as(d, WitnessAsk) for d in out]


def answer(ask: WitnessAsk, granted: bool, epoch: int, leader: str, why: str = "") -> bytes:
    return WitnessAnswer(granted, epoch, leader, int(LEASE * 1000), ask.nonce, why).encode()


def test_a_leader_renews_every_third_of_a_lease_and_believes_it_from_its_ask() -> None:
    w = WitnessClient("a", LEASE)
    fs = leader()
    first = asks(w.tick(fs, T0))
    assert [(a.kind, a.epoch) for a in first] == [("lease", 1)]
    assert w.tick(fs, T0 + LEASE / 3 - 0.01) == []
    assert not w.valid(1, T0)
    # The answer comes late; the lease still counts from the ask, minus the margin.
    assert w.on_answer(answer(first[0], True, 1, "a"), fs, T0 + 0.2) is None
    end = T0 + LEASE * (1 - MARGIN)
    assert w.valid(1, end - 0.001) and not w.valid(1, end)
    assert not w.valid(2, T0 + 0.3)  # a lease is for one epoch
    assert len(asks(w.tick(fs, T0 + LEASE / 3))) == 1


def test_a_refused_lease_ends_it_and_a_newer_epoch_deposes() -> None:
    w = WitnessClient("a", LEASE)
    fs = leader()
    a1 = asks(w.tick(fs, T0))[0]
    w.on_answer(answer(a1, True, 1, "a"), fs, T0 + 0.01)
    a2 = asks(w.tick(fs, T0 + 0.4))[0]
    event = w.on_answer(answer(a2, False, 2, "b", "the leader is b at epoch 2"), fs, T0 + 0.41)
    assert event == HigherEpoch(2, "b")
    assert not w.valid(1, T0 + 0.42)
    assert w.refusals == 1 and "b at epoch 2" in w.last_refusal


def test_an_election_is_asked_while_the_machine_asks_and_its_grant_is_an_event() -> None:
    w = WitnessClient("b", LEASE)
    fs = replace(initial("b", ("a",), 1, False, False, T0, witness=True), state=State.NORMAL)
    assert w.tick(fs, T0) == []
    fs = replace(fs, asking=2)
    ask = asks(w.tick(fs, T0))[0]
    assert (ask.kind, ask.epoch, ask.known) == ("elect", 2, 1)
    assert w.on_answer(answer(ask, False, 1, "a", "a holds a lease"), fs, T0 + 0.01) is None
    again = asks(w.tick(fs, T0 + LEASE / 3))[0]
    assert w.on_answer(answer(again, True, 2, "b"), fs, T0 + 0.35) == WitnessElected(2)
    assert w.valid(2, T0 + 0.34 + 0.5)  # elected: the lease comes with it


def test_answers_that_match_no_ask_or_do_not_decode_change_nothing() -> None:
    w = WitnessClient("a", LEASE)
    fs = leader()
    ask = asks(w.tick(fs, T0))[0]
    stranger = WitnessAnswer(True, 1, "a", 1000, ask.nonce + 7, "").encode()
    assert w.on_answer(stranger, fs, T0 + 0.01) is None
    assert w.on_answer(b"\x93garbage", fs, T0 + 0.01) is None
    assert w.bad_frames == 1 and not w.valid(1, T0 + 0.02)
    # A grant naming someone else is no grant to us.
    assert w.on_answer(answer(ask, True, 1, "b"), fs, T0 + 0.02) is None
    assert not w.valid(1, T0 + 0.03)


def test_a_server_that_stops_leading_forgets_its_lease() -> None:
    w = WitnessClient("a", LEASE)
    fs = leader()
    ask = asks(w.tick(fs, T0))[0]
    w.on_answer(answer(ask, True, 1, "a"), fs, T0 + 0.01)
    assert w.valid(1, T0 + 0.1)
    w.tick(replace(fs, role=Role.BACKUP, state=State.FENCED), T0 + 0.2)
    assert not w.valid(1, T0 + 0.2)


def test_the_witness_table_parses_and_is_checked(tmp_path: Path) -> None:
    text = config.render(nodes=2, base_port=20000)
    cfg = config.loads(text + '\n[witness]\nendpoint = "tcp://127.0.0.1:20100"\n', tmp_path)
    assert cfg.witness is not None and cfg.witness.lease_ms == 1000
    assert cfg.witness.data_dir == tmp_path / "witness"
    for bad, says in (
        ('endpoint = "tcp://127.0.0.1:20100"\nlease_ms = 5', "lease_ms"),
        ('endpoint = "tcp://127.0.0.1:20100"\nterm = 1', "unknown key"),
        ("lease_ms = 1000", "endpoint"),
    ):
        with pytest.raises(ConfigError, match=says):
            config.loads(text + f"\n[witness]\n{bad}\n", tmp_path)
