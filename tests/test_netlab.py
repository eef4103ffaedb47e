"""The network lab's pure parts (zmqfail/netlab.py), without root: where a
config puts each node once placed in the lab, and which `ip` command each
cut and one-way loss runs on which host."""

from __future__ import annotations

from pathlib import Path

import pytest

from zmqfail import config, netlab
from zmqfail.netlab import NETS, NetLab

pytestmark = pytest.mark.timeout(30)


def lab() -> NetLab:
    """A lab's names and addresses as `up` sets them, built nowhere."""
    lab = NetLab(tag="t1", block=40, ns="zfbt1")
    for i, net in enumerate(NETS):
        lab.a_ip[net], lab.b_ip[net] = f"10.213.{40 + i}.1", f"10.213.{40 + i}.2"
        lab.devs[net] = f"zft1{net[0]}a"
    return lab


def test_a_placed_config_puts_each_endpoint_on_its_hosts_network(tmp_path: Path) -> None:
    text = lab().place(config.render(nodes=2, base_port=7100, witness=True))
    assert "127.0.0.1" not in text
    path = tmp_path / "lab.toml"
    path.write_text(text)
    cfg = config.load(path)
    for name, host in (("a", 1), ("b", 2)):
        node = cfg.node(name)
        for endpoint in (node.client, node.control):
            assert endpoint.startswith(f"tcp://10.213.40.{host}:"), endpoint
        for i, link in enumerate(("main", "failsafe"), start=41):
            ends = node.link(link)
            for endpoint in (ends.records, ends.ack, ends.heartbeat):
                assert endpoint.startswith(f"tcp://10.213.{i}.{host}:"), endpoint
    assert cfg.witness is not None and cfg.witness.endpoint.startswith("tcp://10.213.40.1:")
    with pytest.raises(ValueError, match="nodes a and b"):
        lab().place(config.render(nodes=3, base_port=7100))


def test_cuts_and_one_way_loss_run_on_the_right_host(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[tuple[tuple[str, ...], str | None]] = []
    monkeypatch.setattr(netlab, "_ip", lambda *args, ns=None: ran.append((args, ns)))
    lb = lab()
    lb.cut("main")
    lb.heal("main")
    lb.lose("failsafe", "a")  # a sends nothing to b on failsafe: a route on host A
    lb.lose("main", "b")  # b sends nothing to a on main: a route in b's namespace
    lb.unlose("main", "b")
    assert ran == [
        (("link", "set", "zft1ma", "down"), None),
        (("link", "set", "zft1ma", "up"), None),
        (("route", "add", "blackhole", "10.213.42.2/32"), None),
        (("route", "add", "blackhole", "10.213.41.1/32"), "zfbt1"),
        (("route", "del", "blackhole", "10.213.41.1/32"), "zfbt1"),
    ]
    with pytest.raises(ValueError, match="side must be a or b"):
        lb.lose("main", "c")
