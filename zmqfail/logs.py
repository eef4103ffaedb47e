"""How a node logs: plain text (default) or one JSON object a line, and a
filter that keeps a repeating message from flooding the log.

Structured fields: a log call may pass any of `FIELDS` as `extra`, e.g.
``log.info("took over", extra=fields(epoch=2, state="backup_only"))``; a
context function given to `setup` stamps the node's current epoch, role and
state on every record that does not carry its own. JSON lines carry them as
keys; plain text leaves them out (its messages name the node already).

Rate limiting (`RepeatFilter`): while a peer is down a node may log the same
line ten times a second. Within each window (10 s by default) a message that
repeats word for word is let through once; messages from one logger with the
same template but different values (a changing LSN, say) get `burst` lines.
What is held back is counted, and the next line of that template let through
says how many were suppressed (`suppressed` in JSON, `[N similar suppressed]`
in text), as does `flush` at exit for templates that went quiet.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

FIELDS = ("node", "epoch", "role", "state", "peer", "link", "lsn")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")


def fields(**kw: Any) -> dict[str, Any]:
    """`extra` for a log call, refusing names that are not structured fields."""
    unknown = set(kw) - set(FIELDS)
    if unknown:
        raise ValueError(f"not log fields: {', '.join(sorted(unknown))}")
    return kw


class ContextFilter(logging.Filter):
    """Stamps the node's name and its current epoch/role/state on each record
    (values a call passed itself win)."""

    def __init__(self, node: str, context: Callable[[], Mapping[str, Any]] | None = None) -> None:
        super().__init__()
        self.node = node
        self.context = context

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.setdefault("node", self.node)
        if self.context is not None:
            try:
                ctx = self.context()
            except Exception:  # a log call must never fail because of its context
                ctx = {}
            for k, v in ctx.items():
                if k in FIELDS:
                    record.__dict__.setdefault(k, v)
        return True


def _passed_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: record.__dict__[k] for k in FIELDS if k in record.__dict__}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO 8601, UTC), level, logger, message,
    the structured fields present, `suppressed` and `exc` when there are."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(_passed_fields(record))
        suppressed = record.__dict__.get("suppressed")
        if suppressed:
            out["suppressed"] = suppressed
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """The classic line, plus `[N similar suppressed]` after a rate-limited run."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        suppressed = record.__dict__.get("suppressed")
        if suppressed:
            head, sep, rest = line.partition("\n")  # keep a traceback below the line
            line = f"{head} [{suppressed} similar suppressed]{sep}{rest}"
        return line


@dataclass
class _Window:
    start: float
    passed: int = 0
    texts: set[str] = field(default_factory=set)
    suppressed: int = 0  # since the last line of this template that went through
    last: str = ""  # the latest text held back, for `flush`


class RepeatFilter(logging.Filter):
    """Rate-limits by (logger, level, template); see the module docstring."""

    def __init__(
        self, window: float = 10.0, burst: int = 10, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        if window <= 0 or burst < 1:
            raise ValueError("window must be positive and burst at least 1")
        self.window, self.burst, self.clock = window, burst, clock
        self.keys: dict[tuple[str, int, str], _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        key = (record.name, record.levelno, str(record.msg))
        w = self.keys.get(key)
        if w is None or now - w.start >= self.window:
            held = w.suppressed if w is not None else 0
            w = self.keys[key] = _Window(now, suppressed=held)
        text = record.getMessage()
        if text in w.texts or w.passed >= self.burst:
            w.suppressed += 1
            w.last = text
            return False
        w.passed += 1
        w.texts.add(text)
        if w.suppressed:
            record.suppressed = w.suppressed
            w.suppressed = 0
        return True

    def pending(self) -> list[tuple[str, int, str, int]]:
        """(logger, level, latest text, count) of what is held back and not yet reported."""
        return [
            (n, lv, w.last, w.suppressed) for (n, lv, _), w in self.keys.items() if w.suppressed > 0
        ]

    def flush(self, handler: logging.Handler) -> None:
        """Report what is still held back (at exit): one line per template,
        the latest text with the count."""
        for (name, level, _), w in self.keys.items():
            if w.suppressed:
                rec = logging.LogRecord(name, level, __file__, 0, "%s", (w.last,), None)
                rec.suppressed = w.suppressed
                w.suppressed = 0
                for f in handler.filters:
                    if isinstance(f, ContextFilter):
                        f.filter(rec)
                handler.acquire()
                try:
                    handler.emit(rec)
                finally:
                    handler.release()


def setup(
    level: int,
    fmt: str = "text",
    node: str = "",
    rate_limit: bool = True,
    stream: IO[str] | None = None,
    context: Callable[[], Mapping[str, Any]] | None = None,
) -> tuple[logging.Handler, RepeatFilter | None]:
    """Install the node's log handler on the root logger (replacing any other);
    returns it and its repeat filter, for `RepeatFilter.flush` at exit."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter(node, context))
    limiter = RepeatFilter() if rate_limit else None
    if limiter is not None:
        handler.addFilter(limiter)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    return handler, limiter
