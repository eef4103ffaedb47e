"""The pure parts of `tools/bench` (closed-loop accounting, the batched bare
flow's framing, ratios and the table) and the codec study's self-check."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import msgpack
import pytest
from benchkit import bare
from benchkit.meter import Meter, Timing, ratio, summarize
from benchkit.report import add_ratios, format_table

from zmqfail.errors import ProtocolError
from zmqfail.protocol import PROTOCOL_VERSION, Reply, Request

pytestmark = pytest.mark.timeout(60)

ORDER = {"op": "new", "instrument": "ABC", "side": "buy", "qty": 10, "price": "10.00"}


# --- Meter ---------------------------------------------------------------------------


def test_meter_counts_only_replies_inside_the_measured_span() -> None:
    m = Meter(Timing(seconds=10.0, warmup=1.0), start=100.0)
    m.on_sent(1, 100.0)
    m.on_reply(1, 100.5, ok=True)  # warm-up: answered, not measured
    for i in range(2, 12):
        m.on_sent(i, 101.0 + i / 100)
    for i in range(2, 12):
        m.on_reply(i, 101.0 + i / 100 + 0.002 * i, ok=i != 5)  # latency 2i ms
    m.on_sent(12, 110.5)
    m.on_reply(12, 111.5, ok=True)  # after the span: answered, not measured
    row = summarize(m.result())
    assert row["sent"] == row["answered"] == 12 and row["unanswered"] == 0
    assert row["errors"] == 1
    assert row["throughput"] == 1  # 10 replies in 10 s
    # latencies 4..22 ms: the median is 12 ms, p99 the largest (within the
    # histogram's 1/256 relative error)
    assert row["p50_us"] == pytest.approx(12_000, rel=0.01)
    assert row["p99_us"] == pytest.approx(22_000, rel=0.01)


def test_meter_flags_a_reply_to_nothing_in_flight_and_keeps_unanswered() -> None:
    m = Meter(Timing(seconds=1.0, warmup=0.0), start=0.0)
    m.on_sent(1, 0.1)
    m.on_sent(2, 0.1)
    with pytest.raises(ValueError, match="already in flight"):
        m.on_sent(1, 0.2)
    m.on_reply(1, 0.2, ok=True)
    m.on_reply(1, 0.3, ok=True)  # a second reply to the same request
    row = summarize(m.result())
    assert (row["answered"], row["unanswered"], row["errors"]) == (1, 1, 1)
    assert m.in_flight == 1 and m.running(0.99) and not m.running(1.0)


def test_an_empty_run_has_no_percentiles() -> None:
    row = summarize(Meter(Timing(1.0, 0.0), 0.0).result())
    assert (row["throughput"], row["p50_us"], row["p99_us"]) == (0, None, None)


def test_ratio_is_none_without_a_base() -> None:
    assert ratio(30.0, 10.0) == 3.0
    assert ratio(None, 10.0) is None and ratio(3.0, None) is None and ratio(3.0, 0) is None


# --- batched flow framing ---------------------------------------------------------


def test_batched_requests_round_trip_each_as_its_own_request() -> None:
    items = [(7, ORDER), (8, {"op": "cancel", "order_id": 3})]
    got = bare.decode_requests(bare.encode_requests("c-1", items))
    assert got == [Request("c-1", 7, ORDER), Request("c-1", 8, {"op": "cancel", "order_id": 3})]


def test_batched_replies_round_trip_each_as_its_own_reply() -> None:
    reps = [[7, "ok", {"order_id": 1}, 1, "bare"], [8, "rejected", {}, 1, "bare"]]
    got = bare.decode_replies(bare.encode_replies(reps))
    assert got == [Reply(7, "ok", {"order_id": 1}, 1, "bare"), Reply(8, "rejected", {}, 1, "bare")]


def _frame(*fields: Any) -> bytes:
    return bytes(msgpack.packb(list(fields), use_bin_type=True))


V = PROTOCOL_VERSION


@pytest.mark.parametrize(
    "frame",
    [
        _frame(V, "reqs", "c-1", [[1, ORDER], [0, ORDER]]),  # one bad msg_id refuses all
        _frame(V, "reqs", "c-1", [[1, ORDER], [2, {"x": {1: 2}}]]),  # nested non-str key
        _frame(V, "reqs", "", [[1, ORDER]]),  # empty client id
        _frame(V, "reqs", "c-1", [[1, ORDER, 3]]),
        _frame(V, "reqs", "c-1", []),
        _frame(V, "reps", "c-1", [[1, ORDER]]),  # the reply tag
        _frame(V + 1, "reqs", "c-1", [[1, ORDER]]),
        _frame(V, "req", "c-1", 1, ORDER),  # a lone request is not a batch
        b"\xc1",
    ],
)
def test_a_bad_request_batch_is_refused_whole(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        bare.decode_requests(frame)


@pytest.mark.parametrize(
    "frame",
    [
        _frame(V, "reps", [[1, "maybe", {}, 1, "bare"]]),
        _frame(V, "reps", [[1, "ok", {}, 1]]),
        _frame(V, "reps", []),
        _frame(V, "reqs", [[1, "ok", {}, 1, "bare"]]),
    ],
)
def test_a_bad_reply_batch_is_refused(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        bare.decode_replies(frame)


# --- ratios and the table ----------------------------------------------------------


def _row(flow: str, window: int, tput: int, p50: int, p99: int, hogs: int = 0) -> dict[str, Any]:
    return {
        "flow": flow,
        "window": window,
        "hogs": hogs,
        "throughput": tput,
        "p50_us": p50,
        "p99_us": p99,
    }


def test_ratios_are_to_the_normal_state_at_the_same_window_and_hogs() -> None:
    rows = [
        _row("normal", 64, 5_000, 10_000, 20_000),
        _row("batched", 64, 50_000, 1_000, 2_000),
        _row("normal", 64, 2_500, 20_000, 80_000, hogs=2),
        {**_row("batched", 64, 25_000, 2_000, 4_000, hogs=2), "cpu_us": 61.4},
        _row("bare", 1, 3_000, 300, 500),  # no normal row at window 1
    ]
    add_ratios(rows)
    batched, hogged = rows[1], rows[3]
    assert batched["x_normal_throughput"] == 10.0 and batched["x_normal_p99_us"] == 0.1
    assert hogged["x_normal_throughput"] == 10.0 and hogged["x_quiet"] == 0.5
    assert rows[2]["x_quiet"] == 0.5 and rows[0]["x_quiet"] is None
    assert rows[4]["x_normal_throughput"] is None
    skipped = [{"flow": "redis", "status": "skipped", "reason": "redis-server is not installed"}]
    table = format_table(rows, skipped)
    lines = table.splitlines()
    assert lines[0].startswith("| flow | in flight | hogs | req/s | x normal |")
    assert (
        "| batched | 64 | 2 | 25,000 | 10.00x | 2.00 ms | 0.10x | 4.00 ms | 0.05x | 61 us | 0.50x |"
        in lines
    )
    assert lines[2].startswith("| bare | 1 | 0 | 3,000 | - | 300 us |")
    assert table.endswith("redis: skipped: redis-server is not installed")


# --- codec study --------------------------------------------------------------------

needs_msgspec = pytest.mark.skipif(
    importlib.util.find_spec("msgspec") is None, reason="msgspec (the bench extra) not installed"
)


@needs_msgspec
def test_codec_study_self_check_passes_and_catches_planted_differences(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import codec_bench
    import msgspec

    corpus = codec_bench.make_corpus(300)
    assert len(corpus.record_frames) > 200 and codec_bench.self_check(corpus) == []
    # Planted: a request struct that lets extra trailing fields through.
    loose = msgspec.defstruct(
        "Loose",
        [(f.name, f.type) for f in msgspec.structs.fields(codec_bench.RequestS)],
        array_like=True,
        frozen=True,
    )
    monkeypatch.setattr(codec_bench, "_req_dec", msgspec.msgpack.Decoder(loose))
    assert any("bad request frame not refused" in p for p in codec_bench.self_check(corpus))
    monkeypatch.undo()
    # Planted: an encoder whose bytes differ (a trailing nil).
    real = codec_bench.ms_encode
    monkeypatch.setattr(codec_bench, "ms_encode", lambda v: real(v) + b"\xc0")
    assert any("bytes differ" in p for p in codec_bench.self_check(corpus))
    monkeypatch.undo()
    # Planted: the tree check left out of the record decoder.
    monkeypatch.setattr(codec_bench, "check_tree", lambda tree, what: None)
    assert any("bad record frame not refused" in p for p in codec_bench.self_check(corpus))


def test_a_failed_or_missing_flow_is_noted_and_the_run_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import contextlib
    from collections.abc import Iterator

    from benchkit import report
    from benchkit.peers import Skip
    from benchkit.procs import BenchError, Reaper

    def fake_result(window: int, timing: Timing) -> dict[str, Any]:
        m = Meter(timing, 0.0)
        m.on_sent(1, 0.5)
        m.on_reply(1, 0.6, ok=True)
        return m.result()

    @contextlib.contextmanager
    def fake_open(name: str, reaper: Reaper, workdir: Path) -> Iterator[Any]:
        if name == "redis":
            raise Skip("redis-server is not installed")
        if name == "single":
            raise BenchError("node a did not become ready")
        yield fake_result

    monkeypatch.setattr(report, "open_flow", fake_open)
    said: list[str] = []
    rows, skipped = report.run_flows(
        ["single", "normal", "redis"], [1, 4], Timing(1.0, 0.1), 0, Reaper(), tmp_path, said.append
    )
    assert [(r["flow"], r["window"]) for r in rows] == [("normal", 1), ("normal", 4)]
    assert skipped == [
        {"flow": "single", "status": "failed", "reason": "node a did not become ready"},
        {"flow": "redis", "status": "skipped", "reason": "redis-server is not installed"},
    ]
    assert "   single: failed: node a did not become ready" in said
