"""Every process a bench run starts, and the guarantee that it ends them.

Client drivers, bare-flow servers, peers and hog processes are children of
the bench; zmqfail nodes and redis-server run in sessions of their own (so a
Ctrl-C at the terminal reaches only the bench). Either way the Reaper holds
them, and closing it, on success, on an error, on Ctrl-C or on SIGTERM to the
bench, ends each one: SIGTERM, a short wait, then SIGKILL.

A signal to the bench is noted before it is raised as KeyboardInterrupt,
because CPython can drop that exception: one raised while an at-fork hook
runs (multiprocessing forks every client, and logging registers such a hook)
or while a finalizer runs is printed as "Exception ignored" and the bench
carried on measuring its whole row. `check_interrupted` raises it again
right after every fork and in every loop where the bench waits.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

STOP_WAIT = 5.0  # seconds a process gets to end after SIGTERM before SIGKILL


class BenchError(Exception):
    """A flow could not be set up or measured; the message is one line."""


def _child(target: Callable[..., None], args: tuple[Any, ...]) -> None:
    # Ctrl-C goes to the whole foreground process group: the bench itself
    # decides what to stop, so its forked children ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    target(*args)


def _reporting(target: Callable[..., dict[str, Any]], args: tuple[Any, ...], out: Any) -> None:
    """`target`'s result, with the CPU its process spent on it (`cpu_s`:
    every thread, ZeroMQ's included), whatever start method made it."""
    try:
        c = time.process_time()
        res = target(*args)
        res.setdefault("cpu_s", time.process_time() - c)
        out.put(res)
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})


def busy_loop() -> None:
    """A hog: one core's worth of pure Python, until killed."""
    n = 0
    while True:
        n = (n + 1) & 0xFFFF


class Reaper:
    """Starts processes and ends them all in close() (a context manager)."""

    def __init__(self) -> None:
        self.procs: list[mp.Process | subprocess.Popen[bytes]] = []

    def __enter__(self) -> Reaper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def process(self, target: Callable[..., None], *args: Any, name: str = "") -> mp.Process:
        p = mp.Process(target=_child, args=(target, args), name=name or None, daemon=True)
        p.start()
        self.procs.append(p)
        check_interrupted()  # a signal during the fork's hooks was swallowed
        return p

    def popen(self, argv: list[str], log: Any) -> subprocess.Popen[bytes]:
        """An outside program in its own session, output to the file ``log``."""
        with open(log, "ab") as out:
            p = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.append(p)
        return p

    def adopt(self, p: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        """A process started elsewhere (in its own session) that we must end."""
        self.procs.append(p)
        return p

    def call(
        self, target: Callable[..., dict[str, Any]], *args: Any, timeout: float, name: str = ""
    ) -> dict[str, Any]:
        """Run ``target(*args)`` in a child process and return its result dict;
        BenchError if it fails, dies or overruns ``timeout``."""
        out: mp.Queue[dict[str, Any]] = mp.Queue()
        p = self.process(_reporting, target, args, out, name=name)
        try:
            return result_of(p, out, time.monotonic() + timeout, name or "client", timeout)
        finally:
            self.stop(p)
            out.close()

    def hogs(self, n: int) -> list[mp.Process]:
        return [self.process(busy_loop, name=f"hog-{i}") for i in range(n)]

    @contextlib.contextmanager
    def hogging(self, n: int) -> Iterator[None]:
        """N busy-loop processes for the duration of the block."""
        hs = self.hogs(n)
        try:
            yield
        finally:
            for h in hs:
                self.stop(h)

    def stop(self, p: mp.Process | subprocess.Popen[bytes]) -> None:
        self._stop([p])

    def close(self) -> None:
        self._stop(list(reversed(self.procs)))

    def _stop(self, ps: list[mp.Process | subprocess.Popen[bytes]]) -> None:
        for p in ps:
            _signal(p, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        for p in ps:
            if not _wait(p, max(0.0, deadline - time.monotonic())):
                _signal(p, signal.SIGKILL)
                _wait(p, STOP_WAIT)
            if p in self.procs:
                self.procs.remove(p)


def _signal(p: mp.Process | subprocess.Popen[bytes], sig: int) -> None:
    pid = p.pid
    if pid is None or _exited(p):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if isinstance(p, subprocess.Popen):
            os.killpg(pid, sig)  # its own session: the group is it and its children
        else:
            os.kill(pid, sig)


def _exited(p: mp.Process | subprocess.Popen[bytes]) -> bool:
    if isinstance(p, subprocess.Popen):
        return p.poll() is not None
    return p.exitcode is not None


def _wait(p: mp.Process | subprocess.Popen[bytes], timeout: float) -> bool:
    if isinstance(p, subprocess.Popen):
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    p.join(timeout)
    return p.exitcode is not None


_interrupted: list[str] = []  # the signals the bench was asked to stop by


def interrupt_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP to the bench all act like Ctrl-C: the
    finally blocks run and the Reaper ends what was started."""

    def raise_interrupt(signum: int, frame: object) -> None:
        _interrupted.append(signal.Signals(signum).name)
        raise KeyboardInterrupt(_interrupted[-1])

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_interrupt)


def check_interrupted() -> None:
    """Raise the interrupt again if a signal came and its exception was lost
    (see the module's docstring). Only on the way forward: never in the
    clean-up that an interrupt runs."""
    if _interrupted:
        raise KeyboardInterrupt(_interrupted[0])


def wait_interruptibly(seconds: float) -> None:
    """Sleep `seconds`, a Ctrl-C whose exception was lost still ending it."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        check_interrupted()
        time.sleep(min(left, 0.1))


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User + system CPU seconds of a process so far (Linux /proc); with
    `reaped`, also those of its children it waited for (a server's
    snapshot forks)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError as exc:
        raise BenchError(f"cannot read the CPU time of process {pid}: {exc}") from None
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def live_pids(reaper: Reaper) -> list[int]:
    """The processes `reaper` started that still run."""
    alive = []
    for p in reaper.procs:
        if isinstance(p, subprocess.Popen):
            if p.poll() is None:
                alive.append(p.pid)
        elif p.pid is not None and p.is_alive():
            alive.append(p.pid)
    return alive


def cpu_of(pids: list[int]) -> dict[int, float]:
    """CPU seconds so far of each of `pids` still running, with its reaped
    children's."""
    out: dict[int, float] = {}
    for pid in pids:
        try:
            out[pid] = cpu_seconds(pid, reaped=True)
        except BenchError:
            continue
    return out


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two readings by the processes in both: one
    that ended meanwhile is left out, not counted as giving its CPU back."""
    return sum(after[pid] - before[pid] for pid in after.keys() & before.keys())


def cpu_shares(pids: dict[str, int], seconds: float) -> tuple[dict[str, float], float]:
    """Each process's share of a core over the next `seconds` (waited here),
    and the span measured."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    wait_interruptibly(seconds)
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    span = time.monotonic() - t0
    return {name: (after[name] - before[name]) / span for name in pids}, span


def result_of(
    p: mp.Process, out: mp.Queue[dict[str, Any]], deadline: float, name: str, timeout: float
) -> dict[str, Any]:
    """The result dict a child process put on ``out`` (``_reporting``);
    BenchError if it failed, died or is still at it at ``deadline``."""
    while True:
        check_interrupted()
        try:
            res = out.get(timeout=0.2)
            break
        except queue.Empty:
            if not p.is_alive() and out.empty():
                raise BenchError(f"{name} died (exit {p.exitcode})") from None
            if time.monotonic() > deadline:
                raise BenchError(f"{name} overran {timeout:.0f}s") from None
    if "error" in res:
        raise BenchError(f"{name} failed: {res['error']}\n{res['trace']}")
    return res


def cpu_ticks() -> tuple[int, int]:
    """(all, stolen) clock ticks of this machine's CPUs so far (Linux
    /proc/stat): "steal" is time the hypervisor ran something else while
    this virtual machine wanted to run."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    if fields[0] != "cpu" or len(fields) < 9:
        raise BenchError(f"/proc/stat does not start with the cpu line: {fields[:1]}")
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(ticks), ticks[7]


def steal_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the machine's CPU time stolen between two readings."""
    total = after[0] - before[0]
    return (after[1] - before[1]) / total if total > 0 else 0.0
