"""Client session bookkeeping: increasing msg_ids, unanswered requests in their
original order, one reply per msg_id, resend accounting."""

from __future__ import annotations

from typing import Any

import pytest

from zmqfail.client.session import ClientState, Session, new_client_id
from zmqfail.protocol import MAX_ID_LEN, Hello, Reply, Request, decode

pytestmark = pytest.mark.timeout(30)


def reply(msg_id: int, epoch: int = 1, status: str = "ok") -> Reply:
    return Reply(msg_id, status, {"n": msg_id}, epoch, "a")


def send(s: Session, count: int, start: float = 1.0) -> list[Request]:
    return [s.new_request({"i": i}, start + i) for i in range(count)]


def ids(reqs: list[Request]) -> list[int]:
    return [r.msg_id for r in reqs]


def test_initial_state() -> None:
    s = Session("c-test")
    assert s.client_id == "c-test"
    assert s.state is ClientState.CONNECTING
    assert s.server == ""
    assert s.epoch == 0
    assert s.resends == 0
    assert s.late_replies == 0
    assert s.next_msg_id == 1
    assert s.unanswered() == []
    assert s.oldest_sent_at() is None


def test_client_states_are_distinct() -> None:
    values = [st.value for st in ClientState]
    assert len(values) == len(set(values)) == 4
    assert ClientState("failing_over") is ClientState.FAILING_OVER


@pytest.mark.parametrize("first", [1, 5, 1000])
def test_msg_ids_increase_from_first_msg_id(first: int) -> None:
    s = Session("c-x", first_msg_id=first)
    reqs = send(s, 4)
    assert ids(reqs) == [first, first + 1, first + 2, first + 3]
    assert s.next_msg_id == first + 4
    assert all(r.client_id == "c-x" for r in reqs)


def test_msg_ids_keep_increasing_after_replies() -> None:
    s = Session("c-x")
    send(s, 3)
    for mid in (1, 2, 3):
        assert s.on_reply(reply(mid))
    assert s.new_request({}, 9.0).msg_id == 4


def test_new_request_records_outstanding_in_order() -> None:
    s = Session("c-x")
    body: dict[str, Any] = {"op": "buy", "qty": 3}
    req = s.new_request(body, 2.5)
    assert isinstance(req, Request)
    assert req.body == body
    assert decode(req.encode()) == req  # a valid wire request
    send(s, 2, start=3.0)
    assert list(s.outstanding) == [1, 2, 3]
    first = s.outstanding[1]
    assert first.request is req
    assert first.sent_at == 2.5
    assert first.sends == 1
    assert s.unanswered()[0] is req
    assert ids(s.unanswered()) == [1, 2, 3]


def test_on_reply_completes_once() -> None:
    s = Session("c-x")
    send(s, 3)
    assert s.on_reply(reply(2)) is True
    assert 2 not in s.outstanding
    assert s.late_replies == 0
    assert s.on_reply(reply(2)) is False
    assert s.late_replies == 1
    assert ids(s.unanswered()) == [1, 3]


def test_reply_for_unknown_msg_id_is_late() -> None:
    s = Session("c-x")
    send(s, 2)
    assert s.on_reply(reply(99)) is False
    assert s.on_reply(reply(0, status="error")) is False
    assert s.late_replies == 2
    assert ids(s.unanswered()) == [1, 2]


def test_on_reply_raises_epoch_never_lowers_it() -> None:
    s = Session("c-x")
    send(s, 3)
    assert s.on_reply(reply(1, epoch=3))
    assert s.epoch == 3
    assert s.on_reply(reply(2, epoch=2))
    assert s.epoch == 3
    assert s.on_reply(reply(3, epoch=7))
    assert s.epoch == 7


def test_unanswered_keeps_original_order_after_out_of_order_replies() -> None:
    s = Session("c-x")
    reqs = send(s, 6)
    for mid in (5, 2, 6):
        assert s.on_reply(reply(mid))
    assert ids(s.unanswered()) == [1, 3, 4]
    assert s.unanswered() == [reqs[0], reqs[2], reqs[3]]
    later = s.new_request({"late": True}, 20.0)
    assert ids(s.unanswered()) == [1, 3, 4, later.msg_id]
    assert later.msg_id == 7


def test_mark_resent_counts_resends_and_bumps_sends() -> None:
    s = Session("c-x")
    send(s, 3)
    s.mark_resent(20.0)
    assert s.resends == 3
    assert [o.sends for o in s.outstanding.values()] == [2, 2, 2]
    assert [o.sent_at for o in s.outstanding.values()] == [20.0, 20.0, 20.0]
    assert s.on_reply(reply(2))
    s.mark_resent(30.0)
    assert s.resends == 5
    assert {mid: o.sends for mid, o in s.outstanding.items()} == {1: 3, 3: 3}
    assert s.oldest_sent_at() == 30.0
    assert ids(s.unanswered()) == [1, 3]  # order kept across resends


def test_mark_resent_with_nothing_outstanding() -> None:
    s = Session("c-x")
    s.mark_resent(5.0)
    assert s.resends == 0
    assert s.unanswered() == []


def test_new_request_after_resend_starts_at_one_send() -> None:
    s = Session("c-x")
    send(s, 1)
    s.mark_resent(10.0)
    s.new_request({}, 11.0)
    assert [o.sends for o in s.outstanding.values()] == [2, 1]


def test_oldest_sent_at() -> None:
    s = Session("c-x")
    assert s.oldest_sent_at() is None
    s.new_request({}, 1.0)
    s.new_request({}, 2.0)
    s.new_request({}, 3.0)
    assert s.oldest_sent_at() == 1.0
    assert s.on_reply(reply(1))
    assert s.oldest_sent_at() == 2.0
    assert s.on_reply(reply(3))
    assert s.oldest_sent_at() == 2.0
    assert s.on_reply(reply(2))
    assert s.oldest_sent_at() is None


def test_default_client_ids_are_unique_and_valid() -> None:
    cids = [Session().client_id for _ in range(200)]
    assert len(set(cids)) == len(cids)
    for cid in cids:
        assert cid
        assert len(cid) <= MAX_ID_LEN
        Hello(cid, "").validate()
    assert Session("").client_id != ""
    fresh = {new_client_id() for _ in range(200)}
    assert len(fresh) == 200
    assert fresh.isdisjoint(cids)


def test_default_client_id_is_used_in_requests() -> None:
    s = Session()
    req = s.new_request({}, 0.0)
    assert req.client_id == s.client_id
    assert decode(req.encode()) == req
