"""`plain_frame`: the byte scan that lets a record's decode skip the walk of
`check_tree`. It may say False for a frame that is fine (then the walk
runs); it must never say True for a frame holding anything the walk refuses.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmqfail.errors import ProtocolError
from zmqfail.protocol import MAX_DEPTH, check_tree, plain_frame
from zmqfail.protocol.base import _CONTAINER, _EXT_OR_BIN
from zmqfail.txlog.record import TxRecord, encode_record

pytestmark = pytest.mark.timeout(120)

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=6)
    | st.binary(max_size=6)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4))
    | st.datetimes(timezones=st.just(datetime.UTC)).map(msgpack.Timestamp.from_datetime)
)
keys = st.text(max_size=4) | st.binary(max_size=4)
trees = st.recursive(
    leaves,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(keys, kids, max_size=4),
    max_leaves=30,
)


def nested(tree: Any, levels: int) -> Any:
    for _ in range(levels):
        tree = [tree]
    return tree


def walk_passes(frame: bytes) -> bool:
    root = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    try:
        check_tree(root, "tree")
    except ProtocolError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(tree=trees, levels=st.integers(0, MAX_DEPTH + 3))
def test_a_plain_frame_always_passes_the_walk(tree: Any, levels: int) -> None:
    frame = msgpack.packb(nested([tree], levels), use_bin_type=True)
    if plain_frame(frame):
        assert walk_passes(frame)


REFUSED = {
    "ext": [msgpack.ExtType(5, b"x")],
    "timestamp": [msgpack.Timestamp(1, 0)],
    "bytes key": [{b"k": 1}],
    "too deep": nested([], MAX_DEPTH),
}


@pytest.mark.parametrize("what", sorted(REFUSED))
def test_what_the_walk_refuses_is_never_plain(what: str) -> None:
    frame = msgpack.packb(REFUSED[what], use_bin_type=True)
    assert not walk_passes(frame)
    assert not plain_frame(frame)


def _without(drop: bytes) -> Callable[[bytes], bool]:
    """plain_frame with some type bytes no longer looked for: a planted bug."""
    keep = bytes(b for b in _EXT_OR_BIN if b not in drop)
    others = bytes(b for b in range(256) if b not in keep + _CONTAINER)

    def planted(frame: bytes) -> bool:
        marks = frame.translate(None, others)
        return len(marks) <= MAX_DEPTH and not marks.translate(None, _CONTAINER)

    return planted


@pytest.mark.parametrize(
    ("what", "drop"),
    [("ext", bytes((0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xC7))), ("bytes key", bytes((0xC4,)))],
)
def test_a_scan_that_misses_a_type_byte_is_caught(what: str, drop: bytes) -> None:
    frame = msgpack.packb(REFUSED[what], use_bin_type=True)
    assert _without(drop)(frame) and not walk_passes(frame)


def test_a_typical_order_record_skips_the_walk_and_decodes_the_same() -> None:
    body = {"op": "new", "instrument": "ABC", "side": "buy", "type": "limit", "qty": 5}
    changes = [["put", "orders", 77, [77, "c-1", "ABC", "buy", "limit", 1010, 5, 0, "new"]]]
    result = {"order_id": 77, "status": "new", "filled": 0, "remaining": 5, "fills": []}
    data = encode_record(78, 1, "c-1", 77, body, changes, "ok", result)
    assert plain_frame(data)
    rec = TxRecord.decode(data)
    assert (rec.body, rec.changes, rec.result) == (body, changes, result)


def test_a_record_with_a_bytes_key_is_still_refused() -> None:
    """The fast path must not let through what the walk refused before."""
    data = msgpack.packb([5, 1, "c-1", 4, {b"op": "new"}, [], "ok", {}], use_bin_type=True)
    with pytest.raises(ProtocolError, match="map key that is not a string"):
        TxRecord.decode(data)
