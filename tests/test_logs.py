"""Node logs: JSON lines with the node's fields, plain text by default, and
repeated lines held back and counted (with an injected clock)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Procs

from zmqfail import config, logs
from zmqfail.cluster import Cluster
from zmqfail.failover.state import State
from zmqfail.netutil import free_base_port

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("zmqfail.test.logs")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for h in list(log.handlers):
        log.removeHandler(h)


def capture(
    log: logging.Logger, fmt: str, limiter: logs.RepeatFilter | None = None
) -> tuple[io.StringIO, logging.Handler]:
    buf = io.StringIO()
    h = logging.StreamHandler(buf)
    h.setFormatter(logs.JsonFormatter() if fmt == "json" else logs.TextFormatter())
    state = {"epoch": 3, "role": "primary", "state": "backup_only"}
    h.addFilter(logs.ContextFilter("b", lambda: state))
    if limiter is not None:
        h.addFilter(limiter)
    log.addHandler(h)
    return buf, h


def test_json_lines_carry_the_node_and_its_state(logger: logging.Logger) -> None:
    buf, _ = capture(logger, "json")
    logger.info("%s link to %s timed out; reset", "main", "a")
    logger.warning("refused record", extra=logs.fields(lsn=41, peer="a", epoch=2))
    try:
        raise ValueError("bad frame")
    except ValueError:
        logger.exception("decoder failed")
    first, second, third = (json.loads(line) for line in buf.getvalue().splitlines())
    assert first["message"] == "main link to a timed out; reset"
    assert (first["node"], first["epoch"], first["role"], first["state"]) == (
        "b",
        3,
        "primary",
        "backup_only",
    )
    assert first["level"] == "info" and first["logger"] == "zmqfail.test.logs"
    assert first["time"].endswith("Z") and "T" in first["time"]
    # What a call passes wins over the context.
    assert (second["lsn"], second["peer"], second["epoch"]) == (41, "a", 2)
    assert "ValueError: bad frame" in third["exc"]
    with pytest.raises(ValueError, match="not log fields"):
        logs.fields(color="red")


def test_plain_text_stays_the_classic_line(logger: logging.Logger) -> None:
    buf, _ = capture(logger, "text")
    logger.info("b: normal -> backup_only")
    line = buf.getvalue().strip()
    assert line.endswith(" INFO zmqfail.test.logs: b: normal -> backup_only")
    assert "{" not in line


def test_a_storm_of_one_line_is_logged_once_per_window_with_its_count(
    logger: logging.Logger,
) -> None:
    clock = Clock()
    limiter = logs.RepeatFilter(window=10.0, burst=10, clock=clock)
    buf, _ = capture(logger, "text", limiter)
    for i in range(100):  # 10 a second while a peer is down
        clock.now = i * 0.1
        logger.info("%s: %s link to %s timed out; reset", "b", "main", "a")
    assert buf.getvalue().count("timed out") == 1
    clock.now = 10.05
    logger.info("%s: %s link to %s timed out; reset", "b", "main", "a")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].endswith("timed out; reset [99 similar suppressed]")
    # Another message is not held back by the storm.
    logger.warning("b: backup a silent on every link; running alone")
    assert "running alone" in buf.getvalue()


def test_one_template_with_changing_values_gets_a_burst(logger: logging.Logger) -> None:
    clock = Clock()
    limiter = logs.RepeatFilter(window=10.0, burst=3, clock=clock)
    buf, handler = capture(logger, "json", limiter)
    for lsn in range(1, 8):
        logger.warning("refused record %d", lsn)
    shown = [json.loads(line)["message"] for line in buf.getvalue().splitlines()]
    assert shown == ["refused record 1", "refused record 2", "refused record 3"]
    assert limiter.pending() == [("zmqfail.test.logs", logging.WARNING, "refused record 7", 4)]
    # At exit, what is still held back is reported, once.
    limiter.flush(handler)
    limiter.flush(handler)
    last = json.loads(buf.getvalue().splitlines()[-1])
    assert (last["message"], last["suppressed"], last["node"]) == ("refused record 7", 4, "b")
    assert len(buf.getvalue().splitlines()) == 4 and limiter.pending() == []


def test_setup_replaces_the_root_handlers() -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        buf = io.StringIO()
        handler, limiter = logs.setup(logging.INFO, "json", "a", True, buf)
        assert root.handlers == [handler] and limiter in handler.filters
        logging.getLogger("zmqfail.x").debug("not at info")
        logging.getLogger("zmqfail.x").info("hello")
        assert json.loads(buf.getvalue()) == {**json.loads(buf.getvalue()), "node": "a"}
        assert buf.getvalue().count("\n") == 1
        _, none = logs.setup(logging.INFO, "text", "a", False, buf)
        assert none is None
        with pytest.raises(ValueError, match="log format"):
            logs.setup(logging.INFO, "xml")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
        root.setLevel(level)


def test_a_node_logs_json_lines(tmp_path: Path, procs: Procs) -> None:
    cfg_path = tmp_path / "zmqfail.toml"
    cfg_path.write_text(config.render(nodes=1, base_port=free_base_port(30)))
    cfg = config.load(cfg_path)
    procs.start("node", "--config", str(cfg_path), "--name", "a", "--log-format", "json", log="a")
    Cluster(cfg).wait("a", State.PRIMARY_ONLY)  # serving
    lines = [line for line in procs.log_text("a").splitlines() if line.strip()]
    objs = [json.loads(line) for line in lines]  # every line is one JSON object
    assert objs and all(o["node"] == "a" for o in objs)
    assert any(o.get("state") for o in objs)
