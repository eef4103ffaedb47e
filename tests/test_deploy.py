"""Deployment: the systemd unit runs a command the CLI accepts (and systemd
accepts the unit), `config check`, and shell completion."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_zmqfail

from zmqfail import config
from zmqfail.cli.main import cli
from zmqfail.netutil import free_base_port

pytestmark = pytest.mark.timeout(60)
UNITS = ROOT / "etc" / "systemd"
UNIT = UNITS / "zmqfail-node@.service"
WITNESS_UNIT = UNITS / "zmqfail-witness.service"


def unit(path: Path = UNIT) -> configparser.ConfigParser:
    p = configparser.ConfigParser(interpolation=None, strict=True)
    p.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    p.read_string(path.read_text())
    return p


def test_the_unit_runs_a_command_the_cli_accepts() -> None:
    svc = unit()["Service"]
    argv = shlex.split(svc["ExecStart"].replace("%i", "a"))
    assert argv[0] == "/usr/local/bin/zmqfail"
    ctx = cli.make_context("zmqfail", argv[1:])  # raises on an unknown option or value
    sub = cli.get_command(ctx, "node")
    assert sub is not None
    params = sub.make_context("node", argv[2:], parent=ctx).params
    assert params["name"] == "a" and params["config_path"] == "/etc/zmqfail/zmqfail.toml"
    assert svc["KillSignal"] == "SIGTERM"  # the node's clean stop
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_the_witness_unit_runs_a_command_the_cli_accepts() -> None:
    svc = unit(WITNESS_UNIT)["Service"]
    argv = shlex.split(svc["ExecStart"])
    assert argv[:2] == ["/usr/local/bin/zmqfail", "witness"]
    ctx = cli.make_context("zmqfail", argv[1:])
    sub = cli.get_command(ctx, "witness")
    assert sub is not None
    params = sub.make_context("witness", argv[2:], parent=ctx).params
    assert params["config_path"] == "/etc/zmqfail/zmqfail.toml" and not params["ask"]
    assert svc["KillSignal"] == "SIGTERM"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize(
    ("path", "instance"),
    [(UNIT, "zmqfail-node@a.service"), (WITNESS_UNIT, "zmqfail-witness.service")],
)
def test_systemd_accepts_the_unit(tmp_path: Path, path: Path, instance: str) -> None:
    # systemd checks that the program exists and is executable, nothing more.
    script = Path(sys.executable).parent / "zmqfail"
    exe = str(script if script.exists() else sys.executable)
    text = path.read_text().replace("/usr/local/bin/zmqfail", exe)

    def verify(text: str) -> subprocess.CompletedProcess[str]:
        (tmp_path / path.name).write_text(text)
        if instance != path.name and not (tmp_path / instance).exists():
            (tmp_path / instance).symlink_to(tmp_path / path.name)
        return subprocess.run(
            ["systemd-analyze", "verify", str(tmp_path / instance)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    res = verify(text)
    assert res.returncode == 0 and res.stderr == "", res.stderr  # unknown keys only warn
    # The check itself catches a mistake: plant one.
    assert "Restrat" in verify(text.replace("Restart=", "Restrat=")).stderr


def test_config_check_is_one_line_and_an_exit_code(tmp_path: Path) -> None:
    good = tmp_path / "zmqfail.toml"
    good.write_text(config.render(nodes=3, base_port=free_base_port(40), name="prod"))
    ok = run_zmqfail("config", "check", str(good))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == (
        f"ok: {good}: cluster 'prod', 3 node(s) (a, b, c), first primary a, data under {tmp_path}\n"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(re.sub(r"heartbeat_misses = \d+", "heartbeat_misses = -1", good.read_text()))
    for path, says in ((bad, "heartbeat_misses must be a positive integer"), (tmp_path / "x", "x")):
        res = run_zmqfail("config", "check", str(path))
        assert res.returncode == 1 and res.stdout == ""
        assert res.stderr.startswith("zmqfail: error: ") and says in res.stderr
        assert len(res.stderr.splitlines()) == 1


def test_shell_completion() -> None:
    env = dict(os.environ, _ZMQFAIL_COMPLETE="bash_source")
    script = run_zmqfail(env=env)
    assert script.returncode == 0 and "_zmqfail_completion()" in script.stdout
    env = dict(
        os.environ,
        _ZMQFAIL_COMPLETE="bash_complete",
        COMP_WORDS="zmqfail client or",
        COMP_CWORD="2",
    )
    assert run_zmqfail(env=env).stdout.split() == ["plain,order"]
