"""The hot path's msgspec codec (protocol.typed) against the msgpack one it
replaced: the same bytes on the wire and on disk, and the same frames
accepted and refused, with the same values.

The msgpack side is the reference: `decode_request`, `batch_requests`,
`decode` and `batch_replies` still read with msgpack (and are what the fast
readers fall back to), and records are compared with what msgpack's packer
writes and its unpacker reads."""

from __future__ import annotations

import random
from typing import Any

import msgpack
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmqfail import config
from zmqfail.cli.demo import random_order
from zmqfail.errors import ProtocolError
from zmqfail.processor import Processor
from zmqfail.protocol import (
    MAX_DEPTH,
    PROTOCOL_VERSION,
    BadItem,
    Reply,
    ReplyBatch,
    Request,
    RequestBatch,
    batch_replies,
    batch_requests,
    decode,
    decode_request,
    encode_reply,
    encode_request,
    read_replies,
    read_requests,
    typed,
)
from zmqfail.txlog import record as record_mod
from zmqfail.txlog.record import TxRecord, encode_record

V = PROTOCOL_VERSION
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
pytestmark = pytest.mark.timeout(240)


def packb(obj: object) -> bytes:
    """What the project's msgpack packer wrote before msgspec."""
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.binary(max_size=8)
)
# Plain trees, what check_tree lets through.
trees = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4)
    ),
    max_leaves=20,
)
maps = st.dictionaries(st.text(max_size=8), trees, max_size=6)
# Anything msgpack can carry, trees a frame must not carry included: maps
# with int, bytes or nil keys at any level, ext values, deep nesting.
keys = st.text(max_size=4) | st.integers(-3, 300) | st.binary(max_size=3) | st.none()
wild = st.recursive(
    scalars | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4)),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(keys, kids, max_size=3),
    max_leaves=12,
)


def nested(depth: int) -> Any:
    tree: Any = []
    for _ in range(depth - 1):
        tree = [tree]
    return tree


# --- the bytes ---------------------------------------------------------------------


def real_traffic(n: int = 400) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Request, record and reply frames of random orders run through the real Processor."""
    proc = Processor.create(config.load_default(), "a", 1)
    rng = random.Random(3)
    sids = {f"c{i}": proc.register(f"c{i}", i + 1).gate_lsn for i in range(8)}
    reqs, recs, reps = [], [], []
    for i in range(n):
        c = f"c{i % 8}"
        body: dict[str, Any] = random_order(rng, config.DEFAULT_INSTRUMENTS)
        if i % 7 == 0:
            body = {"op": "cancel", "order_id": rng.randint(1, i + 1)}
        mid = 70_000 + i  # msg_ids past 65,535, so some bytes look like containers
        reqs.append(encode_request(c, mid, body, sids[c]))
        out = proc.submit(c, mid, body, sids[c])
        reps.append(out.reply)
        if out.record is not None:
            recs.append(out.record)
    return reqs, recs, reps


REQS, RECS, REPS = real_traffic()


def test_real_traffic_is_written_as_msgpack_wrote_it() -> None:
    for f in REQS:
        r = decode_request(f)
        assert isinstance(r, Request)
        assert f == r.encode() == packb([V, "req", r.client_id, r.msg_id, r.body, r.session])
    for f in RECS:
        values = msgpack.unpackb(f)
        assert f == packb(values) == encode_record(*values) == TxRecord.decode(f).encode()
    for f in REPS:
        values = msgpack.unpackb(f)
        assert f == packb(values) == encode_reply(*values[2:])


@FUZZ
@given(
    st.text(min_size=1, max_size=128), st.integers(1, 2**64 - 1), maps, st.integers(0, 2**64 - 1)
)
def test_a_request_is_written_as_msgpack_wrote_it(
    cid: str, mid: int, body: dict[str, Any], session: int
) -> None:
    frame = encode_request(cid, mid, body, session)
    assert (
        frame
        == packb([V, "req", cid, mid, body, session])
        == Request(cid, mid, body, session).encode()
    )


@FUZZ
@given(maps, st.lists(trees, max_size=5), maps, st.integers(1, 2**64 - 1))
def test_records_and_replies_are_written_as_msgpack_wrote_them(
    body: dict[str, Any], changes: list[Any], result: dict[str, Any], n: int
) -> None:
    rec = (n, 3, "c-1", n, body, changes, "ok", result)
    assert encode_record(*rec) == packb(list(rec))
    assert encode_reply(n, "rejected", result, 3, "a", True) == packb(
        [V, "rep", n, "rejected", result, 3, "a", True]
    )


@FUZZ
@given(maps, st.lists(trees, max_size=5), maps, st.integers(1, 2**64 - 1))
def test_records_msgpack_wrote_decode_to_what_msgpack_reads(
    body: dict[str, Any], changes: list[Any], result: dict[str, Any], lsn: int
) -> None:
    """Logs and recordings written before msgspec read back as they did."""
    data = packb([lsn, 2, "c-1", 5, body, changes, "ok", result])
    rec = TxRecord.decode(data)
    assert list(msgspec_tuple(rec)) == msgpack.unpackb(data, raw=False, strict_map_key=False)


def msgspec_tuple(rec: TxRecord) -> tuple[Any, ...]:
    return (
        rec.lsn,
        rec.epoch,
        rec.client_id,
        rec.msg_id,
        rec.body,
        rec.changes,
        rec.status,
        rec.result,
    )


def test_what_msgpack_refused_to_write_is_still_refused() -> None:
    """Values an application might answer with that msgpack cannot carry
    (an ext, through msgspec's datetime), or a tree past its limits."""
    import datetime

    utc = datetime.UTC
    stamps = [
        datetime.datetime(y, 1, 1, 0, 0, 0, us, tzinfo=utc)
        for y, us in ((2020, 0), (2020, 5), (1900, 0))
    ]
    bads: list[dict[str, Any]] = [{"x": 2**64}, {"x": object()}, *({"t": [t]} for t in stamps)]
    for bad in bads:
        with pytest.raises(ProtocolError):
            encode_record(1, 1, "c", 1, {}, [], "ok", bad)
        with pytest.raises(ProtocolError):
            encode_reply(1, "ok", bad, 1, "a")
    with pytest.raises(ProtocolError, match="outside the range"):
        encode_request("c", 1, {"x": -(2**63) - 1}, 0)


# --- reading: the same frames accepted and refused ------------------------------------


def reference_record(data: bytes) -> TxRecord | None:
    """The msgpack reading of a record, with every check it made."""
    try:
        record_mod._refuse(data)
    except ProtocolError:
        return None
    obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    if obj[3] == 0 and obj[2] and type(obj[4].get("nonce")) is not int:
        return None
    return TxRecord(*obj)


def same_record(data: bytes) -> None:
    want = reference_record(data)
    try:
        got = TxRecord.decode(data)
    except ProtocolError:
        assert want is None, data
        return
    assert got == want, data


def same_requests(frame: bytes) -> None:
    """read_requests (msgspec) against decode_request + batch_requests (msgpack)."""
    try:
        ref = decode_request(frame)
    except ProtocolError:
        if loose_batch(frame, "reqs"):
            try:
                read_requests(frame)
            except ProtocolError:
                return  # refused whole, as before (a bad item msgspec refuses too)
            return same_items(frame)
        with pytest.raises(ProtocolError):
            read_requests(frame)
        return
    got = read_requests(frame)
    if isinstance(ref, Request | RequestBatch):
        want = [ref] if isinstance(ref, Request) else batch_requests(ref)
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            if isinstance(w, BadItem):
                # The same item, the same msg_id; the wording may name msgspec's
                # type for an ext value (Ext) where msgpack's was ExtType.
                assert isinstance(g, BadItem) and g.msg_id == w.msg_id
                assert g.reason.split(":")[0] == w.reason.split(":")[0]
            else:
                assert not isinstance(g, BadItem)
                assert (g.client_id, g.msg_id, g.body, g.session) == (
                    w.client_id,
                    w.msg_id,
                    w.body,
                    w.session,
                )
    else:
        assert got == ref


def loose_batch(frame: bytes, tag: str) -> list[Any] | None:
    """The items of a batch msgpack refused whole because an item has a
    map key other than a string or bytes (strict_map_key). msgspec reads
    such a batch, and refuses that item alone, as it does an item of the
    wrong type: the other requests of the batch are served."""
    try:
        obj = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception:
        return None
    ok = type(obj) is list and len(obj) == 3 and obj[:2] == [V, tag] and type(obj[2]) is list
    return obj[2] if ok and 0 < len(obj[2]) <= 1024 else None


def same_items(frame: bytes) -> None:
    """A batch msgpack refused whole: each item is read as it is alone."""
    items = loose_batch(frame, "reqs")
    assert items is not None
    got = read_requests(frame)
    assert isinstance(got, list) and len(got) == len(items)
    for g, item in zip(got, items, strict=True):
        try:
            w = decode_request(packb(item))
        except ProtocolError:
            assert isinstance(g, BadItem)
            continue
        assert isinstance(w, Request) and not isinstance(g, BadItem)
        assert (g.client_id, g.msg_id, g.body, g.session) == (
            w.client_id,
            w.msg_id,
            w.body,
            w.session,
        )


def same_replies(frame: bytes) -> None:
    """read_replies (msgspec) against decode + batch_replies (msgpack)."""
    try:
        ref = decode(frame)
    except ProtocolError:
        ref = None
    got = read_replies(frame)
    if got is None:
        return  # the client reads it with decode and batch_replies: the reference
    items = loose_batch(frame, "reps") if ref is None else None
    if items is not None:  # refused whole by msgpack (see loose_batch)
        alone = [reply_alone(i) for i in items]
        assert got == ([r for r in alone if r is not None], alone.count(None))
        return
    if isinstance(ref, Reply):
        assert got == ([ref], 0)
    else:
        assert isinstance(ref, ReplyBatch), frame
        assert got == batch_replies(ref)


def reply_alone(item: object) -> Reply | None:
    """The reference's reading of one item of a batch, as a lone frame."""
    try:
        msg = decode(packb(item))
    except ProtocolError:
        return None
    return msg if isinstance(msg, Reply) else None


def req(body: object, mid: object = 7, cid: object = "c-1", session: object = 3) -> list[Any]:
    return [V, "req", cid, mid, body, session]


def rep(result: object, mid: object = 7, status: object = "ok") -> list[Any]:
    return [V, "rep", mid, status, result, 2, "a", True]


field = st.one_of(
    st.integers(-2, 2**64 - 1), st.text(max_size=3), st.none(), st.booleans(), st.just("ok"), wild
)


@FUZZ
@given(wild, field, field, st.sampled_from([None, 0, 1, 2, 4, 5]), st.data())
def test_requests_are_read_as_msgpack_read_them(
    body: Any, mid: Any, other: Any, spot: int | None, data: st.DataObject
) -> None:
    item = req(body if data.draw(st.booleans()) else {"k": body}, mid=mid)
    if spot is not None:
        item[spot] = other
    same_requests(packb(item))
    good = req({"op": "new", "qty": 1}, mid=70_001)
    n = data.draw(st.integers(0, 3))
    same_requests(packb([V, "reqs", [good] * n + [item] + [good]]))


@FUZZ
@given(wild, field, field, st.sampled_from([None, 0, 1, 3, 5, 6, 7]), st.data())
def test_replies_are_read_as_msgpack_read_them(
    result: Any, mid: Any, other: Any, spot: int | None, data: st.DataObject
) -> None:
    item = rep(result if data.draw(st.booleans()) else {"k": result}, mid=mid)
    if spot is not None:
        item[spot] = other
    same_replies(packb(item))
    good = rep({"order_id": 1, "fills": [{"qty": 1}]}, mid=70_001)
    same_replies(packb([V, "reps", [good, item, good]]))


@FUZZ
@given(wild, wild, wild, field, st.sampled_from([None, 0, 1, 2, 3, 6]))
def test_records_are_read_as_msgpack_read_them(
    body: Any, changes: Any, result: Any, other: Any, spot: int | None
) -> None:
    values: list[Any] = [70_000, 1, "c-1", 9, {"k": body}, [changes], "ok", {"r": result}]
    if spot is not None:
        values[spot] = other
    same_record(packb(values))


@pytest.mark.parametrize("i", range(0, 400, 7))
def test_real_frames_with_a_byte_flipped_are_read_as_msgpack_read_them(i: int) -> None:
    rng = random.Random(i)
    for frames, check in ((REQS, same_requests), (REPS, same_replies), (RECS, same_record)):
        f = bytearray(frames[i % len(frames)])
        for _ in range(3):
            f[rng.randrange(len(f))] = rng.randrange(256)
            check(bytes(f))


@pytest.mark.parametrize(
    "tree",
    [
        {"a": {1: "x"}},  # a nested int key: msgspec's Any gives it through
        {"a": [{None: 1}]},
        {"a": {"b": {(1, 2): 3}}},
        {"a": {b"k": 1}},
        {"a": nested(MAX_DEPTH)},
        {"a": msgpack.ExtType(1, b"x")},
    ],
    ids=["int-key", "nil-key-in-list", "array-key", "bytes-key", "too-deep", "ext"],
)
def test_trees_a_frame_must_not_carry_are_refused_by_every_fast_reader(tree: Any) -> None:
    with pytest.raises(ProtocolError):
        TxRecord.decode(packb([5, 1, "c-1", 4, {"op": "new"}, [], "ok", tree]))
    with pytest.raises(ProtocolError):
        read_requests(packb(req(tree)))
    got = read_requests(packb([V, "reqs", [req(tree)]]))
    assert isinstance(got, list) and len(got) == 1
    assert isinstance(got[0], BadItem) and got[0].msg_id == 7
    assert read_replies(packb(rep(tree))) is None  # left to decode(), which refuses it
    assert read_replies(packb([V, "reps", [rep(tree), rep({})]])) == (
        [Reply(7, "ok", {}, 2, "a", True)],
        1,
    )


def test_the_checks_catch_a_tree_test_that_skips_nested_maps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Plant the bug: plain_trees without its count of maps. A record whose
    result nests a map with an int key then gets through, and the tests
    above see it."""

    def no_map_count(frame: bytes, maps: int, arrays: int) -> bool:
        return typed.plain_trees(frame, 10**6, arrays)

    data = packb([5, 1, "c-1", 4, {"op": "new"}, [], "ok", {"a": {1: "x"}}])
    monkeypatch.setattr(record_mod, "plain_trees", no_map_count)
    assert TxRecord.decode(data).result == {"a": {1: "x"}}
    with pytest.raises(AssertionError):
        same_record(data)


def test_a_bad_record_names_what_is_wrong() -> None:
    """msgspec refuses, the msgpack reading says why as it always did."""
    with pytest.raises(ProtocolError, match="field of the wrong type"):
        TxRecord.decode(packb([5, 1, "c-1", 4, {}, [], "maybe", {}]))
    with pytest.raises(ProtocolError, match="not msgpack"):
        TxRecord.decode(b"\xc1")
    with pytest.raises(ProtocolError, match="no integer nonce"):
        TxRecord.decode(packb([5, 1, "c-1", 0, {}, [], "ok", {}]))


def in_maps(depth: int, leaf: Any = 1) -> Any:
    """A tree of `depth` levels of containers, maps and lists in turn."""
    tree: Any = leaf
    for level in range(depth):
        tree = {"k": tree} if level % 2 else [tree, "x"]
    return tree


@pytest.mark.parametrize(
    "depth",
    [
        1,
        typed.PLAIN_LEVELS - 1,
        typed.PLAIN_LEVELS,
        typed.PLAIN_LEVELS + 1,
        MAX_DEPTH,
        MAX_DEPTH + 1,
    ],
)
@pytest.mark.parametrize("leaf", [1, b"bin", 2**64 - 1, -(2**63), 1.5, None, "s"])
def test_trees_at_the_typed_depth_and_past_it_are_read_as_msgpack_reads_them(
    depth: int, leaf: Any
) -> None:
    """Plain trees the typed decoders prove (PlainValue) and the ones they
    leave to the walk (deeper, or holding bytes) give the reference's answer:
    accepted with the same values, or refused."""
    field: dict[str, Any] = {"t": in_maps(depth - 1, leaf)}
    same_record(packb([70_000, 1, "c-1", 9, field, [in_maps(depth - 1, leaf)], "ok", field]))
    same_replies(packb(rep(field)))
    same_replies(packb([V, "reps", [rep(field), rep({"fills": [{"qty": 1}]})]]))


@pytest.fixture
def loose_typed_trees(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant the bug: the typed decoders with `Any` trees (a typed tree that
    proves nothing), as if PlainValue let anything through."""

    class LooseRecord(TxRecord, frozen=True):
        body: dict[str, Any]
        changes: list[Any]
        result: dict[str, Any]

    monkeypatch.setattr(record_mod, "_decoder", msgspec.msgpack.Decoder(LooseRecord))
    monkeypatch.setattr(typed, "plain_reply_decoder", typed.reply_decoder)
    monkeypatch.setattr(typed, "plain_replies_decoder", typed.replies_decoder)


@pytest.mark.usefixtures("loose_typed_trees")
@pytest.mark.parametrize(
    "tree",
    [{"a": {1: "x"}}, {"a": [msgpack.ExtType(1, b"x")]}, {"a": nested(MAX_DEPTH)}],
    ids=["int-key", "ext", "too-deep"],
)
def test_the_checks_catch_a_typed_tree_that_proves_nothing(tree: Any) -> None:
    with pytest.raises(AssertionError):
        same_record(packb([5, 1, "c-1", 4, {"op": "new"}, [], "ok", tree]))
    with pytest.raises(AssertionError):
        same_replies(packb(rep(tree)))
    with pytest.raises(AssertionError):
        same_replies(packb([V, "reps", [rep(tree), rep({})]]))
