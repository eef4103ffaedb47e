"""Protocol limits: integer range, nesting depth, value types and frame size,
refused with ProtocolError on encode and on decode; the per-channel frame
bounds and what libzmq does with a frame above the bound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from zmqfail import config
from zmqfail.app import Outcome
from zmqfail.client import core as client_core
from zmqfail.client.control import call
from zmqfail.client.core import ClientCore
from zmqfail.client.session import Session
from zmqfail.client.sync import Client
from zmqfail.errors import ProtocolError, Unavailable, ZmqfailError
from zmqfail.failover.state import Role, State
from zmqfail.netutil import free_base_port
from zmqfail.node.links import Channels
from zmqfail.processor import Processor
from zmqfail.protocol import (
    HWM,
    INT_MAX,
    INT_MIN,
    MAX_DEPTH,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Channel,
    CommitRequest,
    ControlRequest,
    Heartbeat,
    Reply,
    Request,
    check_tree,
    decode,
    decode_as,
    decode_request,
    encode_reply,
    limit_socket,
    max_frame_bytes,
)
from zmqfail.txlog.record import TxRecord, encode_record

V = PROTOCOL_VERSION

pytestmark = pytest.mark.timeout(30)


def pack(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def nested(depth: int) -> dict[str, Any]:
    """A map `depth` levels deep (the map itself is level 1)."""
    tree: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        tree = {"k": tree}
    return tree


# --- integers -------------------------------------------------------------


@pytest.mark.parametrize("qty", [INT_MAX + 1, INT_MIN - 1, 10**23, -(10**30)])
def test_request_with_out_of_range_integer_is_refused_on_encode(qty: int) -> None:
    with pytest.raises(ProtocolError, match=r"req\.body holds the integer .* outside the range"):
        Request("c-1", 1, {"op": "new", "qty": qty}).encode()


@pytest.mark.parametrize("qty", [INT_MAX, INT_MIN, 0, -1])
def test_integers_at_the_range_ends_round_trip(qty: int) -> None:
    msg = Request("c-1", 1, {"qty": qty, "deep": [[qty]]})
    assert decode(msg.encode()) == msg


def test_out_of_range_top_level_fields_name_the_field() -> None:
    with pytest.raises(ProtocolError, match=r"req\.msg_id is the integer"):
        Request("c-1", 2**64, {}).encode()
    with pytest.raises(ProtocolError, match=r"commit\.lsn is the integer"):
        CommitRequest("a", 1, -(2**64)).encode()
    with pytest.raises(ProtocolError, match=r"rep\.epoch is the integer"):
        encode_reply(1, "ok", {}, 2**70, "a")
    with pytest.raises(ProtocolError, match=r"rep\.result holds the integer"):
        Reply(1, "ok", {"fills": [{"qty": 2**65}]}, 1, "a").encode()


def test_a_failed_encode_leaves_the_shared_packer_clean() -> None:
    good = Request("c-1", 5, {"op": "status", "order_id": 3})
    expected = good.encode()
    for _ in range(3):
        with pytest.raises(ProtocolError):
            Request("c-1", 1, {"a": "x" * 100, "qty": 2**64}).encode()
        assert good.encode() == expected
        assert decode(good.encode()) == good


def test_unencodable_value_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="value of type object"):
        ControlRequest("status", {"x": object()}).encode()
    with pytest.raises(ProtocolError, match="value of type set"):
        Request("c-1", 1, {"x": {1, 2}}).encode()


def test_record_with_out_of_range_integer_is_refused_on_encode() -> None:
    with pytest.raises(ProtocolError, match=r"transaction record\.changes holds the integer"):
        encode_record(1, 1, "c", 1, {}, [["set", "x", 2**64]], "ok", {})
    with pytest.raises(ProtocolError, match=r"transaction record\.lsn is the integer"):
        TxRecord(2**64, 1, "c", 1, {}, [], "ok", {}).encode()


def test_uint_fields_above_64_bits_are_refused_by_validate() -> None:
    # msgpack cannot deliver such a value; a message built in code can hold one.
    with pytest.raises(ProtocolError, match="below 2\\*\\*64"):
        CommitRequest("a", 2**64, 1).validate()


# --- depth and types -----------------------------------------------------


def test_depth_limit_on_decode() -> None:
    ok = Request("c-1", 1, nested(MAX_DEPTH))
    assert decode(ok.encode()) == ok
    too_deep = pack([V, "req", "c-1", 1, nested(MAX_DEPTH + 1), 0])
    for dec in (decode, decode_request):
        with pytest.raises(ProtocolError, match=f"body is nested deeper than {MAX_DEPTH} levels"):
            dec(too_deep)


def test_depth_just_under_msgpacks_own_limit_is_refused_cleanly() -> None:
    # 1,000 levels decode in msgpack (its limit is 1,024) and then broke json
    # (`log dump --json`) with a RecursionError; now the decoder refuses them.
    frame = b"\x96" + bytes([V]) + b"\xa3req\xa3c-1\x01" + b"\x81\xa1k" * 1000 + b"\x01\x00"
    with pytest.raises(ProtocolError, match="nested deeper"):
        decode_request(frame)
    with pytest.raises(ProtocolError):  # msgpack's own StackError, wrapped
        decode(b"\x96\x05\xa3req\xa3c-1\x01" + b"\x81\xa1k" * 1100 + b"\x01\x00")


def test_depth_counts_lists_and_maps_alike() -> None:
    tree: list[Any] = [1]
    for _ in range(MAX_DEPTH - 1):
        tree = [tree]
    check_tree(tree, "x")
    with pytest.raises(ProtocolError, match="nested deeper"):
        check_tree([tree], "x")


@pytest.mark.parametrize(
    ("tag", "values"),
    [
        ("req", ["c-1", 1, {"op": "x", "args": nested(MAX_DEPTH)}, 0]),
        ("rep", [1, "ok", nested(MAX_DEPTH + 1), 1, "a", True]),
        ("ctl", ["status", nested(MAX_DEPTH + 1)]),
        ("ctlrep", [True, nested(MAX_DEPTH + 1), ""]),
    ],
)
def test_every_map_field_has_the_depth_limit(tag: str, values: list[object]) -> None:
    with pytest.raises(ProtocolError, match="nested deeper"):
        decode(pack([V, tag, *values]))


@pytest.mark.parametrize(
    "value",
    [msgpack.ExtType(5, b"x"), msgpack.Timestamp(1, 2)],
    ids=["ext", "timestamp"],
)
def test_extension_types_are_refused(value: object) -> None:
    with pytest.raises(ProtocolError, match="which frames do not carry"):
        decode(pack([V, "req", "c-1", 1, {"x": [value]}, 0]))
    with pytest.raises(ProtocolError):
        decode(pack([V, "hello", value, "", 0, 0]))


def test_nested_map_keys_must_be_strings() -> None:
    # `log dump --json` prints bodies: a bytes key inside one broke json.dumps.
    with pytest.raises(ProtocolError, match="map key that is not a string"):
        decode(pack([V, "req", "c-1", 1, {"a": [{b"k": 1}]}, 0]))


def test_record_fields_are_checked_like_the_wire() -> None:
    base = [3, 1, "c", 4, {"op": "new"}, [["set", "x", 1]], "ok", {"id": 1}]
    assert TxRecord.decode(pack(base)).lsn == 3

    def with_field(i: int, v: object) -> bytes:
        obj = list(base)
        obj[i] = v
        return pack(obj)

    for i, bad in [
        (0, True),  # a bool is not an lsn
        (1, False),
        (3, True),
        (6, "maybe"),  # not a reply status
        (5, [[{b"k": 1}]]),
        (4, {"x": msgpack.ExtType(1, b"")}),
        (7, nested(MAX_DEPTH + 1)),
    ]:
        with pytest.raises(ProtocolError):
            TxRecord.decode(with_field(i, bad))


# --- frame size -----------------------------------------------------------


def test_decode_request_applies_the_client_frame_bound() -> None:
    limit = MAX_FRAME_BYTES[Channel.CLIENTS]
    head = pack([V, "req", "c-1", 1, {"pad": ""}, 0])
    pad = limit - len(head) - 2  # str8 -> str16 header grows by 2 bytes
    fits = Request("c-1", 1, {"pad": "x" * pad}).encode()
    assert len(fits) == limit
    assert isinstance(decode_request(fits), Request)
    big = Request("c-1", 1, {"pad": "x" * (pad + 1)}).encode()
    with pytest.raises(ProtocolError, match=f"frame of {limit + 1} bytes exceeds"):
        decode_request(big)
    assert isinstance(decode_request(big, max_bytes=None), Request)


def test_decode_and_decode_as_take_a_bound() -> None:
    frame = Heartbeat(
        "a", Role.PRIMARY, State.NORMAL, 1, 1, 1, 1, "main", [], "", 1, [], 0, "", 0
    ).encode()
    assert decode_as(frame, Heartbeat, max_bytes=len(frame)).name == "a"
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(frame, max_bytes=len(frame) - 1)


def test_every_channel_has_a_bound_and_records_is_configurable() -> None:
    assert set(MAX_FRAME_BYTES) == set(Channel)
    for ch in Channel:
        assert max_frame_bytes(ch) == MAX_FRAME_BYTES[ch] > 0
    assert max_frame_bytes(Channel.REPL_RECORDS, 5 << 30) == 5 << 30
    # Only the records bound is configurable: the others ignore the override.
    assert max_frame_bytes(Channel.CLIENTS, 5 << 30) == MAX_FRAME_BYTES[Channel.CLIENTS]
    with pytest.raises(ValueError, match="too small"):
        max_frame_bytes(Channel.REPL_RECORDS, 1000)
    # A records batch can hold the whole RAM log (64 MiB by default).
    assert MAX_FRAME_BYTES[Channel.REPL_RECORDS] > 64 << 20


def test_limit_socket_sets_maxmsgsize(zctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    for ch, kind in [
        (Channel.CLIENTS, zmq.ROUTER),
        (Channel.CONTROL, zmq.ROUTER),
        (Channel.REPL_ACK, zmq.REP),
        (Channel.HEARTBEAT, zmq.SUB),
        (Channel.REPL_RECORDS, zmq.PULL),
        (Channel.REPLIES, zmq.DEALER),
    ]:
        s = zctx.socket(kind)
        assert limit_socket(s, ch) == MAX_FRAME_BYTES[ch]
        assert s.getsockopt(zmq.MAXMSGSIZE) == MAX_FRAME_BYTES[ch]
        assert s.getsockopt(zmq.SNDHWM) == s.getsockopt(zmq.RCVHWM) == HWM[ch] > 0
        s.close(linger=0)
    s = zctx.socket(zmq.PULL)
    limit_socket(s, Channel.REPL_RECORDS, 2 << 30)
    assert s.getsockopt(zmq.MAXMSGSIZE) == 2 << 30
    s.close(linger=0)


def test_oversized_frame_drops_the_connection_and_a_reconnect_is_served(
    zctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    """What docs/protocol.md says happens at the frame bound, shown on libzmq."""
    router = zctx.socket(zmq.ROUTER)
    limit_socket(router, Channel.CLIENTS)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = zctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.IDENTITY, b"c-1")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    dealer.send(b"before")
    assert router.poll(5000) and router.recv_multipart() == [b"c-1", b"before"]
    dealer.send(b"x" * (MAX_FRAME_BYTES[Channel.CLIENTS] + 1))
    dealer.send(b"right-behind")  # may be lost with the connection, or resent
    # The dealer reconnects by itself; later frames arrive, the big one never.
    got: list[bytes] = []
    for _ in range(100):
        dealer.send(b"later")
        while router.poll(100):
            got.append(router.recv_multipart()[1])
        if b"later" in got:
            break
    assert b"later" in got
    assert set(got) <= {b"right-behind", b"later"}


def test_every_socket_a_node_or_client_opens_has_a_frame_bound_and_hwms(
    tmp_path: Path, zctx: zmq.Context[zmq.Socket[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every socket of a node's channels, a client and an operator tool; the
    primary's replication sockets too, as each binds or connects. A socket
    left at libzmq's defaults (MAXMSGSIZE -1: any size) fails this."""
    seen: list[tuple[int, int, int, int]] = []

    def spy(real: Any) -> Any:
        def wrapped(self: zmq.Socket[bytes], endpoint: str) -> Any:
            # Left out: a socket monitor's inproc PAIR (control calls watch
            # their dialling), which only libzmq's own events reach.
            if not endpoint.startswith("inproc://"):
                o = [int(self.getsockopt(x)) for x in (zmq.MAXMSGSIZE, zmq.SNDHWM, zmq.RCVHWM)]
                seen.append((int(self.type), o[0], o[1], o[2]))
            return real(self, endpoint)

        return wrapped

    monkeypatch.setattr(zmq.Socket, "bind", spy(zmq.Socket.bind))
    monkeypatch.setattr(zmq.Socket, "connect", spy(zmq.Socket.connect))
    cfg = config.loads(config.render(nodes=2, base_port=free_base_port(30)), tmp_path)
    me = cfg.node("a")
    links = Channels(zctx, cfg, me, zmq.Poller(), lambda: b"")
    links.open_replication()
    client = Client(cfg, ctx=zctx)
    with pytest.raises(ZmqfailError):
        call(me, "status", timeout=0.01, ctx=zctx)
    monkeypatch.undo()
    client.close()
    links.close()
    kinds = {k for k, *_ in seen}
    assert kinds == {zmq.ROUTER, zmq.DEALER, zmq.REP, zmq.REQ, zmq.PULL, zmq.PUSH, zmq.PUB, zmq.SUB}
    for kind, maxmsg, snd, rcv in seen:
        assert 0 < snd <= HWM[Channel.CLIENTS] and 0 < rcv <= HWM[Channel.CLIENTS], kind
        if kind != zmq.PUSH:  # send-only: nothing arrives on it to bound
            assert 0 < maxmsg <= MAX_FRAME_BYTES[Channel.REPL_RECORDS], kind


def test_the_client_refuses_a_request_over_the_frame_bound_before_sending() -> None:
    """Before: the server's socket dropped the frame with the connection and
    the caller saw only "no reply within 5 s; resending it is safe"."""
    core = ClientCore(["a"], Session("c-1"), failover_after=0.15, lost_after=1.0)
    limit = MAX_FRAME_BYTES[Channel.CLIENTS]
    taken = core.session.next_msg_id
    with pytest.raises(ProtocolError, match=f"over the {limit}-byte limit of the client channel"):
        core.submit({"op": "new", "instrument": "A" * limit}, 1.0)
    assert core.session.next_msg_id == taken and not core.session.outstanding
    assert not [d for _i, d in core.out if d[:1] and b"AAAA" in d]
    assert core.submit({"op": "new", "instrument": "ABC"}, 1.0) == taken


@pytest.mark.parametrize("write", [True, False])
def test_an_application_answer_out_of_range_is_an_error_reply_not_a_crash(
    write: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's side of 'integers out of range': an application (a custom
    one, say) answering with an integer msgpack cannot carry. Before, the
    ProtocolError of encode_record escaped submit and stopped the node."""
    proc = Processor.create(config.load_default(), "a", 1)
    sid = proc.register("c-1", 1).gate_lsn
    huge = {"total": 10**30}
    monkeypatch.setattr(proc.app, "execute", lambda _c, _b: Outcome(write, "ok", huge, []))
    before = (proc.last_lsn, proc.app.digest())
    out = proc.submit("c-1", 1, {"op": "anything"}, sid)
    rep = decode_as(out.reply, Reply)
    assert (rep.status, rep.result["code"]) == ("error", "internal")
    assert "holds the integer 10000000000000000000000" in rep.result["message"]
    assert out.record is None and proc.failures == 1
    assert (proc.last_lsn, proc.app.digest()) == before
    monkeypatch.undo()
    book = proc.submit("c-1", 2, {"op": "book", "instrument": "ABC"}, sid)
    assert decode_as(book.reply, Reply).status == "ok"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"x": nested(MAX_DEPTH)}, f"request body is nested deeper than {MAX_DEPTH} levels"),
        ({"x": {1: "a"}}, "request body has a map key that is not a string"),
        ({"qty": 10**23}, "outside the range"),
        ({"qty": -(2**63) - 1}, "outside the range"),
        ({1: "a"}, "request body has a map key that is not a string"),
        ({b"k": "a"}, "request body has a map key that is not a string"),
        ({"x": (1, 2)}, "request body holds a value of type tuple"),
        ({"x": {1, 2}}, "request body holds a value of type set"),
    ],
)
def test_the_client_refuses_a_body_the_server_would_refuse_before_sending(
    body: dict[str, Any], says: str
) -> None:
    """Before: a body nested too deep was sent; the server's bad_frame reply
    carries msg_id 0 (it could not read one), so the caller only timed out."""
    core = ClientCore(["a"], Session("c-1"), failover_after=0.15, lost_after=1.0)
    taken = core.session.next_msg_id
    with pytest.raises(ProtocolError, match=says):
        core.submit(body, 1.0)
    assert core.session.next_msg_id == taken and not core.session.outstanding
    with pytest.raises(ProtocolError):  # the check the server's decoder applies
        check_tree(body, "body")


@pytest.mark.parametrize("body", [{1: "a"}, {"x": (1, 2)}, {"x": {1: "a"}}])
def test_the_client_check_catches_a_flat_test_that_lets_anything_through(
    monkeypatch: pytest.MonkeyPatch, body: dict[str, Any]
) -> None:
    """Plant the bug: the client's flat-body test passes every body (the
    walk skipped); the test above sees the body go out unchecked."""
    monkeypatch.setattr(client_core, "flat_map", lambda tree: True)
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        test_the_client_refuses_a_body_the_server_would_refuse_before_sending(body, ".")


@pytest.mark.timeout(30)
def test_a_control_call_with_no_peer_to_send_to_fails_in_time(
    zctx: zmq.Context[zmq.Socket[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DEALER blocks a send while it has no peer: what a failed handshake
    (an unknown key, or none, against a secured node) leaves it with. Seen
    in CI as a call that never returned. Here ZMQ_IMMEDIATE, set on the way
    to connect, keeps the peer from ever existing (nothing listens)."""
    real = zmq.Socket.connect

    def no_peer_yet(self: zmq.Socket[bytes], endpoint: str) -> Any:
        self.setsockopt(zmq.IMMEDIATE, 1)
        return real(self, endpoint)

    monkeypatch.setattr(zmq.Socket, "connect", no_peer_yet)
    endpoint = f"tcp://127.0.0.1:{free_base_port(1)}"
    with pytest.raises(Unavailable, match="could not be sent"):
        call(endpoint, "status", timeout=0.2, ctx=zctx)
