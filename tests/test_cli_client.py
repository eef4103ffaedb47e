"""`zmqfail client ...` as a person uses it: a stable identity (so it can
cancel what it placed), readable output, and one-line errors for bad input
(huge and negative numbers, a closed pipe, a bug)."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import MakeCluster, run_zmqfail
from rich.console import Console

from zmqfail import config
from zmqfail.cli import show
from zmqfail.cli.identity import STATE_FILE, claim
from zmqfail.cli.main import cli
from zmqfail.errors import ZmqfailError
from zmqfail.failover.state import State
from zmqfail.netutil import free_base_port

pytestmark = pytest.mark.timeout(60)


def zmqfail(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_zmqfail(*args, env=env, timeout=30)


def one_line_error(res: subprocess.CompletedProcess[str], code: int) -> str:
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    return res.stderr


# ------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["order", "buy", "ABC", "99999999999999999999999", "10.00"],
            "must be within 1..1000000000",
        ),
        (["order", "buy", "ABC", "-5", "10.00"], "must be within 1..1000000000, got -5"),
        (["order", "buy", "ABC", "0", "10.00"], "got 0"),
        (["order", "buy", "ABC", "5", "-10.00"], "positive decimal like 10.50, got '-10.00'"),
        (["order", "buy", "ABC", "5", "1e3"], "positive decimal"),
        (["order", "buy", "ABC", "five"], "'five' is not a whole number"),
        (["cancel", "-3"], "got -3"),
        (["cancel", "9" * 30], "(30 digits)"),
        (["book", "ABC", "--depth", "-1"], "got -1"),
        (["order", "buy", "ABC", "5", "--timeout", "-1"], "--timeout"),
        (["order", "buy", "ABC", "5", "--jsn"], "No such option"),
    ],
)
def test_bad_numbers_are_usage_errors_before_anything_is_sent(args: list[str], says: str) -> None:
    res = CliRunner().invoke(cli, ["client", *args], standalone_mode=False)
    assert isinstance(res.exception, click.UsageError), res.exception
    assert says in res.exception.format_message()
    # Refused while parsing: no identity was even claimed, nothing was sent.
    assert not (Path(os.environ["XDG_STATE_HOME"]) / "zmqfail").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["status", "--timeout", "nan"], "got nan"),
        (["health", "--timeout", "-1"], "got -1"),
        (["watch", "--interval", "1e400", "--once"], "got 1e400"),
        (["demo", "--seconds", "-1"], "got -1"),
        (["demo", "--base-port", "99999999999999999999"], "within 1024..65535"),
        (["client", "bench", "--clients", "99999999999999999999", "--requests", "5"], "1..256"),
        (["client", "bench", "--rate", "inf", "--duration", "1"], "got inf"),
        (["kill", "a", "--link", "main", "--for", "-1"], "got -1"),
        (["switchover", "--timeout", "x"], "'x' is not a number"),
        (["config", "init", "--dir", "x", "--base-port", "9" * 20], "within 1024..65535"),
        (["config", "init", "--dir", "x", "--base-port", "-5"], "within 1024..65535, got -5"),
    ],
)
def test_every_number_option_is_checked_before_the_command_runs(args: list[str], says: str) -> None:
    res = CliRunner().invoke(cli, args, standalone_mode=False)
    assert isinstance(res.exception, click.UsageError), res.exception
    assert says in res.exception.format_message()


def test_the_real_command_prints_one_line_and_exits_2() -> None:
    for args in (("buy", "ABC", "99999999999999999999999", "10.00"), ("buy", "ABC", "-5", "10")):
        res = zmqfail("client", "order", *args)
        err = one_line_error(res, 2)
        assert "QTY" in err and res.stdout == ""


def test_a_closed_pipe_is_one_line_and_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "zmqfail.toml"
    path.write_text(config.render(nodes=2, base_port=free_base_port(30)))
    status = ("status", "--config", str(path), "--json", "--timeout", "0.05")
    for args in (("config", "check", str(path)), status):
        p = subprocess.Popen(
            [sys.executable, "-m", "zmqfail", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()  # the reader is gone before anything is written
        err = p.stderr.read()
        rc = p.wait(30)
        p.stderr.close()
        assert rc == 1, (args, err)
        assert err.strip() == "zmqfail: error: output closed by the reader (broken pipe)", err


def test_an_unexpected_exception_is_one_line_unless_debugging(tmp_path: Path) -> None:
    """A planted bug: a sitecustomize that breaks `config check`'s loader."""
    (tmp_path / "sitecustomize.py").write_text(
        "import zmqfail.config as c\n"
        "def boom(*a, **k):\n"
        "    raise OverflowError('Integer value out of range')\n"
        "c.load = boom\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    err = one_line_error(zmqfail("config", "check", "x.toml", env=env), 1)
    assert "internal error: OverflowError: Integer value out of range" in err
    env["ZMQFAIL_DEBUG"] = "1"
    assert "Traceback" in zmqfail("config", "check", "x.toml", env=env).stderr


# ------------------------------------------------------------ identity


def test_one_client_id_per_user_and_msg_ids_that_only_grow(tmp_path: Path) -> None:
    clock = [1.0]  # seconds: far below the stored counter after the first use
    with claim(None, 1.0, tmp_path, lambda: clock[0]) as me:
        first = me.reserve()
        cid = me.client_id
        assert cid.startswith("cli-")
        # Written before the request is sent: a call killed now cannot reuse it.
        stored = json.loads((tmp_path / STATE_FILE).read_text())
        assert stored["next_msg_id"][cid] == first + 1
        assert me.reserve() == first + 1
    with claim(None, 1.0, tmp_path, lambda: clock[0]) as again:
        assert again.client_id == cid
        assert again.reserve() == first + 2
    clock[0] = 5000.0  # the wall clock in microseconds is a floor (a lost state file)
    with claim(None, 1.0, tmp_path, lambda: clock[0]) as later:
        assert later.reserve() == 5_000_000_000
    (tmp_path / STATE_FILE).unlink()
    with claim(None, 1.0, tmp_path, lambda: clock[0]) as fresh:
        assert fresh.client_id != cid  # a new id, and still no msg_id reused
        assert fresh.reserve() >= 5_000_000_000
    with claim("desk-7", 1.0, tmp_path, lambda: 0.0) as other:
        assert other.client_id == "desk-7" and other.reserve() == 1


def test_the_client_identity_is_its_users_alone_even_with_umask_zero(tmp_path: Path) -> None:
    """The stored client id and msg_id counter let anyone act as this user:
    the directory 0700, the files 0600, whatever the umask."""
    d = tmp_path / "state" / "zmqfail"
    old = os.umask(0)
    try:
        with claim(None, 1.0, d, lambda: 1.0) as me:
            me.reserve()
    finally:
        os.umask(old)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    files = list(d.iterdir())
    assert STATE_FILE in {p.name for p in files}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files), files


def test_calls_under_one_user_run_one_at_a_time(tmp_path: Path) -> None:
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with claim(None, 1.0, tmp_path):
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(10)
        with pytest.raises(ZmqfailError, match="run one at a time"), claim(None, 0.1, tmp_path):
            pass
    finally:
        release.set()
        t.join(10)
    with claim(None, 0.1, tmp_path) as me:  # free again
        assert me.client_id


def test_a_damaged_state_file_is_named(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{not json")
    with (
        pytest.raises(ZmqfailError, match=r"cannot read .*client.json.*move it aside"),
        claim(None, 0.1, tmp_path),
    ):
        pass
    (tmp_path / STATE_FILE).unlink()
    with pytest.raises(ZmqfailError, match="printable"), claim("bad\nid", 0.1, tmp_path):
        pass


# ------------------------------------------------------------ output


def test_replies_read_as_lines_and_tables() -> None:
    body = {"op": "new", "side": "sell", "qty": 30, "instrument": "ABC", "price": "10.40"}
    result = {
        "order_id": 6,
        "status": "partially_filled",
        "filled": 20,
        "remaining": 10,
        "fills": [{"exec_id": 3, "qty": 20, "price": "10.50", "maker_order_id": 5}],
    }
    assert show.order_line(body, result) == [
        "order 6 (sell 30 ABC @ 10.40): partially filled, 20 of 30 filled, 10 open",
        "  fill 3: 20 @ 10.50 against order 5",
    ]
    market = {"op": "new", "side": "buy", "qty": 1_000, "instrument": "ABC"}
    done = {"order_id": 7, "status": "cancelled", "filled": 0, "remaining": 0, "fills": []}
    assert show.order_line(market, done) == [
        "order 7 (buy 1,000 ABC at market): cancelled, 0 of 1,000 filled"
    ]
    buf = io.StringIO()
    book = {"instrument": "ABC", "bids": [["10.50", 70, 1], ["10.00", 5, 2]], "asks": []}
    Console(file=buf, width=100, color_system=None).print(show.book_table(book))
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("ABC order book")
    assert lines[3].split() == ["1", "70", "10.50"] and lines[4].split() == ["2", "5", "10.00"]
    assert "{" not in buf.getvalue() and "[" not in buf.getvalue()  # no Python repr


# ------------------------------------------------------------ live


def test_the_cli_cancels_what_it_placed(tmp_path: Path, cluster: MakeCluster) -> None:
    cfg_path = tmp_path / "zmqfail.toml"
    cfg_path.write_text(config.render(nodes=1, base_port=free_base_port(30)))
    cl = cluster(cfg_path)
    cl.start("a")
    cl.wait("a", State.PRIMARY_ONLY)  # serving
    c = str(cfg_path)
    placed = zmqfail("client", "order", "--config", c, "buy", "ABC", "100", "10.50")
    assert placed.returncode == 0, placed.stderr
    assert placed.stdout == "order 1 (buy 100 ABC @ 10.50): new, 0 of 100 filled, 100 open\n"
    sold = zmqfail("client", "order", "--config", c, "sell", "ABC", "30", "--json")
    assert json.loads(sold.stdout)["result"]["filled"] == 30
    stolen = zmqfail("client", "cancel", "--config", c, "1", "--client-id", "someone-else")
    assert stolen.returncode == 2 and "not_owner" in stolen.stderr
    mine = zmqfail("client", "cancel", "--config", c, "1")
    assert mine.returncode == 0, mine.stderr
    assert mine.stdout == "order 1: cancelled, 70 left unfilled\n"
    again = zmqfail("client", "cancel", "--config", c, "1")
    assert again.returncode == 2 and "order_closed" in again.stderr
    status = zmqfail("client", "status", "--config", c, "1")
    assert "cancelled, 30 of 100 filled; client cli-" in status.stdout
    reports = zmqfail("client", "reports", "--config", c)
    assert reports.returncode == 0 and "10.50" in reports.stdout and "30" in reports.stdout
    # Every call numbered upward under one id: the server saw no stale or reused msg_id.
    state = json.loads((Path(os.environ["XDG_STATE_HOME"]) / "zmqfail" / STATE_FILE).read_text())
    assert set(state["next_msg_id"]) == {state["client_id"], "someone-else"}
    counters = cl.status("a").counters
    assert counters["stale"] == 0 and counters["duplicates"] == 0
