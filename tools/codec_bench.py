"""msgspec against the project's msgpack codec, on the hot path's messages
(issue 10 item 2). Standalone: `.venv/bin/python tools/codec_bench.py`
(msgspec comes with the `bench` extra: .venv/bin/pip install -e '.[bench]').

The corpus is what the hot path really carries: random limit orders run
through the real Processor give the request frames, the transaction records
and the reply frames. Each operation is timed both ways on the same items:

  request encode   client:  Request(...).encode()
  request decode   primary: protocol.decode_request
  record encode    primary: txlog.record.encode_record
  record decode    backup, recovery: TxRecord.decode
  reply encode     primary: protocol.encode_reply
  reply decode     client:  protocol.decode

The msgspec side keeps the project's validation: typed array-like structs
check the version, the tag, the field count and each field's type and bounds
while decoding (in C); what structs cannot say about the free-form maps
(string keys at every level, no extension types, at most MAX_DEPTH levels) is
still checked by protocol.check_tree. Before timing, a self-check proves both
codecs give the same values and the same bytes on the corpus and refuse the
same bad frames; the script stops with exit 1 if they do not.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import msgpack

try:
    import msgspec
except ImportError:
    sys.exit("codec_bench: msgspec is not installed: .venv/bin/pip install -e '.[bench]'")

from zmqfail import config
from zmqfail.cli.demo import random_order
from zmqfail.errors import ProtocolError
from zmqfail.processor import Processor
from zmqfail.protocol import (
    MAX_ID_LEN,
    PROTOCOL_VERSION,
    REPLY_STATUSES,
    Reply,
    Request,
    check_tree,
    decode,
    decode_request,
    encode_reply,
)
from zmqfail.protocol.typed import Id, Positive, Status, UInt, Version
from zmqfail.txlog.record import REGISTER, TxRecord, encode_record

# --- the msgspec codec -----------------------------------------------------------

# The project's own field types (protocol.typed), so both sides check alike.
Name = Annotated[str, msgspec.Meta(max_length=MAX_ID_LEN)]


# defstruct rather than class statements: the checks (mypy --strict) must pass
# with and without the bench extra installed, and a class cannot subclass an
# unknown type.


def _struct(name: str, fields: list[tuple[str, Any]]) -> Any:
    """An array-like frozen struct: a msgpack array of exactly these fields."""
    return msgspec.defstruct(name, fields, array_like=True, frozen=True, forbid_unknown_fields=True)


RequestS = _struct(
    "RequestS",
    [
        ("version", Version),
        ("type", Literal["req"]),
        ("client_id", Id),
        ("msg_id", Positive),
        ("body", dict[str, Any]),
        ("session", UInt),
    ],
)
ReplyS = _struct(
    "ReplyS",
    [
        ("version", Version),
        ("type", Literal["rep"]),
        ("msg_id", UInt),
        ("status", Status),
        ("result", dict[str, Any]),
        ("epoch", UInt),
        ("server", Id),
        ("logged", bool),
    ],
)
TxRecordS = _struct(
    "TxRecordS",
    [
        ("lsn", Positive),
        ("epoch", UInt),
        ("client_id", Name),  # "" for system records
        ("msg_id", UInt),
        ("body", dict[str, Any]),
        ("changes", list[Any]),
        ("status", Status),
        ("result", dict[str, Any]),
    ],
)


_ERRORS = (msgspec.ValidationError, msgspec.DecodeError)
_req_dec = msgspec.msgpack.Decoder(RequestS)
_rep_dec = msgspec.msgpack.Decoder(ReplyS)
_rec_dec = msgspec.msgpack.Decoder(TxRecordS)
_enc = msgspec.msgpack.Encoder()
ms_encode: Callable[[Any], bytes] = _enc.encode


def _typed(decoder: Any, frame: bytes, what: str) -> Any:
    try:
        return decoder.decode(frame)
    except _ERRORS as exc:
        raise ProtocolError(f"bad {what}: {exc}") from None


def ms_decode_request(frame: bytes, trees: bool = True) -> Any:
    """The fast path of decode_request: a frame that is not a valid `req`
    falls back to the generic decoder (which raises, or returns a hello)."""
    try:
        r: Any = _req_dec.decode(frame)
    except _ERRORS:
        decode(frame)  # a hello, or the proper ProtocolError
        raise ProtocolError("not a request") from None
    if trees:
        check_tree(r.body, "body")
    return r


def ms_decode_reply(frame: bytes, trees: bool = True) -> Any:
    r = _typed(_rep_dec, frame, "reply")
    if trees:
        check_tree(r.result, "result")
    return r


def ms_decode_record(data: bytes, trees: bool = True) -> Any:
    r = _typed(_rec_dec, data, "transaction record")
    if trees:
        for name, tree in (("body", r.body), ("changes", r.changes), ("result", r.result)):
            check_tree(tree, f"transaction record {name}")
    if r.msg_id == REGISTER and r.client_id and type(r.body.get("nonce")) is not int:
        raise ProtocolError(f"register record {r.lsn} has no integer nonce")
    return r


def ms_to_request(frame: bytes) -> Request:
    """msgspec decode, then the project's frozen dataclass (if the node kept it)."""
    r = ms_decode_request(frame)
    return Request(r.client_id, r.msg_id, r.body, r.session)


# --- the corpus ------------------------------------------------------------------


@dataclass
class Corpus:
    requests: list[tuple[str, int, dict[str, Any], int]]
    request_frames: list[bytes]
    records: list[tuple[Any, ...]]
    record_frames: list[bytes]
    replies: list[tuple[int, str, dict[str, Any], int, str, bool]]
    reply_frames: list[bytes]


def make_corpus(n: int, seed: int = 1) -> Corpus:
    """``n`` random orders of one client, in its session, through the real
    Processor (about a third fill)."""
    rng = random.Random(seed)
    proc = Processor.create(config.load_default(), "a", 1)
    c = Corpus([], [], [], [], [], [])
    client_id = f"c-{rng.getrandbits(64):016x}"
    session = proc.register(client_id, rng.getrandbits(32)).gate_lsn  # its record's LSN
    for mid in range(1, n + 1):
        body = random_order(rng, config.DEFAULT_INSTRUMENTS)
        c.requests.append((client_id, mid, body, session))
        c.request_frames.append(Request(client_id, mid, body, session).encode())
        out = proc.submit(client_id, mid, body, session)
        rep = decode(out.reply)
        assert isinstance(rep, Reply) and rep.status != "expired"
        c.replies.append((rep.msg_id, rep.status, rep.result, rep.epoch, rep.server, rep.logged))
        c.reply_frames.append(out.reply)
        if out.record is not None:
            c.record_frames.append(out.record)
            c.records.append(tuple(msgpack.unpackb(out.record)))
    return c


# --- self-check: same values, same bytes, same refusals -----------------------------


def _frame(*fields: Any) -> bytes:
    return bytes(msgpack.packb(list(fields), use_bin_type=True))


def bad_frames() -> dict[str, list[bytes]]:
    """Frames each decoder must refuse, one per rule the project checks."""
    v, cid, body = PROTOCOL_VERSION, "c-1", {"op": "new"}
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(40):
        node["x"] = {}
        node = node["x"]
    ext = msgpack.ExtType(5, b"x")
    req = [
        _frame(v + 1, "req", cid, 1, body, 0),
        _frame(v, "req", cid, True, body, 0),
        _frame(v, "req", cid, 0, body, 0),
        _frame(v, "req", "", 1, body, 0),
        _frame(v, "req", "x" * (MAX_ID_LEN + 1), 1, body, 0),
        _frame(v, "req", cid, 1, [1], 0),
        _frame(v, "req", cid, 1, body, -1),
        _frame(v, "req", cid, 1, body),
        _frame(v, "req", cid, 1, body, 0, 5),
        _frame(v, "req", cid, 1, {"o": deep}, 0),
        _frame(v, "req", cid, 1, {"o": {1: 2}}, 0),
        _frame(v, "req", cid, 1, {"o": [ext]}, 0),
        b"\xc1",
        b"",
    ]
    rep = [
        _frame(v, "rep", 1, "maybe", {}, 1, "a", True),
        _frame(v, "rep", -1, "ok", {}, 1, "a", True),
        _frame(v, "rep", 1, "ok", {}, 1, "", True),
        _frame(v, "rep", 1, "ok", {"o": deep}, 1, "a", True),
        _frame(v, "rep", 1, "ok", {}, 1, "a"),
        _frame(v, "rep", 1, "ok", {}, 1, "a", 1),
        _frame(v + 1, "rep", 1, "ok", {}, 1, "a", True),
        _frame(v, "ctl", 1, "ok", {}, 1, "a", True),
    ]
    rec = [
        _frame(0, 1, cid, 1, body, [], "ok", {}),
        _frame(1, 1, cid, 1, body, [], "done", {}),
        _frame(1, 1, cid, 1, body, {}, "ok", {}),
        _frame(1, True, cid, 1, body, [], "ok", {}),
        _frame(1, 1, cid, 1, body, [[ext]], "ok", {}),
        _frame(1, 1, cid, 1, body, [], "ok"),
        _frame(1, 1, cid, REGISTER, {"nonce": "7"}, [], "ok", {}),
    ]
    return {"request": req, "reply": rep, "record": rec}


def _refuses(fn: Callable[[bytes], Any], frame: bytes) -> bool:
    try:
        fn(frame)
    except ProtocolError:
        return True
    return False


def self_check(c: Corpus) -> list[str]:
    """Differences between the two codecs; empty when they agree."""
    problems: list[str] = []
    if set(get_args(Status)) != REPLY_STATUSES:
        problems.append("msgspec Status literals differ from protocol.REPLY_STATUSES")
    for f in c.request_frames:
        a, b = decode_request(f), ms_decode_request(f)
        assert isinstance(a, Request)
        if (a.client_id, a.msg_id, a.body) != (b.client_id, b.msg_id, b.body):
            problems.append(f"request decodes differ: {f!r:.80}")
        if ms_encode(b) != f:
            problems.append(f"request bytes differ: {f!r:.80}")
    for values, f in zip(c.records, c.record_frames, strict=True):
        if ms_encode(values) != f or encode_record(*values) != f:
            problems.append(f"record bytes differ: {f!r:.80}")
        if msgspec.structs.astuple(ms_decode_record(f)) != msgspec.structs.astuple(
            TxRecord.decode(f)
        ):
            problems.append(f"record decodes differ: {f!r:.80}")
    for rv, f in zip(c.replies, c.reply_frames, strict=True):
        if ms_encode([PROTOCOL_VERSION, "rep", *rv]) != f:
            problems.append(f"reply bytes differ: {f!r:.80}")
        r = ms_decode_reply(f)
        if (r.msg_id, r.status, r.result, r.epoch, r.server, r.logged) != rv:
            problems.append(f"reply decodes differ: {f!r:.80}")
    pairs: dict[str, tuple[Callable[[bytes], Any], Callable[[bytes], Any]]] = {
        "request": (decode_request, ms_decode_request),
        "reply": (decode, ms_decode_reply),
        "record": (TxRecord.decode, ms_decode_record),
    }
    for kind, frames in bad_frames().items():
        project, ms = pairs[kind]
        for f in frames:
            if not _refuses(project, f) or not _refuses(ms, f):
                problems.append(f"bad {kind} frame not refused by both: {f!r:.80}")
    return problems


# --- timing ------------------------------------------------------------------------


CHUNK = 250  # items per timed slice: short enough to fit between preemptions


def per_item_ns(fns: list[Callable[[Any], Any]], items: list[Any], repeat: int) -> list[float]:
    """ns per item for each of ``fns`` over the same ``items``.

    The machine is shared: a long pass is always preempted somewhere. So the
    items are timed in short slices, the functions take turns slice by slice
    (whatever else runs hits them alike), each slice keeps its fastest of
    ``repeat`` runs, and the slices add up. GC is off while timing."""
    chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
    best = [[float("inf")] * len(chunks) for _ in fns]
    gc.disable()
    try:
        for _ in range(repeat):
            for j, chunk in enumerate(chunks):
                for k, fn in enumerate(fns):
                    t0 = time.perf_counter_ns()
                    for it in chunk:
                        fn(it)
                    best[k][j] = min(best[k][j], time.perf_counter_ns() - t0)
    finally:
        gc.enable()
    return [sum(b) / len(items) for b in best]


Case = tuple[
    str, Callable[[Any], Any], Callable[[Any], Any], Callable[[Any], Any] | None, list[Any]
]


def cases(c: Corpus) -> Iterable[Case]:
    """(step, the project's function, msgspec's with the same checks, msgspec's
    without check_tree or None, items), one per hot-path step."""
    v = PROTOCOL_VERSION
    yield (
        "request encode (client)",
        lambda r: Request(*r).encode(),
        lambda r: ms_encode(RequestS(v, "req", *r)),
        None,
        c.requests,
    )
    yield (
        "request decode (primary)",
        decode_request,
        ms_decode_request,
        lambda f: ms_decode_request(f, False),
        c.request_frames,
    )
    yield (
        "request decode into the Request dataclass",
        decode_request,
        ms_to_request,
        None,
        c.request_frames,
    )
    yield "record encode (primary)", lambda r: encode_record(*r), ms_encode, None, c.records
    yield (
        "record decode (backup, recovery)",
        TxRecord.decode,
        ms_decode_record,
        lambda f: ms_decode_record(f, False),
        c.record_frames,
    )
    yield (
        "reply encode (primary)",
        lambda r: encode_reply(*r),
        lambda r: ms_encode([v, "rep", *r]),
        None,
        c.replies,
    )
    yield (
        "reply decode (client)",
        decode,
        ms_decode_reply,
        lambda f: ms_decode_reply(f, False),
        c.reply_frames,
    )
    yield (
        "unpack a record, no checks at all",
        lambda f: msgpack.unpackb(f, raw=False, strict_map_key=True, use_list=True),
        msgspec.msgpack.decode,
        None,
        c.record_frames,
    )


def _us(ns: float) -> str:
    return f"{ns / 1000:.2f} us"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--orders", type=int, default=20_000, help="corpus size (default 20000)")
    ap.add_argument("--repeat", type=int, default=7, help="runs per slice, fastest counts")
    args = ap.parse_args(argv)
    c = make_corpus(args.orders)
    problems = self_check(c)
    if problems:
        for p in problems[:20]:
            print(f"codec_bench: {p}", file=sys.stderr)
        return 1
    print(
        f"self-check: {len(c.request_frames)} requests, {len(c.record_frames)} records, "
        f"{len(c.reply_frames)} replies decode to the same values and encode to the same "
        f"bytes both ways; every bad frame is refused by both"
    )
    print(f"msgpack {'.'.join(map(str, msgpack.version))}, msgspec {msgspec.__version__}")
    print(
        "\n| step | msgpack (project) | msgspec, same checks | speed-up | msgspec, no check_tree |"
    )
    print("|---|---|---|---|---|")
    shares = []
    for name, project, ms, bare_ms, items in cases(c):
        fns = [project, ms] + ([bare_ms] if bare_ms else [])
        t = per_item_ns(fns, items, args.repeat)
        no_tree = _us(t[2]) if bare_ms else "-"
        row = f"| {name} | {_us(t[0])} | {_us(t[1])} | {t[0] / t[1]:.2f}x | {no_tree} |"
        print(row, flush=True)
        if bare_ms:
            shares.append(f"{name}: {_us(t[1] - t[2])} of {_us(t[1])}")
    print("\ncheck_tree's share of the msgspec decode (same run):\n  " + "\n  ".join(shares))
    return 0


if __name__ == "__main__":
    sys.exit(main())
