"""The example application of docs/applications.md, run from the doc itself:
the generic contract, then a real primary and backup serving a client with
the configuration the doc shows."""

from __future__ import annotations

import random
import re
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, StartNode, wait_for
from contract import check_contract

from zmqfail import config
from zmqfail.audit import replay_digest
from zmqfail.client.sync import Client

pytestmark = pytest.mark.timeout(60)

GUIDE = ROOT / "docs" / "applications.md"


def fenced(marker: str, lang: str) -> str:
    """The first ```lang block after `marker` in the guide."""
    text = GUIDE.read_text()
    start = text.index(marker) if marker else 0
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(text, start)
    assert m, f"no {lang} block after {marker!r} in {GUIDE}"
    return m.group(1)


@pytest.fixture
def example(tmp_path: Path) -> Iterator[str]:
    """The guide's module, importable as `inventory`."""
    (tmp_path / "inventory.py").write_text(fenced("<!-- example: inventory.py -->", "python"))
    sys.path.insert(0, str(tmp_path))
    sys.modules.pop("inventory", None)
    try:
        yield "inventory:create"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("inventory", None)


def stock_query(rng: random.Random) -> dict[str, Any]:
    return {"op": "stock", "item": rng.choice(("apple", "pear", "fig"))}


def test_the_example_passes_the_contract(example: str) -> None:
    check_contract(example, {"max_units": 200}, stock_query)


def test_the_example_serves_from_a_pair(
    example: str, cluster_dir: Callable[..., Path], node_threads: StartNode
) -> None:
    shown = tomllib.loads(fenced("## Running it", "toml"))
    assert shown["cluster"]["app"] == example
    path = cluster_dir()
    text = path.read_text()
    text = re.sub(r'(?m)^app = "orders".*$', f'app = "{example}"', text)
    text = re.sub(r"(?ms)^\[app\].*?\n\n", "[app]\nmax_units = 500\n\n", text)
    assert shown["app"] == {"max_units": 500} and shown["sessions"] == {
        "max_sessions": 1024,
        "window": 256,
    }
    path.write_text(text)
    cfg = config.load(path)
    a, b = node_threads(cfg, "a"), node_threads(cfg, "b")
    a.wait_state("normal")
    b.wait_state("normal")
    with Client(cfg, timeout=10) as c:
        assert c.request({"op": "restock", "item": "apple", "units": 10}).result == {"units": 10}
        assert c.request({"op": "reserve", "item": "apple", "units": 4}).result == {"units": 6}
        no = c.request({"op": "reserve", "item": "apple", "units": 20})
        assert (no.status, no.result["code"]) == ("rejected", "out_of_stock")
        assert c.request({"op": "stock", "item": "apple"}).result == {"item": "apple", "units": 6}
        too = c.request({"op": "restock", "item": "apple", "units": 495})
        assert too.result["code"] == "too_much"
    wait_for(
        lambda: b.node.core.nlog.proc.last_lsn == a.node.core.nlog.proc.last_lsn,
        10,
        "b to apply everything",
    )
    wait_for(lambda: not b.node.core.nlog.to_apply, 10, "b to apply what it holds")
    assert a.node.core.nlog.proc.digest() == b.node.core.nlog.proc.digest()
    assert b.node.core.nlog.proc.app.describe().queues == {"reservations": 1}
    st = a.node.status()
    assert st["app"]["name"] == example and st["app"]["tables"] == {"stock": 1}
    a.stop()
    b.stop()
    assert replay_digest(cfg.node("a").data_dir, cfg) == replay_digest(cfg.node("b").data_dir, cfg)


def test_a_bad_app_setting_is_one_line(example: str, tmp_path: Path) -> None:
    from zmqfail.errors import ConfigError

    text = config.render(2, 5700)
    text = re.sub(r'(?m)^app = "orders".*$', f'app = "{example}"', text)
    text = re.sub(r"(?ms)^\[app\].*?\n\n", "[app]\nmax_units = -3\n\n", text)
    with pytest.raises(ConfigError, match=r"^\[app\] takes one key, max_units"):
        config.loads(text, tmp_path)
