"""Operator control of failover: `promote`, `pause`, `resume` and `history`
(`switchover` is in main.py). The decisions are the nodes' (each answers
over its control socket, or refuses with one line and changes nothing);
these commands ask, wait for the outcome and say it."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import click

from zmqfail.cli.common import (
    config_option,
    group,
    groups,
    load_config,
    one_line_errors,
    shard_option,
    timeout_option,
)
from zmqfail.cli.historyview import lines, merged, quarantine_lines
from zmqfail.client.control import ControlRefused, call, node_status
from zmqfail.cluster import Cluster
from zmqfail.config import NodeConfig
from zmqfail.core.journal import StateChange, decode_all
from zmqfail.errors import Unavailable, ZmqfailError
from zmqfail.txlog import histfile
from zmqfail.txlog.snapshot import META_NAME

ASK_TIMEOUT = 2.0  # seconds for one node to answer a control command


def ask(node: NodeConfig, command: str, args: dict[str, Any]) -> dict[str, Any]:
    """One control command; a refusal is the node's own line ("cannot promote
    b: ..."), an unreachable node names its endpoint."""
    try:
        return call(node, command, args, ASK_TIMEOUT)
    except ControlRefused as exc:
        raise ZmqfailError(exc.reason) from None


@click.command("promote")
@click.argument("node")
@click.option(
    "--force",
    is_flag=True,
    help="Even while NODE hears its peer, or from standby, syncing or fenced (it may lack "
    "acknowledged records).",
)
@config_option
@shard_option
@timeout_option(10.0, "Seconds to wait for NODE to serve.")
@one_line_errors
def promote_cmd(
    node: str, force: bool, config_path: str | None, shard: str | None, timeout: float
) -> None:
    """Make NODE take over now, when you know the other server is dead.

    Refused while NODE hears another server (use switchover to move a live
    primary) and from a backup that is not in sync, unless --force. With a
    witness, NODE still needs its grant: it waits for the old primary's lease
    to run out. With [shards], NODE takes over its own shard (--shard, if
    given, must be that one).
    """
    cfg = group(load_config(config_path, shards=True), shard, node)
    target = cfg.node(node)
    res = ask(target, "promote", {"force": force})
    if res.get("may_lack_records"):
        click.echo(
            f"warning: {node} was {res.get('was')}: it may lack records its peer acknowledged; "
            "they are lost unless that server comes back (then what it alone holds is set "
            "aside in quarantine and counted)",
            err=True,
        )
    if res.get("heard"):
        heard = ", ".join(res["heard"])
        click.echo(
            f"warning: {node} still hears {heard}, which steps down on the new epoch", err=True
        )
    asking = res.get("asking")
    if asking:
        click.echo(
            f"{node} asks the witness for epoch {asking}; it takes over when granted "
            "(once the old primary's lease has run out)"
        )
    try:
        row = Cluster(cfg).wait_until(node, lambda st: st.serving, "primary", timeout)
    except Unavailable:
        refusal = _witness_refusal(target)
        raise ZmqfailError(f"{node} did not take over within {timeout:g}s{refusal}") from None
    click.echo(f"{node} is primary at epoch {row.epoch} ({row.state_name})")


def _witness_refusal(node: NodeConfig) -> str:
    witness = node_status(node, timeout=0.5).witness or {}
    if witness.get("asking"):
        why = witness.get("last_refusal") or "no answer yet"
        return f": still waiting for the witness's grant of epoch {witness['asking']} ({why})"
    return ""


def _servers(config_path: str | None, shard: str | None) -> list[NodeConfig]:
    """Every server of the named shard, or of every shard (of the cluster)."""
    return [n for g in groups(load_config(config_path, shards=True), shard) for n in g.nodes]


def _asked(node: NodeConfig, command: str) -> dict[str, Any] | ZmqfailError:
    try:
        return ask(node, command, {})
    except ZmqfailError as exc:
        return exc


def _everywhere(nodes: list[NodeConfig], command: str, done: str) -> None:
    """Send `command` to every node (the pause is each node's own, kept in its
    meta); say which answered, and fail with one line naming those that did not.
    Every node is asked at once: a dead one costs the command one timeout,
    not one each (an operator pauses failover when nodes are in trouble)."""
    with ThreadPoolExecutor(max(1, len(nodes)), thread_name_prefix="ask") as pool:
        answers = list(pool.map(lambda n: _asked(n, command), nodes))
    missed: list[str] = []
    for n, res in zip(nodes, answers, strict=True):
        if isinstance(res, ZmqfailError):
            missed.append(f"{n.name} ({res})")
            continue
        click.echo(f"{n.name}: automatic failover {done} ({res.get('role')}/{res.get('state')})")
    if missed:
        raise ZmqfailError(
            f"not {done} on {', '.join(missed)}; run `zmqfail {command}` again when it is back"
        )


@click.command("pause")
@config_option
@shard_option
@one_line_errors
def pause_cmd(config_path: str | None, shard: str | None) -> None:
    """Hold automatic failover on every node (maintenance).

    While paused no backup takes over on its own and no restarted server
    leads at a new epoch; a primary that loses its backup still runs alone.
    The pause survives restarts. `promote` and `switchover` still work.
    With [shards]: every shard's servers, or --shard NAME's.
    """
    _everywhere(_servers(config_path, shard), "pause", "paused")


@click.command("resume")
@config_option
@shard_option
@one_line_errors
def resume_cmd(config_path: str | None, shard: str | None) -> None:
    """Automatic failover again, on every node: a backup whose primary went
    while paused takes over now. With [shards]: every shard's servers, or
    --shard NAME's."""
    _everywhere(_servers(config_path, shard), "resume", "resumed")


@click.command("history")
@config_option
@shard_option
@click.option("--node", "node_name", default=None, help="One node only.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of entries, oldest first.")
@click.option(
    "--last",
    default=200,
    show_default=True,
    type=click.IntRange(0, 1_000_000),
    help="Show the newest N entries (0: all kept).",
)
@one_line_errors
def history_cmd(
    config_path: str | None, shard: str | None, node_name: str | None, as_json: bool, last: int
) -> None:
    """The nodes' failover history: every change of role or state, why, the
    epoch, the outage each takeover saw, operator actions, records set aside.

    Read from each node's data dir when it is on this machine (also while the
    node is down), else asked of the node over its control socket. With
    [shards]: every shard's servers, --shard NAME's, or --node's.
    """
    if node_name:
        nodes = [group(load_config(config_path, shards=True), shard, node_name).node(node_name)]
    else:
        nodes = _servers(config_path, shard)
    per_node: dict[str, list[StateChange]] = {}
    missed: list[str] = []
    for n in nodes:
        try:
            per_node[n.name] = _history_of(n, last)
        except ZmqfailError as exc:
            missed.append(str(exc))
    entries = merged(per_node)
    if last:
        entries = entries[-last:]
    if as_json:
        click.echo(json.dumps([e.to_wire() for e in entries], sort_keys=True))
    else:
        for line in lines(entries) + quarantine_lines(per_node):
            click.echo(line)
    if missed:
        raise ZmqfailError("; ".join(missed))


def _history_of(node: NodeConfig, last: int) -> list[StateChange]:
    d = node.data_dir
    if (d / META_NAME).exists() or histfile.history_path(d).exists():
        got = histfile.read(d)
        entries, bad = decode_all(got.entries, f"{node.name}: history entry")
        if got.bad_lines or bad:
            first = f" ({bad[0]})" if bad else ""
            skipped = got.bad_lines + len(bad)
            click.echo(f"{node.name}: {skipped} unreadable line(s) skipped in {d}{first}", err=True)
        return entries
    try:
        res = ask(node, "history", {"last": last})
    except ZmqfailError as exc:
        raise ZmqfailError(
            f"{node.name}: no data dir here ({d}) and no answer over control ({exc})"
        ) from None
    raw = res.get("entries")
    if not isinstance(raw, list):
        raise ZmqfailError(f"{node.name}: its history answer holds no entries")
    entries, bad = decode_all(raw, f"{node.name}: history entry")
    if bad:
        click.echo(f"{node.name}: {len(bad)} bad entries skipped ({bad[0]})", err=True)
    return entries
