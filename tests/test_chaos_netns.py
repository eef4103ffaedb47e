"""`tools/chaos --netns` (root only; skipped elsewhere): node b on a host of
its own, the cables between the two hosts really cut (a veth end down) and
one-way loss a blackhole route on one side, under `client bench` load, with
zero violations; every network fault that has a cable is done on it, and the
lab is gone afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Procs

from zmqfail.netlab import available

pytestmark = [pytest.mark.timeout(200), pytest.mark.process, pytest.mark.xdist_group("chaos")]

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("cut-main", "cut-failsafe", "cut-both", "cut-clients", "one-way-loss")
WHY = available()


@pytest.mark.skipif(bool(WHY), reason=WHY or "")
def test_a_campaign_on_real_cables_has_no_violation(tmp_path: Path, procs: Procs) -> None:
    out = tmp_path / "out.json"
    # Five faults: the schedule deals the kinds in a shuffled round
    # (tools/chaoskit/schedule.py), so each of the five comes once.
    args = ["--netns", "--seed", "3", "--minutes", "1.5", "--faults", "5", "--rate", "300"]
    args += ["--kinds", ",".join(KINDS), "--dir", str(tmp_path / "run"), "--json", str(out)]
    p = subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "chaos.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    procs.procs.append(p)  # type: ignore[arg-type]
    text, _ = p.communicate(timeout=180)
    assert p.returncode == 0, text
    assert "cuts on real cables" in text, text
    report = json.loads(out.read_text())
    assert report["violations"] == []
    rows = {r["kind"]: r for r in report["rows"]}
    assert rows["total"]["faults"] == 5 and rows["total"]["acked"] > 1000
    assert all(rows[k]["faults"] == 1 and rows[k]["lost"] == 0 for k in KINDS), rows
    faults = json.loads((tmp_path / "run" / "run.json").read_text())["faults"]
    # Only a's own client network has no cable (the clients share its host).
    for f in faults:
        cable = f["kind"] != "cut-clients" or f["node"] == "b"
        assert f["real"] is cable, f
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert "zfbch" not in left.stdout, "the lab's namespace outlived the run"
