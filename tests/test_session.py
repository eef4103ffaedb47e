"""Client session bookkeeping: the server session (register, grant, expiry),
increasing msg_ids, unanswered requests in their original order and session,
one reply per msg_id, resend accounting."""

from __future__ import annotations

from typing import Any

import pytest

from zmqfail.client.session import ClientState, Session, new_client_id
from zmqfail.protocol import MAX_ID_LEN, Hello, Reply, Request, SessionGrant, decode

pytestmark = pytest.mark.timeout(30)


def reply(msg_id: int, epoch: int = 1, status: str = "ok") -> Reply:
    return Reply(msg_id, status, {"n": msg_id}, epoch, "a")


def grant(s: Session, session: int = 5, window: int = 256, epoch: int = 1) -> list[Request]:
    """The server's answer to the session's registration."""
    reg = s.register(0.5)
    return s.on_grant(SessionGrant(reg.nonce, session, window, epoch, "a"))


def send(s: Session, count: int, start: float = 1.0) -> list[Request]:
    if not s.session:
        grant(s)
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
    grant(s)
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


# ------------------------------------------------------------ server sessions


def test_requests_wait_for_the_grant_then_join_the_session_in_order() -> None:
    s = Session("c-x")
    assert s.must_register and s.session == 0
    early = [s.new_request({"i": i}, 1.0 + i) for i in range(3)]
    assert all(r.session == 0 for r in early)
    assert s.unanswered() == []  # nothing was sent: nothing to resend
    reg = s.register(0.5)
    assert reg.client_id == "c-x" and reg.nonce and not s.must_register
    assert s.register(0.7).nonce == reg.nonce  # a resend of the same registration
    assert s.registrations == 1
    bound = s.on_grant(SessionGrant(reg.nonce, 42, 128, 3, "a"))
    assert [(r.msg_id, r.session, r.body) for r in bound] == [
        (1, 42, {"i": 0}),
        (2, 42, {"i": 1}),
        (3, 42, {"i": 2}),
    ]
    assert (s.session, s.window, s.epoch) == (42, 128, 3)
    assert s.new_request({}, 9.0).session == 42
    assert ids(s.unanswered()) == [1, 2, 3, 4]


def test_a_grant_for_another_registration_is_ignored() -> None:
    s = Session("c-x")
    reg = s.register(0.0)
    assert s.on_grant(SessionGrant(reg.nonce + 1, 7, 10, 1, "a")) == []
    assert s.session == 0
    grant_ = SessionGrant(reg.nonce, 8, 10, 1, "a")
    s.on_grant(grant_)
    assert s.session == 8
    assert s.on_grant(SessionGrant(reg.nonce, 9, 10, 1, "a")) == []  # already granted
    assert s.session == 8


def test_expired_reply_ends_the_session_and_keeps_old_requests_in_theirs() -> None:
    s = Session("c-x")
    send(s, 3)  # session 5
    first_nonce = s.nonce
    assert s.on_reply(reply(2, status="expired"))
    assert s.expired == 1 and s.session == 0 and s.must_register
    later = s.new_request({"after": True}, 20.0)
    assert later.session == 0
    reg = s.register(21.0)
    assert reg.nonce != first_nonce and s.registrations == 2
    s.on_grant(SessionGrant(reg.nonce, 77, 256, 1, "a"))
    # The unanswered old requests keep session 5 (moving them could run them
    # twice); the new one went to session 77.
    assert {r.msg_id: r.session for r in s.unanswered()} == {1: 5, 3: 5, 4: 77}
    # Their own "expired" replies complete them without ending the new session.
    assert s.on_reply(reply(1, status="expired"))
    assert s.on_reply(reply(3, status="expired"))
    assert s.session == 77 and s.expired == 3 and not s.must_register


def test_oldest_sent_at_counts_a_registration_in_flight() -> None:
    s = Session("c-x")
    assert s.oldest_sent_at() is None
    s.register(3.0)
    assert s.oldest_sent_at() == 3.0
    s.new_request({}, 4.0)
    assert s.oldest_sent_at() == 3.0
    s.on_grant(SessionGrant(s.nonce, 1, 8, 1, "a"))
    assert s.oldest_sent_at() == 4.0


def test_mark_resent_skips_requests_never_sent() -> None:
    s = Session("c-x")
    send(s, 2)
    assert s.on_reply(reply(1, status="expired"))  # session over; msg 2 still out in it
    s.new_request({}, 5.0)  # no session: not sent
    s.mark_resent(6.0)
    assert s.resends == 1
    assert {m: o.sends for m, o in s.outstanding.items()} == {2: 2, 3: 1}
