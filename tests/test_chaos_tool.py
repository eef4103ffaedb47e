"""`tools/chaos` against real processes: a short seeded campaign (a pause,
both links cut, one-way loss, power loss of every server) under `client
bench` load ends with zero violations and a table that reports the faults
it injected; and
the verdict proves itself on a doctored copy of that run: an acknowledged
request missing from every log is caught as lost, while one acknowledged
just before the power loss is counted as allowed by design."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Procs

pytestmark = [pytest.mark.timeout(150), pytest.mark.process, pytest.mark.xdist_group("chaos")]

ROOT = Path(__file__).resolve().parent.parent
TOOL = [sys.executable, str(ROOT / "tools" / "chaos.py")]
KINDS = ("pause", "cut-both", "one-way-loss", "power")  # cheap to recover from, and power


def chaos(*args: str, procs: Procs, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run the tool to its end; `procs` ends it (and, by their pid files,
    the nodes it started) if the test fails first."""
    p = subprocess.Popen(
        [*TOOL, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    procs.procs.append(p)  # type: ignore[arg-type]
    out, _ = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, "")


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """One short campaign for the module (each costs most of a minute)."""
    tmp = tmp_path_factory.mktemp("chaos")
    procs = Procs(tmp)
    try:
        out = tmp / "out.json"
        # A light load keeps the verdict's replay of every log short.
        args = ["--seed", "5", "--minutes", "2", "--faults", "4", "--rate", "300"]
        args += ["--kinds", ",".join(KINDS), "--dir", str(tmp / "run"), "--json", str(out)]
        res = chaos(*args, procs=procs, timeout=120)
        assert res.returncode == 0, res.stdout
        yield tmp / "run", json.loads(out.read_text())
    finally:
        procs.stop_all()


def rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["kind"]: r for r in report["rows"]}


def test_a_short_campaign_has_no_violation_and_reports_its_faults(
    campaign: tuple[Path, dict[str, Any]],
) -> None:
    _, report = campaign
    assert report["violations"] == []
    table = rows(report)
    for kind in KINDS:
        assert table[kind]["faults"] == 1, table[kind]
        assert table[kind]["lost"] == 0 and table[kind]["twice"] == 0
        assert table[kind]["outage_p50_ms"] is not None
    assert table["total"]["faults"] == 4
    assert table["total"]["acked"] > 1000
    # A power loss took every server down for its hold: the clients waited.
    assert table["power"]["outage_p50_ms"] > 300


def test_the_verdict_catches_a_lost_acknowledgement_in_a_doctored_history(
    campaign: tuple[Path, dict[str, Any]], tmp_path: Path, procs: Procs
) -> None:
    run_dir, _ = campaign
    doctored = tmp_path / "doctored"
    shutil.copytree(run_dir, doctored)
    raw = json.loads((doctored / "run.json").read_text())
    power = next(f for f in raw["faults"] if f["kind"] == "power")
    lines = (doctored / "history.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    oks = {(e["client_id"], e["msg_id"]): e for e in events if e["type"] == "ok"}
    write = next(
        e
        for e in events
        if e["type"] == "invoke"
        and e["body"].get("op") == "new"  # a write: a read cannot be lost
        and (e["client_id"], e["msg_id"]) in oks
    )
    reply = oks[(write["client_id"], write["msg_id"])]  # a server and epoch that did serve
    first_ok = min(e["time"] for e in events if e["type"] == "ok")
    # Two requests no server ever logged, acknowledged to the client: one in
    # the calm before any fault (a loss), one 50 ms before the power loss
    # (within the flush window: allowed).
    for n, t in ((1, first_ok + 0.01), (2, power["started"] - 0.05)):
        msg_id = 10**9 + n
        base = {"client_id": write["client_id"], "msg_id": msg_id, "time": t}
        ok = {k: reply[k] for k in ("server", "epoch", "status", "result")}
        events += [{**base, "type": "invoke", "body": write["body"]}, {**base, "type": "ok", **ok}]
    events.sort(key=lambda e: e["time"])
    (doctored / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))

    out = tmp_path / "verdict.json"
    res = chaos("--check", str(doctored), "--json", str(out), procs=procs, timeout=60)
    assert res.returncode == 1, res.stdout
    assert "1 acknowledged request(s) lost" in res.stdout
    verdict = json.loads(out.read_text())
    assert len(verdict["violations"]) == 1, verdict["violations"]
    table = rows(verdict)
    original = rows(campaign[1])
    assert table["total"]["lost"] == 1
    assert table["total"]["power_lost"] == original["total"]["power_lost"] + 1
    assert table["power"]["power_lost"] == original["power"]["power_lost"] + 1
