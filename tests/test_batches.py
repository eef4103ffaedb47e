"""Batches on the client channel (protocol 6, issue 10 item 1), without
sockets: the `reqs` and `reps` frames and their bounds, the server's
grouping of replies per client (with a fake clock), the client core sending
what its window lets out in one frame and resending after a failover, and the
two wired together, where every request must get exactly one record and one
reply. A planted bug (a batch whose second request is dropped) shows that
check catching it."""

from __future__ import annotations

from typing import Any

import pytest
from test_core import BUY, FrontRig
from test_protocol_limits import nested, pack

import zmqfail.core.frontend as frontend_mod
from zmqfail.client.core import ClientCore
from zmqfail.client.session import Session
from zmqfail.core.frontend import reply_chunks
from zmqfail.errors import ProtocolError
from zmqfail.protocol import (
    MAX_BATCH,
    MAX_DEPTH,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    REPLY_BATCH_BYTES,
    BadItem,
    Channel,
    Message,
    RecoverySignal,
    Register,
    Reply,
    ReplyBatch,
    Request,
    RequestBatch,
    SessionGrant,
    Welcome,
    batch_replies,
    batch_requests,
    decode,
    decode_all,
    decode_request,
    encode_batch,
    encode_reply,
    read_requests,
)
from zmqfail.protocol.codec import AnyRequest
from zmqfail.txlog.record import TxRecord

pytestmark = pytest.mark.timeout(60)

V = PROTOCOL_VERSION


def req_item(msg_id: int, body: object = None, session: int = 9) -> list[Any]:
    return [V, "req", "c-1", msg_id, BUY if body is None else body, session]


# --- the frames ----------------------------------------------------------------


def test_batches_are_spliced_from_lone_frames_and_read_back_item_by_item() -> None:
    reqs = [Request("c-1", m, {**BUY, "qty": m}, 9) for m in (1, 2, 3)]
    frame = encode_batch(RequestBatch, [r.encode() for r in reqs])
    # The splice is exactly what encoding the batch as a message gives.
    items = [[V, "req", r.client_id, r.msg_id, r.body, r.session] for r in reqs]
    assert frame == RequestBatch(items).encode()
    msg = decode_request(frame)
    assert isinstance(msg, RequestBatch) and decode(frame) == msg
    assert batch_requests(msg) == reqs
    reps = [Reply(m, "ok", {"order_id": m}, 2, "a", True) for m in (1, 2)]
    frame = encode_batch(
        ReplyBatch, [encode_reply(r.msg_id, "ok", r.result, 2, "a", True) for r in reps]
    )
    got = decode(frame)
    assert isinstance(got, ReplyBatch) and batch_replies(got) == (reps, 0)
    assert decode_all(frame) == reps


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(pack([V, "reqs", []]), id="empty"),
        pytest.param(pack([V, "reqs", "x"]), id="not-a-list"),
        pytest.param(pack([V, "reqs", {"a": 1}]), id="a-map"),
        pytest.param(pack([V, "reqs", [req_item(1)] * (MAX_BATCH + 1)]), id="over-the-bound"),
        pytest.param(pack([V, "reqs"]), id="no-list"),
        pytest.param(pack([V, "reqs", [req_item(1)], 1]), id="extra-field"),
        pytest.param(pack([V - 1, "reqs", [req_item(1)]]), id="older-version"),
        pytest.param(pack([V, "reqs", [req_item(1)]])[:-3], id="truncated"),
    ],
)
def test_a_malformed_batch_gets_one_clear_error_and_changes_nothing(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_request(frame)
    with pytest.raises(ProtocolError):
        decode(frame)
    r = registered()
    held = r.nlog.held
    r.fe.on_frames([(b"c-1", frame)], 2.0)
    (err,) = r.sent()
    assert isinstance(err, Reply) and err.status == "error" and err.msg_id == 0
    assert err.result["code"] == "bad_frame" and err.result["message"]
    assert r.nlog.held == held and len(r.fe.gate) == 0 and r.fe.bad_frames == 1


def test_the_bound_is_the_limit_and_encoding_refuses_what_decoding_would() -> None:
    full = pack([V, "reqs", [req_item(m, body={}) for m in range(1, MAX_BATCH + 1)]])
    msg = decode_request(full)
    assert isinstance(msg, RequestBatch) and len(batch_requests(msg)) == MAX_BATCH
    one = Request("c-1", 1, BUY, 9).encode()
    for n in (0, MAX_BATCH + 1):
        with pytest.raises(ProtocolError, match=f"1 to {MAX_BATCH}"):
            encode_batch(RequestBatch, [one] * n)
    with pytest.raises(ProtocolError, match="only req"):
        encode_batch(RequestBatch, [one, encode_reply(1, "ok", {}, 1, "a")])
    with pytest.raises(ProtocolError, match="only rep"):
        encode_batch(ReplyBatch, [one])


def test_a_bad_request_in_a_batch_is_answered_alone_and_spoils_nothing() -> None:
    r = registered()
    sid = r.sid
    frame = pack(
        [
            V,
            "reqs",
            [
                req_item(1, session=sid),
                req_item(2, body=[1], session=sid),  # body not a map: msg_id readable
                7,  # not a request at all: msg_id 0
                req_item(4, body=nested(MAX_DEPTH + 1), session=sid),
                [V - 1, "req", "c-1", 5, BUY, sid],  # older version
                req_item(6, session=sid),
            ],
        ]
    )
    r.fe.on_frames([(b"c-1", frame)], 2.0)
    errors = r.sent()  # refused at once, as one frame
    assert [(e.msg_id, e.status, e.result["code"]) for e in errors] == [
        (2, "error", "bad_frame"),
        (0, "error", "bad_frame"),
        (4, "error", "bad_frame"),
        (5, "error", "bad_frame"),
    ]
    assert "request 2 of the batch: body must be a map" in errors[0].result["message"]
    assert r.fe.bad_frames == 4 and r.fe.requests == 1 + 6
    r.fe.commit(r.nlog.held)
    oks = r.sent()
    assert [(x.msg_id, x.status, x.logged) for x in oks] == [(1, "ok", True), (6, "ok", True)]
    assert [(t.client_id, t.msg_id) for t in records(r)[1:]] == [("c-1", 1), ("c-1", 6)]


def test_batch_items_name_their_place_and_their_msg_id() -> None:
    msg = RequestBatch(
        [req_item(3), [V, "req", "c-1", -4, BUY, 9], [V, "req", "c-1", True, BUY, 9]]
    )
    good, bad_neg, bad_bool = batch_requests(msg)
    assert isinstance(good, Request) and good.msg_id == 3
    assert bad_neg == BadItem(0, "request 2 of the batch: msg_id must be a positive integer")
    assert isinstance(bad_bool, BadItem) and bad_bool.msg_id == 0


# --- the server groups replies per client ------------------------------------


class Rig(FrontRig):
    """A serving front with sessions for `clients`; `sids` by client."""

    def __init__(self, *clients: str) -> None:
        super().__init__(serving=True)
        self.fe.on_frames([(c.encode(), Register(c, 7).encode()) for c in clients], 1.0)
        self.fe.commit(self.nlog.held)
        grants = self.sent()
        assert all(isinstance(g, SessionGrant) for g in grants)
        self.sids = {c: g.session for c, g in zip(clients, grants, strict=True)}
        self.sid = self.sids[clients[0]]


def registered(*clients: str) -> Rig:
    return Rig(*(clients or ("c-1",)))


def records(r: FrontRig) -> list[TxRecord]:
    log = r.nlog.memlog
    return [TxRecord.decode(d) for d in log.get_range(log.first_lsn, len(log))]


def frames_by_ident(r: FrontRig) -> list[tuple[bytes, Message]]:
    got = [(ident, decode(d)) for ident, d in r.out.client]
    r.out.clear()
    return got


def reply_ids(msg: Message) -> list[int]:
    assert isinstance(msg, ReplyBatch)
    replies, bad = batch_replies(msg)
    assert bad == 0
    return [x.msg_id for x in replies]


def batch(client: str, sid: int, msg_ids: range | list[int]) -> bytes:
    return encode_batch(RequestBatch, [Request(client, m, BUY, sid).encode() for m in msg_ids])


def test_one_frame_per_client_for_what_one_commit_releases() -> None:
    r = registered("c-1", "c-2")
    s1, s2 = r.sids["c-1"], r.sids["c-2"]
    # One turn: c-1 sends a batch of 5, c-2 a lone request and then a batch of 3.
    r.fe.on_frames(
        [
            (b"c-1", batch("c-1", s1, range(1, 6))),
            (b"c-2", Request("c-2", 1, BUY, s2).encode()),
            (b"c-2", batch("c-2", s2, range(2, 5))),
        ],
        2.0,
    )
    assert r.out.client == []  # every reply waits for its commit
    first = r.nlog.held - 9 + 1
    r.fe.commit(first + 2)  # c-1's first three
    ((ident, part),) = frames_by_ident(r)
    assert ident == b"c-1" and isinstance(part, ReplyBatch)
    assert reply_ids(part) == [1, 2, 3]
    r.fe.commit(first + 5)  # c-1's last two and c-2's lone one
    got = frames_by_ident(r)
    assert [ident for ident, _ in got] == [b"c-1", b"c-2"]
    assert isinstance(got[0][1], ReplyBatch) and isinstance(got[1][1], Reply)  # a lone reply
    r.fe.commit(r.nlog.held)
    ((ident, rest),) = frames_by_ident(r)
    assert ident == b"c-2" and reply_ids(rest) == [2, 3, 4]
    assert r.fe.replies == 2 + 9  # counted by reply, as before batches


def test_other_frames_leave_in_order_behind_the_replies_owed_before_them() -> None:
    """A client re-registers between two requests of its own: its reply, the
    new session's grant and the next reply leave in the order they were made."""
    r = registered()
    r.fe.on_frames(
        [
            (b"c-1", Request("c-1", 1, BUY, r.sid).encode()),
            (b"c-1", Register("c-1", 99).encode()),
        ],
        2.0,
    )
    r.fe.commit(r.nlog.held)
    (rep, grant) = [m for _i, m in frames_by_ident(r)]
    assert isinstance(rep, Reply) and rep.msg_id == 1
    assert isinstance(grant, SessionGrant) and grant.nonce == 99
    sid2 = grant.session
    r.fe.on_frames([(b"c-1", batch("c-1", sid2, [1, 2]))], 3.0)
    r.fe.on_frames([(b"c-1", Register("c-1", 100).encode())], 3.0)
    r.fe.commit(r.nlog.held)
    kinds = [type(m) for _i, m in frames_by_ident(r)]
    assert kinds == [ReplyBatch, SessionGrant]
    # The recovery signal goes behind nothing owed: it never waits.
    r.fe.recovery_signal(5)
    ((ident, sig),) = frames_by_ident(r)
    assert ident == b"c-1" and isinstance(sig, RecoverySignal) and sig.epoch == 5


def test_reply_batches_are_cut_at_the_count_and_the_byte_bound() -> None:
    small = [encode_reply(m, "ok", {}, 1, "a") for m in range(1, 2 * MAX_BATCH + 3)]
    assert [len(c) for c in reply_chunks(small)] == [MAX_BATCH, MAX_BATCH, 2]
    big = encode_reply(1, "ok", {"reports": "x" * (REPLY_BATCH_BYTES // 2 + 10)}, 1, "a")
    assert [len(c) for c in reply_chunks([big, big, big])] == [1, 1, 1]
    assert [len(c) for c in reply_chunks([big, *small[:3], big])] == [4, 1]
    assert sum(len(c) for c in reply_chunks(small)) == len(small)  # nothing lost or doubled


# --- the client core sends its window in one frame -----------------------------


def connected(servers: int = 1) -> ClientCore:
    core = ClientCore([f"s{i}" for i in range(servers)], Session("c-1"), 0.3, 30.0, window=64)
    core.search(1.0)
    core.tick(1.0)
    core.out.clear()
    core.on_frame(0, Welcome("s0", 1, True).encode(), 1.0)
    ((_, reg),) = core.out
    core.out.clear()
    nonce = decode(reg)
    assert isinstance(nonce, Register)
    core.on_frame(0, SessionGrant(nonce.nonce, 9, 256, 1, "s0").encode(), 1.0)
    assert core.session.session == 9 and core.out == []
    return core


def sent_requests(core: ClientCore) -> list[tuple[int, type[Message], list[int]]]:
    """(server, frame type, msg_ids) of each frame sent; empties the outbox."""
    got = []
    for idx, data in core.out:
        msg = decode(data)
        ids = [m.msg_id for m in decode_all(data) if isinstance(m, Request)]
        got.append((idx, type(msg), ids))
    core.out.clear()
    return got


def test_the_client_sends_what_its_window_lets_out_in_one_frame() -> None:
    core = connected()
    ids = [core.submit({**BUY, "qty": i}, 2.0) for i in range(1, 17)]
    assert sent_requests(core) == [(0, RequestBatch, ids)]
    lone = core.submit(BUY, 2.0)
    assert sent_requests(core) == [(0, Request, [lone])]  # one goes as a plain req
    # A reply batch completes its requests like lone replies would.
    reps = [encode_reply(m, "ok", {}, 1, "s0", True) for m in ids[:8]]
    done = core.on_frame(0, encode_batch(ReplyBatch, reps), 2.1)
    assert [x.msg_id for x in done] == ids[:8] and len(core.session.outstanding) == 9
    assert core.session.acked.high == ids[7]


def test_a_batch_is_split_at_the_frame_bound_and_at_max_batch() -> None:
    core = connected()
    body = {**BUY, "note": "x" * 20_000}
    for _ in range(7):
        core.submit(body, 2.0)
    frames = list(core.out)
    assert all(len(d) <= MAX_FRAME_BYTES[Channel.CLIENTS] for _i, d in frames)
    assert [len(ids) for _i, _t, ids in sent_requests(core)] == [3, 3, 1]
    for _ in range(MAX_BATCH + 5):
        core.submit({"op": "x"}, 2.0)
    assert [len(ids) for _i, _t, ids in sent_requests(core)] == [MAX_BATCH, 5]


def test_after_a_failover_the_unanswered_requests_go_again_in_one_frame() -> None:
    core = connected(servers=2)
    ids = [core.submit(BUY, 2.0) for _ in range(10)]
    core.out.clear()
    answered = [encode_reply(m, "ok", {}, 1, "s0", True) for m in ids[:4]]
    core.on_frame(0, encode_batch(ReplyBatch, answered), 2.1)
    # s1 took over: it says so, and the six requests without a reply go there, in order.
    core.on_frame(1, RecoverySignal("s1", 2, 9, ids[3]).encode(), 2.5)
    assert sent_requests(core) == [(1, RequestBatch, ids[4:])]
    assert core.failovers[-1].resent == 6


# --- client core and server front wired together ------------------------------


def run_wire(r: FrontRig, core: ClientCore, turns: int) -> tuple[list[Reply], int]:
    """Carry frames both ways for `turns` turns, and as many more as the
    front needs for requests waiting past a turn's budget (the loop turns
    again at once then): the client's frames to the front, one commit per
    turn, the replies back. Returns the completed replies and how many
    client frames went."""
    got: list[Reply] = []
    frames = 0
    now = 2.0
    turn = 0
    while turn < turns or r.fe.backlogged:
        turn += 1
        out = [(b"c-1", data) for _idx, data in core.out]
        core.out.clear()
        frames += len(out)
        r.fe.new_turn()
        r.fe.on_frames(out, now)
        r.fe.commit(r.nlog.held)
        for _ident, data in r.out.client:
            got.extend(core.on_frame(0, data, now))
        r.out.clear()
        now += 0.001
    return got, frames


def check_once_each(r: FrontRig, sent: list[int], got: list[Reply]) -> list[str]:
    """What is wrong with the run: a request without exactly one reply, or
    without exactly one record."""
    problems = []
    replies = sorted(x.msg_id for x in got)
    logged = sorted(t.msg_id for t in records(r) if t.client_id == "c-1" and t.msg_id)
    for m in sent:
        if replies.count(m) != 1:
            problems.append(f"msg_id {m}: {replies.count(m)} replies")
        if logged.count(m) != 1:
            problems.append(f"msg_id {m}: {logged.count(m)} records")
    return problems


def wired_session() -> tuple[FrontRig, ClientCore]:
    r = FrontRig(serving=True)
    r.nlog.proc.epoch = 4  # the front's epoch: what its replies carry too
    core = ClientCore(["b"], Session("c-1"), 0.3, 30.0, window=64)
    core.search(1.0)
    core.tick(1.0)
    # The rig's front is named b at epoch 4: hello, welcome, register, grant.
    run_wire(r, core, 3)
    assert core.session.session and core.out == []
    return r, core


def test_wired_every_request_gets_one_record_and_one_reply() -> None:
    r, core = wired_session()
    sent = [core.submit({**BUY, "qty": i}, 2.0) for i in range(1, 65)]
    got, frames = run_wire(r, core, 2)
    assert frames == 1  # the whole window in one frame
    assert check_once_each(r, sent, got) == []
    assert all(x.status == "ok" and x.logged for x in got)


def test_wired_a_duplicate_batch_is_answered_from_the_stored_replies() -> None:
    """A resend of a whole batch (its replies lost on the way) executes
    nothing twice: the dedup table answers every request of it."""
    r, core = wired_session()
    sent = [core.submit(BUY, 2.0) for _ in range(8)]
    ((_idx, frame),) = core.out
    got, _ = run_wire(r, core, 1)
    applied = r.nlog.proc.applied
    r.fe.on_frames([(b"c-1", frame)], 3.0)  # the same frame again
    r.fe.commit(r.nlog.held)
    again = r.sent()
    assert sorted(x.msg_id for x in again) == sent and r.nlog.proc.applied == applied
    assert [x.result for x in sorted(again, key=lambda x: x.msg_id)] == [
        x.result for x in sorted(got, key=lambda x: x.msg_id)
    ]
    assert check_once_each(r, sent, got) == []


def test_the_check_catches_a_batch_whose_second_request_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Plant the bug: the server's batch reader loses the second request of
    every batch. The wired check must see the request without record or reply."""
    real = read_requests

    def drops_second(frame: bytes) -> list[AnyRequest | BadItem] | Message:
        items = real(frame)
        return items[:1] + items[2:] if isinstance(items, list) else items

    monkeypatch.setattr(frontend_mod, "read_requests", drops_second)
    r, core = wired_session()
    sent = [core.submit(BUY, 2.0) for _ in range(5)]
    got, _ = run_wire(r, core, 2)
    assert check_once_each(r, sent, got) == [
        f"msg_id {sent[1]}: 0 replies",
        f"msg_id {sent[1]}: 0 records",
    ]
