"""The witness in the CLI, in process: `config init --witness`, `witness
--status`, the witness line of `zmqfail status`, and one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from witnesskit import Running

from zmqfail import config
from zmqfail.cli.main import cli
from zmqfail.netutil import free_base_port
from zmqfail.witness.store import STORE_NAME, Store

pytestmark = pytest.mark.timeout(30)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def witness_config(tmp: Path, lease_ms: int = 1000) -> tuple[Path, config.WitnessConfig]:
    text = config.render(2, free_base_port(25), witness=True)
    text = re.sub(r"^lease_ms = \d+", f"lease_ms = {lease_ms}", text, flags=re.M)
    path = tmp / "zmqfail.toml"
    path.write_text(text)
    w = config.load(path).witness
    assert w is not None and w.lease_ms == lease_ms
    return path, w


def test_config_init_witness_puts_it_on_the_port_after_the_nodes(tmp_path: Path) -> None:
    r = invoke("config", "init", "--dir", str(tmp_path), "--base-port", "6100", "--witness")
    assert r.exit_code == 0, r.output
    cfg = config.load(tmp_path / "zmqfail.toml")
    assert cfg.witness == config.WitnessConfig(
        "tcp://127.0.0.1:6120", tmp_path.resolve() / "witness", 1000
    )
    ports = {int(n.client.rsplit(":", 1)[1]) for n in cfg.nodes}
    assert ports == {6100, 6110}
    three = invoke("config", "init", "--dir", str(tmp_path / "3"), "--nodes", "3", "--witness")
    assert three.exit_code == 0
    w3 = config.load(tmp_path / "3" / "zmqfail.toml").witness
    assert w3 is not None and w3.endpoint == "tcp://127.0.0.1:5730"
    checked = invoke("config", "check", str(tmp_path / "zmqfail.toml"))
    assert checked.stdout.rstrip().endswith(", witness on tcp://127.0.0.1:6120"), checked.stdout
    plain = invoke("config", "init", "--dir", str(tmp_path / "p"))
    assert plain.exit_code == 0 and config.load(tmp_path / "p" / "zmqfail.toml").witness is None
    # The last port a config may use is the witness's: 65535 fits, one more does not.
    assert invoke("config", "init", "--dir", str(tmp_path / "q"), "--base-port", "65515",
                  "--witness").exit_code == 0  # fmt: skip
    over = invoke("config", "init", "--dir", str(tmp_path / "r"), "--base-port", "65516")
    assert over.exit_code == 1 and "must lie within 1024..65535" in over.stderr


def test_status_shows_the_witness_and_witness_status_asks_it(tmp_path: Path) -> None:
    path, w = witness_config(tmp_path)
    r = Running(w)
    try:
        assert r.asker("b").elect(4, 0).granted
        one = invoke("witness", "--config", str(path), "--status")
        assert one.exit_code == 0, one.output
        assert re.fullmatch(
            rf"witness {w.endpoint}: epoch 4 granted to b; lease held by b for \d+ ms more; "
            r"1 election\(s\), 0 refusal\(s\), 0 bad frame\(s\) since it started\n",
            one.stdout,
        ), one.stdout
        raw = json.loads(invoke("witness", "--config", str(path), "--status", "--json").stdout)
        assert (raw["epoch"], raw["leader"], raw["lease_ms"]) == (4, "b", 1000)
        st = invoke("status", "--config", str(path), "--timeout", "0.2")
        assert st.exit_code == 4  # no node runs: down, and the witness line after the table
        assert (
            st.stdout.rstrip("\n")
            .splitlines()[-1]
            .startswith(f"witness {w.endpoint}: epoch 4 granted to b; lease held by b")
        ), st.stdout
        js = invoke("status", "--config", str(path), "--timeout", "0.2", "--json")
        assert [row["name"] for row in json.loads(js.stdout)] == ["a", "b"]  # nodes only
    finally:
        r.stop()
    gone = invoke("status", "--config", str(path), "--timeout", "0.2")
    assert f"witness {w.endpoint}: unreachable (no answer from" in gone.stdout
    assert "while it is down no server takes over or runs alone" in gone.stdout
    asked = invoke("witness", "--config", str(path), "--status", "--timeout", "0.2")
    assert asked.exit_code == 1
    assert asked.stderr == (
        f"zmqfail: error: no answer from {w.endpoint}: connection refused: nothing listens there\n"
    )


def test_without_a_witness_table_status_says_nothing_of_one(tmp_path: Path) -> None:
    path = tmp_path / "plain.toml"
    path.write_text(config.render(2, free_base_port(25)))
    st = invoke("status", "--config", str(path), "--timeout", "0.2")
    assert st.exit_code == 4 and "witness" not in st.stdout
    run = invoke("witness", "--config", str(path))
    assert run.exit_code == 1
    assert run.stderr == (
        f"zmqfail: error: {path.resolve()} has no [witness] table "
        "(`zmqfail config init --witness` writes one)\n"
    )


def test_a_damaged_store_or_a_busy_dir_stops_it_in_one_line(tmp_path: Path) -> None:
    path, w = witness_config(tmp_path)
    w.data_dir.mkdir()
    (w.data_dir / STORE_NAME).write_text('{"epoch": 3}')
    damaged = invoke("witness", "--config", str(path))
    assert damaged.exit_code == 1
    assert damaged.stderr.startswith(f"zmqfail: error: {w.data_dir / STORE_NAME}: damaged")
    assert damaged.stderr.count("\n") == 1
    (w.data_dir / STORE_NAME).unlink()
    (w.data_dir / "WITNESS").unlink(missing_ok=True)
    held = Store(w.data_dir)
    held.open()
    try:
        busy = invoke("witness", "--config", str(path))
    finally:
        held.close()
    assert busy.exit_code == 1
    assert re.fullmatch(
        r"zmqfail: error: witness data dir .* is in use by another witness \(pid \d+\)\n",
        busy.stderr,
    ), busy.stderr
