"""Helpers of the simulator's tests: quiet campaigns and planted-bug hunts."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from zmqfail.sim.campaign import Summary, campaign

T = TypeVar("T")


def run_niced(fn: Callable[[], T], increment: int = 5) -> T:
    """fn() on a thread of lower CPU priority, whose forked processes (the
    simulator's pool) inherit it (Linux: nice is per thread). A CPU-bound
    campaign on one xdist worker then takes only the CPU that the other
    worker's timing-sensitive tests leave (their in-process nodes and load
    threads share this process's scheduling group). Five steps, not more: on
    a machine loaded by others a campaign niced by ten got a tenth of a core
    and overran its timeout (seen at load average 17)."""
    if sys.platform != "linux":
        return fn()
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
        try:
            result.append(fn())
        except BaseException as exc:  # raised again in the caller
            error.append(exc)

    t = threading.Thread(target=run, name="niced")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def niced_campaign(*args: Any, **kwargs: Any) -> Summary:
    """A campaign run niced (see run_niced): the simulator's tests share the
    machine with timing-sensitive process tests on the other xdist worker."""
    return run_niced(lambda: campaign(*args, **kwargs))


def caught(kinds: set[str], seeds: range, app: str = "orders") -> dict[int, list[str]]:
    """Run the safe campaign over `seeds` with `app` and return the schedules
    that broke one of `kinds` (it stops at the first)."""

    def wanted(vs: list[str]) -> bool:
        return any(v.split(":")[0] in kinds for v in vs)

    s = niced_campaign(seeds, workers=2, stop_on=wanted, app=app)
    return {seed: vs for seed, vs in s.failed.items() if wanted(vs)}
