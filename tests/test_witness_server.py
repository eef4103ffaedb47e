"""The witness's shell on a thread of the test process: answers on its
ROUTER, stores an election before answering it, survives any frame, answers
status, stops on request; a store it cannot write stops it with exit 3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from witnesskit import Asker, Running, status_of

from zmqfail.config import WitnessConfig
from zmqfail.errors import WitnessError
from zmqfail.netutil import free_base_port
from zmqfail.protocol import (
    PROTOCOL_VERSION,
    ControlReply,
    ControlRequest,
    Probe,
    WitnessAnswer,
    WitnessAsk,
)
from zmqfail.witness import store as witness_store
from zmqfail.witness.logic import Granted
from zmqfail.witness.server import WitnessServer

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def wcfg(tmp_path: Path) -> WitnessConfig:
    return WitnessConfig(f"tcp://127.0.0.1:{free_base_port(1)}", tmp_path / "w", lease_ms=300)


@pytest.fixture
def running(wcfg: WitnessConfig) -> Iterator[Running]:
    r = Running(wcfg)
    try:
        yield r
    finally:
        if r.thread.is_alive():
            r.stop()


def test_elect_renew_and_refuse_over_the_socket(running: Running, wcfg: WitnessConfig) -> None:
    a, b = running.asker("a"), running.asker("b")
    got = a.elect(1, 0)
    assert got == WitnessAnswer(True, 1, "a", 300, got.nonce, "elected")
    # Stored before the answer went out: the file says so already.
    assert witness_store.decode((wcfg.data_dir / "granted.json").read_bytes(), "") == Granted(
        1, "a"
    )
    assert a.lease(1).granted and a.lease(1).lease_ms == 300
    no = b.elect(2, 1)
    assert (no.granted, no.epoch, no.leader, no.lease_ms) == (False, 1, "a", 0)
    assert "a holds a lease" in no.why
    stale = b.lease(1)
    assert not stale.granted and stale.why == "the leader is a at epoch 1"
    st = status_of(running.ctx, wcfg.endpoint)
    assert (st["epoch"], st["leader"], st["lease_holder"]) == (1, "a", "a")
    assert 0 < st["lease_left_ms"] <= 300
    assert (st["elections"], st["refusals"], st["renewals"]) == (1, 2, 2)
    assert running.stop() == 0


def test_a_refused_election_is_not_stored(running: Running, wcfg: WitnessConfig) -> None:
    a, b = running.asker("a"), running.asker("b")
    a.elect(3, 0)
    before = (wcfg.data_dir / "granted.json").read_bytes()
    assert not b.elect(3, 3).granted  # not above 3
    assert not b.elect(9, 1).granted  # b missed epoch 3
    assert (wcfg.data_dir / "granted.json").read_bytes() == before


def test_long_reasons_are_cut_to_what_the_answer_may_carry(running: Running) -> None:
    long_a, long_b = running.asker("a" * 128), running.asker("b" * 128)
    long_a.elect(1, 0)
    no = long_b.elect(2, 0)  # the reason names both 128-character servers
    assert not no.granted and len(no.why) == 200


def _bad(a: Asker, *frames: bytes) -> str:
    a.send_raw(*frames)
    rep = a.recv_msg()
    assert isinstance(rep, ControlReply) and not rep.ok
    return rep.error


def test_malformed_frames_are_counted_and_answered_and_change_nothing(
    running: Running, wcfg: WitnessConfig
) -> None:
    a = running.asker("a")
    assert a.elect(1, 0).granted
    before = status_of(running.ctx, wcfg.endpoint)
    assert "not a msgpack frame" in _bad(a, b"\xc1garbage")
    assert "frame must be an array" in _bad(a, msgpack.packb(7))
    assert "kind must be one of" in _bad(
        a, msgpack.packb([PROTOCOL_VERSION, WitnessAsk.TYPE, "b", "lead", 9, 9, 1])
    )
    assert "epoch must be a non-negative" in _bad(
        a, msgpack.packb([PROTOCOL_VERSION, WitnessAsk.TYPE, "b", "elect", -1, 0, 1])
    )
    assert "expected w_ask or ctl, got probe" in _bad(a, Probe("b").encode())
    assert "answers only 'status'" in _bad(a, ControlRequest("stop", {}).encode())
    a.send_raw(b"one", b"frame", b"too many")  # no one sure to answer: dropped
    after = status_of(running.ctx, wcfg.endpoint)
    assert after["bad_frames"] == before["bad_frames"] + 7
    assert (after["epoch"], after["leader"], after["elections"]) == (1, "a", 1)
    assert a.lease(1).granted  # and it goes on answering
    assert running.thread.is_alive()


def test_a_store_it_cannot_write_stops_it_with_exit_3_and_no_answer(
    running: Running, wcfg: WitnessConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = running.asker("a")
    assert a.elect(1, 0).granted

    def refuse(g: Granted) -> None:
        raise WitnessError("cannot write witness store X: No space left on device")

    monkeypatch.setattr(running.server.store, "save", refuse)
    with pytest.raises(TimeoutError):
        a.elect(2, 1, timeout=1.0)  # granted, but not on disk: never answered
    running.thread.join(10)
    assert running.rc == 3
    st = witness_store.decode((wcfg.data_dir / "granted.json").read_bytes(), "")
    assert st == Granted(1, "a")


def test_a_port_in_use_is_a_one_line_error(running: Running, tmp_path: Path) -> None:
    other = WitnessConfig(running.server.cfg.endpoint, tmp_path / "other", 300)
    with pytest.raises(WitnessError, match=r"cannot listen on tcp://127\.0\.0\.1:\d+: .*in use"):
        WitnessServer(other, running.ctx).open()
    # It let go of its data dir: another witness may open it at once.
    s = witness_store.Store(tmp_path / "other")
    s.open()
    s.close()


def test_a_second_witness_on_the_same_dir_is_refused(running: Running, wcfg: WitnessConfig) -> None:
    with pytest.raises(WitnessError, match="in use by another witness"):
        WitnessServer(wcfg, running.ctx).open()
    assert running.asker("a").elect(1, 0).granted


def test_an_election_asked_again_is_answered_again_without_a_write(
    running: Running, monkeypatch: pytest.MonkeyPatch, wcfg: WitnessConfig
) -> None:
    a = running.asker("a")
    assert a.elect(1, 0).granted

    def no_write(g: Granted) -> None:
        raise AssertionError(f"stored {g} again")

    monkeypatch.setattr(running.server.store, "save", no_write)
    again = a.elect(1, 0)  # its first answer was lost, say
    assert (again.granted, again.epoch, again.leader, again.why) == (
        True,
        1,
        "a",
        "elected (again)",
    )
    st = status_of(running.ctx, wcfg.endpoint)
    assert (st["elections"], st["lease_holder"]) == (1, "a")
    assert running.thread.is_alive()
