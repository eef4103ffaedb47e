"""`zmqfail witness`: run the witness, or ask a running one for its status."""

from __future__ import annotations

import json
import logging
import signal
import sys
from types import FrameType
from typing import Any

import click

from zmqfail import logs
from zmqfail.cli.common import config_option, load_config, one_line_errors, timeout_option
from zmqfail.config import ClusterConfig, WitnessConfig
from zmqfail.errors import ConfigError, ZmqfailError


def witness_config(cfg: ClusterConfig) -> WitnessConfig:
    if cfg.witness is None:
        where = cfg.path or "the embedded default config"
        raise ConfigError(
            f"{where} has no [witness] table (`zmqfail config init --witness` writes one)"
        )
    if cfg.witness.etcd is not None:
        raise ConfigError(
            f"the config's witness is {cfg.witness.where}: there is no zmqfail witness to "
            "run or ask (`zmqfail status --json` shows each server's lease; docs/etcd.md)"
        )
    return cfg.witness


def witness_status(w: WitnessConfig, timeout: float) -> dict[str, Any]:
    """The witness's status, or a row saying why there is none (never raises)."""
    from zmqfail.client.control import call

    if w.etcd is not None:  # no process of ours to ask: the nodes' rows tell the leases
        return {"name": "witness", "endpoint": w.where, "state": "etcd"}
    try:
        return call(w, "status", {}, timeout, fail_fast=True)
    except ZmqfailError as exc:
        return {
            "name": "witness",
            "endpoint": w.endpoint,
            "state": "unreachable",
            "error": str(exc),
        }


def witness_words(row: dict[str, Any]) -> str:
    """One line for an operator: the granted epoch, its leader, who holds a lease."""
    head = f"witness {row.get('endpoint')}"
    if row.get("state") == "etcd":
        return (
            f"{head}: epochs and leases kept by etcd (`zmqfail status --json`: each server's lease)"
        )
    if row.get("state") == "unreachable":
        return (
            f"{head}: unreachable ({row.get('error')}); while it is down no server "
            "takes over or runs alone"
        )
    leader = row.get("leader") or "nobody"
    holder = row.get("lease_holder")
    lease = (
        f"lease held by {holder} for {row.get('lease_left_ms')} ms more"
        if holder
        else "no lease held"
    )
    return (
        f"{head}: epoch {row.get('epoch')} granted to {leader}; {lease}; "
        f"{row.get('elections')} election(s), {row.get('refusals')} refusal(s), "
        f"{row.get('bad_frames')} bad frame(s) since it started"
    )


@click.command("witness")
@config_option
@click.option(
    "--status", "ask", is_flag=True, help="Ask the running witness instead of running one."
)
@click.option("--json", "as_json", is_flag=True, help="With --status: the raw status object.")
@timeout_option(1.0, "With --status: seconds to wait for its answer.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning"]))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(logs.FORMATS))
@one_line_errors
def witness_cmd(
    config_path: str | None,
    ask: bool,
    as_json: bool,
    timeout: float,
    log_level: str,
    log_format: str,
) -> None:
    """Run the witness of the config's [witness] table in the foreground
    (SIGTERM or SIGINT: clean stop), or with --status ask it.

    With a witness, every new epoch is elected by it and a server runs alone
    only while it holds the witness's lease (docs/operations.md, "The witness").
    Exit status: 0 clean stop, 1 an error at start (one line), 3 its store
    could not be written (it stops rather than grant what it cannot keep).
    """
    from zmqfail.client.control import call

    cfg = witness_config(load_config(config_path))
    if ask:
        row = call(cfg, "status", {}, timeout, fail_fast=True)
        click.echo(json.dumps(row, sort_keys=True) if as_json else witness_words(row))
        return
    sys.exit(_run(cfg, log_level, log_format))


def _run(cfg: WitnessConfig, log_level: str, log_format: str) -> int:
    from zmqfail.witness.server import WitnessServer

    server = WitnessServer(cfg)
    # Opened before logging and signals are set up: a start that fails (a
    # damaged store, a busy dir or port) is one line and changes nothing else.
    server.open()
    handler, limiter = logs.setup(
        getattr(logging, log_level.upper()),
        log_format,
        "witness",
        True,
        sys.stderr,
        lambda: {"epoch": server.logic.stored.epoch},
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return server.run()
    except Exception:
        logging.getLogger("zmqfail").exception("the witness failed")
        raise
    finally:
        if limiter is not None:
            limiter.flush(handler)
