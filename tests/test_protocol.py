"""Wire protocol: round trips of every message type, and refusal (with
ProtocolError and nothing else) of every malformed frame."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import msgpack
import pytest
from conftest import example_scale, examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmqfail.errors import ProtocolError, ZmqfailError
from zmqfail.failover.state import Role, State
from zmqfail.protocol import (
    MAX_BATCH,
    MAX_ID_LEN,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    REPLY_STATUSES,
    AckStatus,
    CommitAck,
    CommitRequest,
    ControlReply,
    ControlRequest,
    Goodbye,
    Heartbeat,
    Hello,
    Message,
    Probe,
    RecoverySignal,
    Register,
    ReplRecords,
    Reply,
    ReplyBatch,
    Request,
    RequestBatch,
    SessionGrant,
    SnapshotImage,
    Welcome,
    WitnessAnswer,
    WitnessAsk,
    decode,
    decode_as,
    decode_enum,
    decode_request,
    encode_reply,
)

pytestmark = pytest.mark.timeout(120 * example_scale())
V = PROTOCOL_VERSION

# One valid instance of every message type, keyed by its type tag.
SAMPLES: dict[str, Message] = {
    "req": Request("c-1", 1, {"op": "buy", "qty": 10, "px": "10.25", "tags": [1, "x"]}, 9),
    "register": Register("c-1", 2**62 - 1),
    "session": SessionGrant(2**62 - 1, 9, 256, 2, "a"),
    "rep": Reply(7, "ok", {"order": 3, "fills": [{"qty": 1}]}, 2, "a", True),
    "reqs": RequestBatch([[6, "req", "c-1", 1, {"op": "buy"}, 9], [6, "req", "c-1", 2, {}, 9]]),
    "reps": ReplyBatch([[6, "rep", 1, "ok", {"order": 3}, 2, "a", True]]),
    "hello": Hello("c-1", "", 9, 7),
    "welcome": Welcome("a", 3, True, 9, 5, 2),
    "probe": Probe("b"),
    "w_ask": WitnessAsk("b", "elect", 3, 2, 17),
    "w_answer": WitnessAnswer(False, 2, "a", 0, 17, "a holds a lease"),
    "recovered": RecoverySignal("b", 4, 9, 5),
    "records": ReplRecords("a", 1, 10, [b"x", b"\x00\xff", b""]),
    "commit": CommitRequest("a", 1, 11),
    "ack": CommitAck("b", 1, 11, AckStatus.GAP, 7, 1),
    "snapshot": SnapshotImage("a", 2, 12, b"\x93\x01\x02\x03", [[1, "a", 77, 1]]),
    "hb": Heartbeat(
        "a",
        Role.PRIMARY,
        State.NORMAL,
        2,
        10,
        9,
        8,
        "failsafe",
        ["b", "c"],
        "",
        2,
        [[2, "a", 5, 1]],
        3,
        "b",
        3,
        [["b", 77, 4], ["c", 78, 5]],
        "",
        0,
        99,
    ),
    "bye": Goodbye("a", 2),
    "ctl": ControlRequest("status", {"digest": True}),
    "ctlrep": ControlReply(False, {}, "boom"),
}
TAGS = sorted(SAMPLES)


def pack(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def field_values(msg: Message) -> list[Any]:
    """The fields as the wire carries them (an enum as its value)."""
    values = [getattr(msg, f.name) for f in dataclasses.fields(msg)]
    return [v.value if isinstance(v, enum.Enum) else v for v in values]


def field_names(tag: str) -> list[str]:
    return [f.name for f in dataclasses.fields(MESSAGE_TYPES[tag])]


def mutated(tag: str, name: str, value: object) -> bytes:
    """The sample frame of `tag` with field `name` replaced by `value`."""
    values = field_values(SAMPLES[tag])
    values[field_names(tag).index(name)] = value
    return pack([PROTOCOL_VERSION, tag, *values])


def assert_refused(frame: bytes) -> None:
    """Both decoders refuse the frame with ProtocolError (any other type fails the test)."""
    with pytest.raises(ProtocolError):
        decode(frame)
    with pytest.raises(ProtocolError):
        decode_request(frame)


def test_samples_cover_every_message_type() -> None:
    assert set(SAMPLES) == set(MESSAGE_TYPES)
    for tag, msg in SAMPLES.items():
        assert type(msg) is MESSAGE_TYPES[tag]
        assert tag == msg.TYPE
        msg.validate()  # the samples themselves are valid


def test_message_types_tags_are_distinct() -> None:
    assert len({cls.TYPE for cls in MESSAGE_TYPES.values()}) == len(MESSAGE_TYPES)
    assert issubclass(ProtocolError, ZmqfailError)


@pytest.mark.parametrize("tag", TAGS)
def test_round_trip(tag: str) -> None:
    msg = SAMPLES[tag]
    frame = msg.encode()
    out = decode(frame)
    assert type(out) is type(msg)
    assert out == msg
    assert decode_request(frame) == msg
    assert decode_as(frame, type(msg)) == msg
    assert out.encode() == frame


@pytest.mark.parametrize("tag", TAGS)
def test_frame_is_versioned_array(tag: str) -> None:
    msg = SAMPLES[tag]
    obj = msgpack.unpackb(msg.encode(), raw=False)
    assert obj == [7, tag, *field_values(msg)]
    assert PROTOCOL_VERSION == 7


def test_round_trip_preserves_bytes_and_nested_values() -> None:
    msg = ReplRecords("node-b", 0, 1, [bytes(range(256)), b"", b"abc"])
    out = decode(msg.encode())
    assert isinstance(out, ReplRecords)
    assert out.records == [bytes(range(256)), b"", b"abc"]
    assert all(type(r) is bytes for r in out.records)
    req = Request("x" * MAX_ID_LEN, 2**63, {"a": {"b": [1, 2, {"c": None}]}, "d": b"\x01"})
    assert decode(req.encode()) == req


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="never-used-byte"),
        pytest.param(b"\x93\x01", id="truncated-array"),
        pytest.param(b"\xdb\x00\x00\x00\x10ab", id="truncated-str"),
        pytest.param(SAMPLES["hello"].encode() + b"\x00", id="trailing-data"),
        pytest.param(b"not msgpack at all \xff\xfe", id="garbage"),
        pytest.param(pack({"v": 1, "t": "hello"}), id="map"),
        pytest.param(pack(1), id="int"),
        pytest.param(pack("hello"), id="str"),
        pytest.param(pack(None), id="nil"),
        pytest.param(pack([]), id="empty-array"),
        pytest.param(pack([1]), id="version-only"),
        pytest.param(pack([4, "hello", "c-1"]), id="version-4"),
        pytest.param(pack([2, "req", "c-1", 1, {}]), id="version-2-request"),
        pytest.param(pack([0, "hello", "c-1"]), id="version-0"),
        pytest.param(pack(["1", "hello", "c-1"]), id="version-str"),
        pytest.param(pack([None, "hello", "c-1"]), id="version-nil"),
        pytest.param(pack([V, "nope", "c-1"]), id="unknown-type"),
        pytest.param(pack([V, "", "c-1"]), id="empty-type"),
        pytest.param(pack([V, "HELLO", "c-1"]), id="type-wrong-case"),
        pytest.param(pack([V, 5, "c-1"]), id="type-int"),
        pytest.param(pack([V, b"hello", "c-1"]), id="type-bytes"),
        pytest.param(pack([V, ["hello"], "c-1"]), id="type-list"),
        pytest.param(pack([V, {"t": "hello"}, "c-1"]), id="type-map"),
        pytest.param(pack([V, None, "c-1"]), id="type-nil"),
        pytest.param(pack([V, "req", "c-1", 1, {1: "x"}, 0]), id="body-int-keys"),
    ],
)
def test_malformed_frames_are_refused(frame: bytes) -> None:
    assert_refused(frame)


@pytest.mark.parametrize("tag", TAGS)
def test_wrong_field_count_is_refused(tag: str) -> None:
    values = field_values(SAMPLES[tag])
    assert_refused(pack([V, tag, *values[:-1]]))
    assert_refused(pack([V, tag, *values, 0]))
    assert_refused(pack([V, tag, *values, *values]))
    assert_refused(pack([V, tag]))


LONG = "x" * (MAX_ID_LEN + 1)

BAD_FIELDS: list[tuple[str, str, object]] = [
    ("req", "client_id", ""),
    ("req", "client_id", LONG),
    ("req", "client_id", 5),
    ("req", "client_id", b"c-1"),
    ("req", "client_id", None),
    ("req", "msg_id", "1"),
    ("req", "msg_id", True),
    ("req", "msg_id", False),
    ("req", "msg_id", -1),
    ("req", "msg_id", 0),
    ("req", "msg_id", 1.0),
    ("req", "msg_id", None),
    ("req", "body", []),
    ("req", "body", "x"),
    ("req", "body", 3),
    ("req", "body", None),
    ("req", "body", {b"k": 1}),
    ("req", "body", {"ok": 1, b"k": 1}),
    ("rep", "msg_id", "1"),
    ("rep", "msg_id", True),
    ("rep", "msg_id", -1),
    ("rep", "msg_id", 1.5),
    ("rep", "status", "nope"),
    ("rep", "status", "OK"),
    ("rep", "status", ""),
    ("rep", "status", 3),
    ("rep", "status", None),
    ("rep", "result", []),
    ("rep", "result", "x"),
    ("rep", "epoch", -1),
    ("rep", "epoch", False),
    ("rep", "epoch", "0"),
    ("rep", "server", ""),
    ("rep", "server", LONG),
    ("rep", "server", 1),
    ("rep", "logged", 1),
    ("rep", "logged", None),
    ("rep", "logged", "yes"),
    ("req", "session", -1),
    ("req", "session", True),
    ("req", "session", "1"),
    ("req", "session", None),
    ("reqs", "requests", []),
    ("reqs", "requests", "x"),
    ("reqs", "requests", None),
    ("reqs", "requests", {"a": 1}),
    ("reqs", "requests", [[6, "req", "c-1", 1, {}, 0]] * (MAX_BATCH + 1)),
    ("reps", "replies", []),
    ("reps", "replies", 3),
    ("reps", "replies", [[6, "rep", 1, "ok", {}, 1, "a", False]] * (MAX_BATCH + 1)),
    ("register", "client_id", ""),
    ("register", "client_id", LONG),
    ("register", "client_id", 1),
    ("register", "nonce", -1),
    ("register", "nonce", False),
    ("register", "nonce", "7"),
    ("session", "nonce", -1),
    ("session", "nonce", None),
    ("session", "session", 0),
    ("session", "session", True),
    ("session", "window", 0),
    ("session", "window", "256"),
    ("session", "epoch", -1),
    ("session", "server", ""),
    ("session", "server", 3),
    ("hello", "client_id", ""),
    ("hello", "client_id", LONG),
    ("hello", "client_id", 1),
    ("hello", "client_id", False),
    ("welcome", "server", ""),
    ("welcome", "epoch", -1),
    ("welcome", "epoch", True),
    ("welcome", "active", 1),
    ("welcome", "active", "yes"),
    ("welcome", "active", None),
    ("welcome", "session", -1),
    ("welcome", "session", True),
    ("welcome", "known", "5"),
    ("welcome", "known", None),
    ("welcome", "gen", -1),
    ("welcome", "gen", None),
    ("hello", "session", -1),
    ("hello", "session", False),
    ("hello", "acked", 1.5),
    ("hello", "acked", -(2**63)),
    ("probe", "server", ""),
    ("probe", "server", 7),
    ("w_ask", "server", ""),
    ("w_ask", "kind", "lead"),
    ("w_ask", "kind", 1),
    ("w_ask", "epoch", -1),
    ("w_ask", "epoch", "3"),
    ("w_ask", "known", None),
    ("w_ask", "nonce", -1),
    ("w_answer", "granted", 1),
    ("w_answer", "epoch", -2),
    ("w_answer", "leader", 5),
    ("w_answer", "lease_ms", "1000"),
    ("w_answer", "nonce", None),
    ("w_answer", "why", "x" * 201),
    ("recovered", "server", 5),
    ("recovered", "epoch", -2),
    ("recovered", "epoch", "1"),
    ("recovered", "session", -3),
    ("recovered", "known", [1]),
    ("records", "sender", ""),
    ("records", "epoch", -1),
    ("records", "first_lsn", 0),
    ("records", "first_lsn", -1),
    ("records", "first_lsn", True),
    ("records", "records", b"x"),
    ("records", "records", [b"x", "y"]),
    ("records", "records", [1]),
    ("records", "records", {}),
    ("snapshot", "sender", ""),
    ("snapshot", "sender", LONG),
    ("snapshot", "epoch", -1),
    ("snapshot", "epoch", True),
    ("snapshot", "lsn", -1),
    ("snapshot", "lsn", "12"),
    ("snapshot", "state", "text"),
    ("snapshot", "state", None),
    ("snapshot", "state", [b"x"]),
    ("commit", "sender", ""),
    ("commit", "epoch", True),
    ("commit", "lsn", -1),
    ("commit", "lsn", "3"),
    ("ack", "sender", ""),
    ("ack", "epoch", -1),
    ("ack", "held", "1"),
    ("ack", "status", "done"),
    ("ack", "status", 1),
    ("ack", "status", ["ok"]),
    ("bye", "name", ""),
    ("bye", "name", LONG),
    ("bye", "epoch", -1),
    ("bye", "epoch", "2"),
    ("hb", "name", ""),
    ("hb", "name", LONG),
    ("hb", "role", 1),
    ("hb", "role", ""),
    ("hb", "role", "leader"),
    ("hb", "state", None),
    ("hb", "state", "Normal"),
    ("hb", "state", ["normal"]),
    ("hb", "epoch", -1),
    ("hb", "last_lsn", True),
    ("hb", "committed_lsn", "x"),
    ("hb", "flushed_lsn", -5),
    ("hb", "link", "other"),
    ("hb", "link", "MAIN"),
    ("hb", "link", 1),
    ("hb", "handoff_to", None),
    ("hb", "last_epoch", -1),
    ("hb", "history", None),
    ("hb", "candidate", -1),
    ("hb", "grant_to", 5),
    ("hb", "grant_epoch", "x"),
    ("hb", "history", [[1, "a", 2]]),
    ("hb", "history", [[1, 5, 2, 1]]),
    ("hb", "history", [[-1, "a", 2, 1]]),
    ("snapshot", "history", "x"),
    ("snapshot", "history", [["1", "a", 2, 1]]),
    ("hello", "lost", None),
    ("hello", "lost", "x" * 129),
    ("ack", "incarnation", -1),
    ("ack", "last_epoch", -1),
    ("ack", "incarnation", "x"),
    ("hb", "handoff_to", 3),
    ("hb", "in_sync", "b"),
    ("hb", "in_sync", None),
    ("hb", "in_sync", {"b": 1}),
    ("hb", "in_sync", ["b", 1]),
    ("hb", "in_sync", [b"b"]),
    ("hb", "admitted", None),
    ("hb", "admitted", [["b", 1]]),
    ("hb", "admitted", [["b", 1, -1]]),
    ("hb", "admitted", [["", 1, 1]]),
    ("hb", "admitted", [["b", "1", 1]]),
    ("hb", "admitted", [["b", 1, 1]] * 65),
    ("hb", "admitted", {"b": [1, 1]}),
    ("hb", "gen_of", 1),
    ("hb", "gen_of", "x" * (MAX_ID_LEN + 1)),
    ("hb", "gen", -1),
    ("hb", "gen", "2"),
    ("hb", "incarnation", -1),
    ("hb", "incarnation", None),
    ("ctl", "command", ""),
    ("ctl", "command", 3),
    ("ctl", "args", []),
    ("ctl", "args", {b"k": 1}),
    ("ctlrep", "ok", 1),
    ("ctlrep", "ok", 0),
    ("ctlrep", "ok", "true"),
    ("ctlrep", "ok", None),
    ("ctlrep", "result", []),
    ("ctlrep", "result", {b"k": 1}),
    ("ctlrep", "error", None),
    ("ctlrep", "error", 1),
]


@pytest.mark.parametrize(
    ("tag", "name", "value"),
    BAD_FIELDS,
    ids=[f"{t}-{n}-{v!r}"[:40] for t, n, v in BAD_FIELDS],
)
def test_field_of_wrong_type_is_refused(tag: str, name: str, value: object) -> None:
    assert_refused(mutated(tag, name, value))


def test_every_field_has_a_bad_value_case() -> None:
    covered = {(t, n) for t, n, _ in BAD_FIELDS}
    for tag in TAGS:
        for name in field_names(tag):
            assert (tag, name) in covered, (tag, name)


@pytest.mark.parametrize(
    ("tag", "name", "value"),
    [
        ("req", "client_id", "x" * MAX_ID_LEN),
        ("req", "client_id", "c"),
        ("req", "msg_id", 1),
        ("req", "body", {}),
        ("req", "session", 0),
        ("register", "nonce", 0),
        ("session", "epoch", 0),
        ("rep", "msg_id", 0),
        ("rep", "result", {}),
        ("rep", "epoch", 0),
        ("hello", "client_id", "x" * MAX_ID_LEN),
        ("welcome", "active", False),
        ("records", "records", []),
        ("records", "first_lsn", 1),
        ("commit", "lsn", 0),
        ("ack", "status", "fenced"),
        ("hb", "link", "main"),
        ("hb", "role", "backup"),
        ("hb", "state", "backup_only"),
        ("hb", "in_sync", []),
        ("snapshot", "state", b""),
        ("snapshot", "lsn", 0),
        ("ctlrep", "error", ""),
        ("ctlrep", "ok", True),
    ],
)
def test_boundary_values_are_accepted(tag: str, name: str, value: object) -> None:
    frame = mutated(tag, name, value)
    msg = decode(frame)
    got = getattr(msg, name)
    kind = type(msg).ENUMS.get(name)
    if kind is not None:
        assert got is kind(value)  # decoded to its enum, never left a string
    else:
        assert got == value
        assert type(got) is type(value)
    assert decode_request(frame) == msg


@pytest.mark.parametrize("status", list(AckStatus))
def test_every_ack_status_travels_as_its_value_and_decodes_to_the_enum(
    status: AckStatus,
) -> None:
    frame = CommitAck("b", 1, 2, status, 3, 1).encode()
    assert msgpack.unpackb(frame)[5] == status.value
    assert decode_as(frame, CommitAck).status is status


@pytest.mark.parametrize(
    ("tag", "name", "value"),
    [
        *(("ack", "status", v) for v in ("done", "OK", "", 1, None, ["ok"])),
        ("hb", "role", "leader"),
        ("hb", "role", "Primary"),
        ("hb", "state", "unreachable"),
        ("hb", "state", 3),
    ],
)
def test_an_unknown_enum_value_is_a_clear_protocol_error(
    tag: str, name: str, value: object
) -> None:
    with pytest.raises(ProtocolError) as err:
        decode(mutated(tag, name, value))
    assert str(err.value) == f"unknown {tag} {name} {value!r:.40}"


def test_heartbeat_role_and_state_travel_as_values_and_decode_to_the_enums() -> None:
    frame = SAMPLES["hb"].encode()
    assert msgpack.unpackb(frame)[3:5] == ["primary", "normal"]
    hb = decode_as(frame, Heartbeat)
    assert hb.role is Role.PRIMARY and hb.state is State.NORMAL


def test_decode_enum_names_what_was_wrong() -> None:
    assert decode_enum(AckStatus, "wait", "ack status") is AckStatus.WAIT
    assert decode_enum(AckStatus, AckStatus.OK, "ack status") is AckStatus.OK
    assert decode_enum(State, "fenced", "state") is State.FENCED
    with pytest.raises(ProtocolError, match=r"^unknown hb role 'leader'$"):
        decode_enum(Role, "leader", "hb role")
    with pytest.raises(ProtocolError, match=r"^unknown state 'Normal'$"):
        decode_enum(State, "Normal", "state")
    with pytest.raises(ProtocolError, match=r"^unknown ack status 'primary'$"):
        decode_enum(AckStatus, Role.PRIMARY.value, "ack status")


@pytest.mark.parametrize("status", sorted(REPLY_STATUSES))
def test_every_reply_status_is_accepted(status: str) -> None:
    rep = Reply(1, status, {}, 0, "a")
    assert decode(rep.encode()) == rep


@pytest.mark.parametrize("status", [["ok"], {"s": "ok"}], ids=["list", "map"])
def test_reply_with_unhashable_status_is_refused(status: object) -> None:
    assert_refused(mutated("rep", "status", status))


@pytest.mark.parametrize("result", [{b"k": 1}, {"ok": 1, b"k": 2}], ids=["bytes", "mixed"])
def test_reply_result_with_non_str_keys_is_refused(result: object) -> None:
    assert_refused(mutated("rep", "result", result))


def test_reply_result_non_str_keys_refused_on_the_slow_path() -> None:
    # Once a later field (epoch) fails the fast path, the key check is applied.
    with pytest.raises(ProtocolError, match="result has a map key that is not a string"):
        decode(pack([PROTOCOL_VERSION, "rep", 7, "ok", {b"k": 1}, -1, "a", False]))


@pytest.mark.parametrize("version", [True, 1.0], ids=["bool", "float"])
def test_non_integer_version_is_refused(version: object) -> None:
    assert_refused(pack([version, "hello", "c-1"]))
    assert_refused(pack([version, "req", "c-1", 1, {}]))


def test_decode_request_matches_decode_on_requests() -> None:
    for msg in (
        Request("c-9", 1, {}),
        Request("c-9", 42, {"op": "cancel", "order": 7}, 2**63),
        Request("z" * MAX_ID_LEN, 2**64 - 1, {"nested": {"k": [b"v"]}}),
    ):
        frame = msg.encode()
        got = decode_request(frame)
        assert type(got) is Request
        assert got == decode(frame) == msg


@pytest.mark.parametrize("tag", TAGS)
def test_decode_request_decodes_other_types_too(tag: str) -> None:
    frame = SAMPLES[tag].encode()
    assert decode_request(frame) == decode(frame) == SAMPLES[tag]


def test_decode_as_returns_the_requested_type() -> None:
    msg = decode_as(SAMPLES["hb"].encode(), Heartbeat)
    assert isinstance(msg, Heartbeat)
    assert msg.link == "failsafe"


@pytest.mark.parametrize("tag", TAGS)
def test_decode_as_refuses_another_type(tag: str) -> None:
    frame = SAMPLES[tag].encode()
    for other in MESSAGE_TYPES.values():
        if other is MESSAGE_TYPES[tag]:
            continue
        with pytest.raises(ProtocolError, match=f"expected {other.TYPE}, got {tag}"):
            decode_as(frame, other)


def test_decode_as_refuses_malformed_frame() -> None:
    with pytest.raises(ProtocolError):
        decode_as(b"\xc1", Hello)
    with pytest.raises(ProtocolError):
        decode_as(mutated("hello", "client_id", ""), Hello)


@pytest.mark.parametrize(
    "args",
    [
        (7, "ok", {"order": 3, "fills": [{"qty": 1, "px": "1.5"}]}, 2, "a"),
        (0, "error", {"code": "bad_frame", "message": "x"}, 0, "node-b"),
        (2**63, "not_active", {}, 9, "b"),
        (5, "stale", {}, 1, "x" * MAX_ID_LEN),
        (6, "rejected", {"code": "bad_price", "message": "no"}, 3, "c"),
    ],
)
def test_encode_reply_matches_reply_encode(args: tuple[int, str, dict[str, Any], int, str]) -> None:
    frame = encode_reply(*args)
    rep = Reply(*args)
    assert decode(frame) == decode(rep.encode()) == rep
    assert frame == rep.encode()
    assert decode_as(frame, Reply) == rep


def test_messages_are_frozen() -> None:
    msg = Hello("c-1", "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.client_id = "c-2"  # type: ignore[misc]


# --- property tests -------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=12)
    | st.binary(max_size=12)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.binary(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
# Structures that look like frames: a version, a (mostly real) type tag, fields.
FRAME_LIKE = st.tuples(
    st.sampled_from([1, 1, 1, 0, 2, "1"]),
    st.sampled_from([*TAGS, "nope", ""]) | VALUES,
    st.lists(VALUES, max_size=10),
).map(lambda t: [t[0], t[1], *t[2]])


def check_decoders(frame: bytes) -> None:
    """Both decoders raise only ProtocolError, agree, and re-encode faithfully."""
    try:
        msg = decode(frame)
    except ProtocolError:
        with pytest.raises(ProtocolError):
            decode_request(frame)
        return
    assert decode_request(frame) == msg
    again = msg.encode()
    assert decode(again) == msg
    assert decode_request(again) == msg
    assert type(decode(again)) is type(msg)


PROPERTY_SETTINGS = settings(
    max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_protocol_error(frame: bytes) -> None:
    check_decoders(frame)


@PROPERTY_SETTINGS
@given(VALUES)
def test_arbitrary_msgpack_values_raise_only_protocol_error(obj: object) -> None:
    check_decoders(pack(obj))


@PROPERTY_SETTINGS
@given(FRAME_LIKE)
def test_frame_like_structures_raise_only_protocol_error(obj: list[object]) -> None:
    check_decoders(pack(obj))


@PROPERTY_SETTINGS
@given(st.sampled_from(TAGS), st.data())
def test_mutated_valid_frames_raise_only_protocol_error(tag: str, data: st.DataObject) -> None:
    values = field_values(SAMPLES[tag])
    for i in range(len(values)):
        if data.draw(st.booleans()):
            values[i] = data.draw(VALUES)
    obj = [1, tag, *values]
    check_decoders(pack(obj))
