"""The command line's --app: config init writes a config for a shipped
application, client bench refuses an --app the cluster does not run, and both
say what is wrong in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zmqfail import config

pytestmark = pytest.mark.timeout(60)


def zmqfail(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zmqfail", *args], capture_output=True, text=True, timeout=50
    )


@pytest.mark.parametrize("app", ["orders", "ledger"])
def test_config_init_writes_a_config_for_the_app(tmp_path: Path, app: str) -> None:
    out = zmqfail("config", "init", "--dir", str(tmp_path), "--app", app)
    assert out.returncode == 0, out.stderr
    cfg = config.load(tmp_path / "zmqfail.toml")
    assert cfg.app.name == app
    cfg.app.create()


def test_bench_refuses_an_app_the_cluster_does_not_run(tmp_path: Path) -> None:
    assert zmqfail("config", "init", "--dir", str(tmp_path)).returncode == 0
    out = zmqfail(
        "client", "bench", "--config", str(tmp_path / "zmqfail.toml"), "--app", "ledger",
        "--requests", "10",
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1
    assert "--app ledger, but the cluster config runs 'orders'" in out.stderr


@pytest.mark.parametrize("cmd", [("demo",), ("config", "init", "--dir", "x")])
def test_unknown_app_is_refused(cmd: tuple[str, ...], tmp_path: Path) -> None:
    out = zmqfail(*cmd, "--app", "nope")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "--app must be one of ledger, orders" in out.stderr
