"""The tests' side of the run checker (zmqfail/runcheck.py, shared with
tools/chaos): the same checks, failing the test on any violation."""

from __future__ import annotations

from pathlib import Path

from zmqfail import config
from zmqfail.runcheck import History, bench_args, whole_then_stopped
from zmqfail.runcheck import check_run as check

__all__ = ["bench_args", "check_run", "whole_then_stopped"]


def check_run(
    cfg: config.ClusterConfig, history: Path, primary: str, digests: dict[str, str]
) -> tuple[int, int]:
    """Every check on stopped nodes, none may fail; returns (acknowledged
    requests, epochs that acknowledged something)."""
    res = check(cfg, History.load(history), primary, digests)
    assert res.ok, "\n".join(res.violations)
    return res.acked, res.epochs
