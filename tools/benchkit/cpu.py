"""`tools/bench cpu`: where each process's CPU goes, per acknowledged request.

On the 2-core machine the normal state at 64 in flight runs its client,
primary and backup on two cores, so its throughput is bounded by the CPU
the three spend per request, and its tail by how close to both cores that
brings them. This says where that CPU goes: a pair in the normal state is
loaded as in the `normal` flow, with a tracer (benchkit/traced.py) that
times, in thread CPU time (so being descheduled does not count), each
server's whole loop and the parts of it named in `SECTIONS`, and the
collector's runs; the client's process CPU is read around its run.

Figures are microseconds of CPU per record the server wrote or held over
its whole run (the warm-up and the drain included), and calls per record.
Sections nest (`requests` holds `processor`, which holds `application`):
the indentation says which; on the backup, `application apply` is inside
`apply record`, and the collector runs inside whichever section
allocated. Each timed call costs about half a microsecond more than it
would untimed, so sections called once per request read a little high.
CPU time is what a noisy machine moves least; still, compare the ratios of
one run (this tree against another through PYTHONPATH, say), never the
figures of two runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .meter import Timing, summarize
from .procs import BenchError, Reaper
from .traced import run_loaded

# (label, depth, module, class, method): what the tracer times, in the
# order the report prints, nested by depth. The application's own calls are
# timed on the class of the node's application, whatever it is.
SECTIONS: list[tuple[str, int, str, str, str]] = [
    ("loop", 0, "zmqfail.node.server", "Node", "run"),
    ("poll", 1, "zmq", "Poller", "poll"),
    ("turn", 1, "zmqfail.node.server", "Node", "_turn"),
    ("read frames", 2, "zmqfail.core.frontend", "Frontend", "_on_frame"),
    ("requests", 2, "zmqfail.core.frontend", "Frontend", "_on_request"),
    ("processor", 3, "zmqfail.processor", "Processor", "submit"),
    ("log write", 3, "zmqfail.core.log", "NodeLog", "write"),
    ("replies", 2, "zmqfail.core.frontend", "Frontend", "commit"),
    ("commit answers", 2, "zmqfail.core.node", "NodeCore", "on_ack"),
    ("records in", 2, "zmqfail.core.follower", "Follower", "on_records"),
    ("records out", 2, "zmqfail.core.leader", "Leader", "pump"),
    ("heartbeats", 2, "zmqfail.core.node", "NodeCore", "on_heartbeats"),
    ("slow tick", 2, "zmqfail.core.node", "NodeCore", "_slow_tick"),
    ("carry", 1, "zmqfail.node.server", "Node", "_carry"),
    ("apply held", 1, "zmqfail.core.node", "NodeCore", "after_send"),
    ("apply record", 2, "zmqfail.processor", "Processor", "apply_record"),
]
APP_SECTIONS = [("application", "execute"), ("application apply", "apply")]

# Installed as sitecustomize.py for the servers of the run only.
TRACER = f"""
import gc, importlib
if TRACING:
    _tt = time.thread_time
    _acc = {{}}
    def _timed(cls, method, label):
        real = getattr(cls, method)
        def timed(*args, **kwargs):
            c = _tt()
            try:
                return real(*args, **kwargs)
            finally:
                v = _acc.setdefault(label, [0.0, 0])
                v[0] += _tt() - c
                v[1] += 1
        setattr(cls, method, timed)
    for _label, _depth, _mod, _cls, _meth in {SECTIONS!r}:
        _timed(getattr(importlib.import_module(_mod), _cls), _meth, _label)
    _gc = [0.0, 0.0]
    def _collected(phase, info):
        if phase == "start":
            _gc[1] = _tt()
        else:
            _gc[0] += _tt() - _gc[1]
    gc.callbacks.append(_collected)
    import zmqfail.node.server as _srv
    _open = _srv.Node.open
    _held = [0, 0, 0.0]
    def _opened(self):
        _open(self)
        app = type(self.core.nlog.proc.app)
        for _label, _meth in {APP_SECTIONS!r}:
            _timed(app, _meth, _label)
        _held[0] = self.core.nlog.held
        _held[2] = time.process_time()
    _srv.Node.open = _opened
    _run = _srv.Node.run
    def _ran(self):
        try:
            return _run(self)
        finally:
            _held[1] = self.core.nlog.held
            _held[2] = time.process_time() - _held[2]
    _srv.Node.run = _ran
    def _trace():
        out = {{k: v for k, v in _acc.items()}}
        out["collector"] = [_gc[0], 0]
        return {{"sections": out, "records": _held[1] - _held[0], "process_s": _held[2]}}
    trace_at_exit(_trace)
"""


def per_record(trace: dict[str, Any]) -> dict[str, Any]:
    """A server's trace as microseconds and calls per record."""
    n = trace["records"]
    if n <= 0:
        raise BenchError("cpu: a server wrote or held no record during the run")
    rows = {
        label: (round(s * 1e6 / n, 2), round(calls / n, 3))
        for label, (s, calls) in trace["sections"].items()
    }
    return {
        "records": n,
        "process_us": round(trace["process_s"] * 1e6 / n, 2),
        "sections": rows,
    }


def bench_cpu(
    reaper: Reaper, windows: list[int], timing: Timing, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    rows = []
    for window in windows:
        run = run_loaded(reaper, TRACER, {}, window, timing, "cpu")
        r = run.result
        answered = r["answered"]
        row: dict[str, Any] = {
            "window": window,
            **summarize(r),
            "client_us": round(r["cpu_s"] * 1e6 / answered, 2) if answered else None,
            "primary": per_record(run.traces[run.primary]),
            "backup": per_record(run.traces[run.backup]),
        }
        say(format_cpu(row))
        rows.append(row)
    return rows


def format_cpu(r: dict[str, Any]) -> str:
    p, b = r["primary"], r["backup"]
    lines = [
        f"   cpu window {r['window']:3d}: {r['throughput']:7,} req/s  p50 {r['p50_us']} us; "
        "CPU us a record (calls a record):",
        f"     {'section':24s} {'primary':>17s} {'backup':>17s}",
        f"     {'whole process':24s} {p['process_us']:>17.2f} {b['process_us']:>17.2f}",
    ]
    labels = [(label, depth) for label, depth, *_ in SECTIONS]
    at = labels.index(("processor", 3)) + 1
    labels[at:at] = [("application", 4), ("application apply", 4)]
    labels[1:1] = [("collector", 1)]
    for label, depth in labels:
        cells = []
        for side in (p, b):
            v = side["sections"].get(label)
            cells.append(f"{v[0]:8.2f} ({v[1]:6.3f})" if v and (v[0] or v[1]) else f"{'-':>17s}")
        name = "  " * depth + label
        lines.append(f"     {name:24s} {cells[0]:>17s} {cells[1]:>17s}")
    client = r["client_us"]
    lines.append(f"     {'client process':24s} {client if client is not None else '-':>17}")
    return "\n".join(lines)
