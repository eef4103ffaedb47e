"""etcd as the witness, without etcd: the plan (etcdplan.py) and the shell's
decision loop (witness/etcd.py `carry_out`, `EtcdKeys`) against an in-memory
etcd speaking the gateway's JSON (etcdfake.py), on the test's clock. The
same rules as the built-in witness: an epoch granted once, to one server,
only above every granted one and only to a server that knows the latest; a
lease only to the leader of the latest epoch; none while another holds one.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import zmq
from conftest import wait_for
from etcdfake import FakeEtcd

from zmqfail.config import ClusterConfig, loads
from zmqfail.configtext import render
from zmqfail.errors import ConfigError
from zmqfail.protocol import WitnessAnswer, WitnessAsk, WitnessKind, decode_as
from zmqfail.witness import etcdplan
from zmqfail.witness.etcd import EtcdKeys, EtcdWitness, carry_out, group_base
from zmqfail.witness.etcdplan import Answer, KeepAlive, Seen, Write, plan
from zmqfail.witness.logic import Granted

LEASE_MS = 2000
TTL = 2
ELECT, LEASE = WitnessKind.ELECT, WitnessKind.LEASE


def ask(kind: WitnessKind, server: str, epoch: int, known: int, nonce: int = 1) -> WitnessAsk:
    return WitnessAsk(server, kind.value, epoch, known, nonce)


class Group:
    """One failover group's keys in a fake etcd, asked as the node would."""

    def __init__(self) -> None:
        self.etcd = FakeEtcd()
        self.keys = EtcdKeys([self.etcd], "zmqfail/t")

    def ask(self, kind: WitnessKind, server: str, epoch: int, known: int) -> WitnessAnswer | None:
        out = carry_out(ask(kind, server, epoch, known, 9).encode(), self.keys, TTL, LEASE_MS)
        if out is None:
            return None
        ans = decode_as(out, WitnessAnswer)
        assert ans.nonce == 9
        return ans

    def granted(self, kind: WitnessKind, server: str, epoch: int, known: int) -> bool:
        ans = self.ask(kind, server, epoch, known)
        assert ans is not None, "no answer"
        return ans.granted


# ------------------------------------------------------------------ the plan
G1 = Seen(Granted(1, "a"), 5, "a", 77, 5)  # a leads at 1 and holds a lease
G1_EXPIRED = Seen(Granted(1, "a"), 5)  # a leads at 1, its lease ran out


@pytest.mark.parametrize(
    ("seen", "the_ask", "kind", "granted", "why"),
    [
        (Seen(Granted()), ask(ELECT, "a", 1, 0), Write, True, "elected"),
        (G1, ask(ELECT, "b", 2, 1), Answer, False, "a holds a lease"),
        (G1_EXPIRED, ask(ELECT, "b", 2, 1), Write, True, "elected"),
        (G1_EXPIRED, ask(ELECT, "b", 1, 1), Answer, False, "epoch 1 is not above 1"),
        (G1_EXPIRED, ask(ELECT, "b", 3, 0), Answer, False, "b knows epoch 0 only"),
        (G1, ask(ELECT, "a", 1, 0), KeepAlive, True, "elected (again)"),
        (G1_EXPIRED, ask(ELECT, "a", 1, 0), Write, True, "elected (again)"),
        (G1, ask(ELECT, "a", 2, 1), Write, True, "elected"),  # the holder moves on
        (G1, ask(LEASE, "a", 1, 1), KeepAlive, True, "lease renewed"),
        (G1_EXPIRED, ask(LEASE, "a", 1, 1), Write, True, "lease renewed"),
        (G1, ask(LEASE, "b", 1, 1), Answer, False, "the leader is a at epoch 1"),
        (G1, ask(LEASE, "a", 2, 2), Answer, False, "the leader is a at epoch 1"),
        (Seen(Granted(1, "a"), 5, "b", 3, 6), ask(LEASE, "a", 1, 1), Answer, False, "b holds"),
    ],
)
def test_the_plan_applies_the_witness_rules(
    seen: Seen, the_ask: WitnessAsk, kind: type, granted: bool, why: str
) -> None:
    step = plan(the_ask, seen)
    assert isinstance(step, kind), step
    assert step.verdict.granted is granted and why in step.verdict.why, step.verdict
    if not granted:  # a refusal names the latest epoch and leader
        assert (step.verdict.epoch, step.verdict.leader) == (
            seen.granted.epoch,
            seen.granted.leader,
        )
    if isinstance(step, Write):
        new = step.granted is not None
        assert new == (why == "elected") and step.holder == the_ask.server
        assert step.guards() == (("granted", seen.granted_rev), ("lease", seen.holder_rev))
    if isinstance(step, KeepAlive):
        assert step.lease_id == seen.lease_id


# --------------------------------------------------- the loop on a fake etcd
def test_election_lease_and_takeover_once_the_lease_ends() -> None:
    g = Group()
    assert g.granted(ELECT, "a", 1, 0)
    assert "a holds a lease" in (g.ask(ELECT, "b", 2, 1) or pytest.fail()).why
    g.etcd.now += 1.5
    assert g.granted(LEASE, "a", 1, 1)  # kept alive: a full TTL from now
    g.etcd.now += 1.5
    assert not g.granted(ELECT, "b", 2, 1), "a renewed 1.5 s ago: its lease lives"
    g.etcd.now += 0.6
    assert g.granted(ELECT, "b", 2, 1)
    ans = g.ask(LEASE, "a", 1, 1)  # the replaced leader learns the newer epoch
    assert ans is not None and not ans.granted and (ans.epoch, ans.leader) == (2, "b")
    assert ans.lease_ms == 0
    ans = g.ask(LEASE, "b", 2, 2)
    assert ans is not None and ans.granted and ans.lease_ms == LEASE_MS


def test_a_stale_server_learns_the_latest_epoch_and_is_never_elected() -> None:
    g = Group()
    assert g.granted(ELECT, "a", 1, 0)
    g.etcd.now += TTL
    assert g.granted(ELECT, "b", 2, 1)
    g.etcd.now += TTL  # b's lease ended too (b died)
    ans = g.ask(ELECT, "a", 2, 1)  # a restarted knowing epoch 1 only
    assert ans is not None and not ans.granted and (ans.epoch, ans.leader) == (2, "b")
    ans = g.ask(ELECT, "a", 3, 1)
    assert ans is not None and not ans.granted and "a knows epoch 1 only" in ans.why
    assert g.granted(ELECT, "a", 3, 2), "once it knows epoch 2 it may be elected"


def test_an_answer_lost_and_asked_again_is_the_same_grant() -> None:
    g = Group()
    assert g.granted(ELECT, "a", 1, 0)
    before = g.etcd.rev
    assert g.granted(ELECT, "a", 1, 0)
    assert g.etcd.rev == before, "asked again while its lease lives: only a keep-alive"
    g.etcd.now += TTL
    assert g.granted(ELECT, "a", 1, 0)  # its lease ran out: a new one, same epoch
    assert not g.granted(ELECT, "b", 2, 1)


def race(g: Group) -> list[str]:
    """a and b read the same keys, then both try epoch 2: who was told granted."""
    g.etcd.now += TTL  # the leader's lease ran out: both may try
    seen = g.keys.read()
    steps = {s: plan(ask(ELECT, s, 2, 1), seen) for s in ("a", "b")}
    won = []
    for server, step in steps.items():
        assert isinstance(step, Write)
        if g.keys.write(step, TTL):
            won.append(server)
        else:  # the keys moved: the shell reads again, and answers that
            ans = g.ask(ELECT, server, 2, 1)
            if ans is not None and ans.granted:
                won.append(server)
    return won


def test_two_servers_racing_for_one_epoch_only_one_is_elected() -> None:
    g = Group()
    assert g.granted(ELECT, "a", 1, 0)
    assert race(g) == ["a"]
    assert g.keys.read().granted == Granted(2, "a")


def test_planted_a_transaction_without_its_guards_elects_two_servers_at_one_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(etcdplan.Write, "guards", lambda self: ())
    g = Group()
    assert g.granted(ELECT, "a", 1, 0)
    assert race(g) == ["a", "b"], "the check above must catch an epoch granted twice"


def test_unreachable_etcd_no_answer_and_the_next_member_is_tried() -> None:
    g = Group()
    g.etcd.down = True
    assert g.ask(ELECT, "a", 1, 0) is None
    spare = FakeEtcd()
    two = EtcdKeys([g.etcd, spare], "zmqfail/t")
    out = carry_out(ask(ELECT, "a", 1, 0).encode(), two, TTL, LEASE_MS)
    assert out is not None and decode_as(out, WitnessAnswer).granted
    assert spare.calls and two.clients[two._first] is spare  # the good one first next time


def test_a_damaged_granted_value_is_never_guessed_from(caplog: pytest.LogCaptureFixture) -> None:
    g = Group()
    assert g.granted(ELECT, "a", 1, 0)
    g.etcd.kvs[b"zmqfail/t/granted"].value = b'{"epoch": 0}'
    g.etcd.now += TTL
    assert g.ask(ELECT, "b", 2, 1) is None
    assert "etcd key zmqfail/t/granted: damaged witness store" in caplog.text
    assert "delete the group's keys" in caplog.text
    assert carry_out(b"not a frame", g.keys, TTL, LEASE_MS) is None


def test_random_runs_keep_one_leader_per_epoch_and_no_election_under_a_lease() -> None:
    """Asks from three servers at random times: every grant the servers are
    told of must fit what a server believes of its lease (core/witness.py
    counts it from the ask, minus 10 %)."""
    for seed in range(30):
        rng = random.Random(seed)
        g = Group()
        leader_of: dict[int, str] = {}
        believes: dict[str, tuple[int, float]] = {}  # server -> (epoch, lease valid until)
        known = dict.fromkeys("abc", 0)
        for _ in range(60):
            g.etcd.now += rng.choice((0.0, 0.3, 0.7, 1.1, 2.5))
            s = rng.choice("abc")
            if rng.random() < 0.5:
                kind, epoch = ELECT, known[s] + rng.choice((0, 1, 1, 2))
            else:
                kind, epoch = LEASE, known[s]
            ans = g.ask(kind, s, epoch, known[s])
            assert ans is not None
            known[s] = max(known[s], ans.epoch)
            if not ans.granted:
                continue
            assert leader_of.setdefault(epoch, s) == s, f"seed {seed}: epoch {epoch} twice"
            if kind is ELECT:
                others = [o for o, (_, t) in believes.items() if o != s and g.etcd.now < t]
                assert not others, f"seed {seed}: {s} elected while {others} hold a lease"
            believes[s] = (epoch, g.etcd.now + LEASE_MS / 1000 * 0.9)


# -------------------------------------------------------------------- shell
def etcd_cfg(extra: str = "") -> ClusterConfig:
    text = render(2, 7300) + '\n[witness]\netcd = "http://127.0.0.1:2379"\n' + extra
    return loads(text, Path("/tmp"))


def test_the_thread_answers_through_a_socket_the_loop_polls(
    zctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    g = Group()
    w = EtcdWitness(zctx, etcd_cfg(), g.keys)
    try:
        w.submit(ask(ELECT, "a", 1, 0, 4).encode())
        assert w.answers.poll(5000), "no answer within 5 s"
        ans = decode_as(w.answers.recv(), WitnessAnswer)
        assert ans.granted and ans.nonce == 4 and ans.lease_ms == LEASE_MS
        g.etcd.down = True  # unreachable: no answer, never an invented one
        w.submit(ask(LEASE, "a", 1, 1, 5).encode())
        wait_for(lambda: w.unanswered == 1, 5, "the ask given up")
        assert not w.answers.poll(0)
    finally:
        w.close()


def test_the_queue_is_bounded_asks_beyond_are_dropped(
    zctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    g = Group()
    w = EtcdWitness(zctx, etcd_cfg(), g.keys, start=False)
    try:
        for n in range(40):
            w.submit(ask(LEASE, "a", 1, 1, n + 1).encode())
        assert w.dropped == 40 - 16
    finally:
        w.close()


def test_config_names_etcd_and_each_shard_gets_its_own_keys() -> None:
    cfg = etcd_cfg('prefix = "venue/x"\nlease_ms = 3000\n')
    w = cfg.witness
    assert w is not None and w.etcd is not None
    assert (w.etcd.endpoints, w.etcd.prefix, w.lease_ms) == (
        ("http://127.0.0.1:2379",),
        "venue/x",
        3000,
    )
    assert group_base(cfg) == "venue/x/local"
    assert etcd_cfg().witness is not None and etcd_cfg().witness.lease_ms == 2000  # type: ignore[union-attr]


def test_each_shard_has_its_own_keys_with_etcd(tmp_path: Path) -> None:
    text = render(4, 5700).replace('primary = "a"', "")
    text += '\n[witness]\netcd = "http://127.0.0.1:2379"\n'
    text += '[shards.x]\nnodes = ["a", "b"]\nkeys = ["ABC"]\n'
    text += '[shards.y]\nnodes = ["c", "d"]\nkeys = ["DEF"]\n'
    cfg = loads(text, tmp_path)
    bases = {group_base(cfg.for_node(n)) for n in "abcd"}
    assert bases == {"zmqfail/local/x", "zmqfail/local/y"}


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ('endpoint = "tcp://127.0.0.1:7390"\n', r"unknown key\(s\) endpoint"),
        ("lease_ms = 1500\n", "lease_ms must be whole seconds with etcd, got 1500"),
        ("lease_ms = 500\n", "lease_ms must be a whole number from 1000 to 60000"),
        ('prefix = "/abs/"\n', "prefix must be letters"),
    ],
)
def test_config_errors_are_one_line(extra: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error) as e:
        etcd_cfg(extra)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ('"https://10.0.0.1:2379"', "https is not supported yet"),
        ('"127.0.0.1:2379"', "is not like http://127.0.0.1:2379"),
        ("[]", "must be a URL or a list of URLs"),
        ('["http://h:1", "http://h:1"]', "names a URL twice"),
    ],
)
def test_bad_etcd_urls_are_refused(value: str, error: str) -> None:
    text = render(2, 7300) + f"\n[witness]\netcd = {value}\n"
    with pytest.raises(ConfigError, match=error):
        loads(text, Path("/tmp"))


def test_without_etcd3gw_a_node_is_told_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "etcd3gw.client", None)
    with pytest.raises(ConfigError, match=r"needs the etcd3gw package.*zmqfail\[etcd\]"):
        EtcdKeys.connect(("http://127.0.0.1:2379",), "zmqfail/t", 0.5)


def test_the_cli_names_etcd_and_has_no_witness_process_to_run(tmp_path: Path) -> None:
    from conftest import run_zmqfail

    from zmqfail.cli.witnesscmd import witness_status, witness_words

    path = tmp_path / "etcd.toml"
    path.write_text(render(2, 7300) + '\n[witness]\netcd = ["http://127.0.0.1:2379"]\n')
    check = run_zmqfail("config", "check", str(path))
    assert check.returncode == 0 and "witness on etcd http://127.0.0.1:2379" in check.stdout
    run = run_zmqfail("witness", "--config", str(path))
    assert run.returncode == 1 and run.stderr.count("\n") == 1, run.stderr
    assert "witness is etcd http://127.0.0.1:2379: there is no zmqfail witness" in run.stderr
    w = loads(path.read_text(), tmp_path).witness
    assert w is not None
    assert "kept by etcd" in witness_words(witness_status(w, 0.1))


def test_a_secured_witness_channel_with_etcd_is_refused() -> None:
    text = render(2, 7300, secure=True).replace('"control"]', '"control", "witness"]')
    text += '\n[witness]\netcd = "http://127.0.0.1:2379"\n'
    with pytest.raises(ConfigError, match="etcd plays the witness: there is no witness socket"):
        loads(text, Path("/tmp"))
    plain = render(2, 7300, secure=True) + '\n[witness]\netcd = "http://127.0.0.1:2379"\n'
    assert loads(plain, Path("/tmp")).witness is not None


def test_a_malformed_etcd_answer_costs_that_ask_only(
    zctx: zmq.Context[zmq.Socket[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    g = Group()
    w = EtcdWitness(zctx, etcd_cfg(), g.keys)
    try:
        real = g.etcd.post
        # Empty reads, then a lease grant with no ID: a KeyError deep in the shell.
        monkeypatch.setattr(g.etcd, "post", lambda url, json: {"responses": [{}, {}]})
        w.submit(ask(ELECT, "a", 1, 0, 1).encode())
        wait_for(lambda: w.unanswered == 1, 5, "the malformed answer given up")
        monkeypatch.setattr(g.etcd, "post", real)
        w.submit(ask(ELECT, "a", 1, 0, 2).encode())
        assert w.answers.poll(5000), "the thread lives on and answers"
        assert decode_as(w.answers.recv(), WitnessAnswer).nonce == 2
    finally:
        w.close()
