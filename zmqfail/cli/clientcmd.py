"""`zmqfail client ...`: send single requests from the shell."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from zmqfail.cli.common import config_option, load_config, one_line_errors
from zmqfail.client.sync import Client
from zmqfail.protocol import STATUS_OK, Reply


@click.group("client")
def client_group() -> None:
    """Send requests to the cluster (orders, cancels, queries)."""


timeout_option = click.option(
    "--timeout", default=5.0, show_default=True, help="Seconds to wait for the reply."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the reply as JSON.")


def _send(config_path: str | None, body: dict[str, Any], timeout: float, as_json: bool) -> None:
    cfg = load_config(config_path)
    with Client(cfg, timeout=timeout) as c:
        reply = c.request(body)
    _print(reply, as_json)
    if reply.status != STATUS_OK:
        sys.exit(2)


def _print(reply: Reply, as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps(
                {
                    "msg_id": reply.msg_id,
                    "status": reply.status,
                    "result": reply.result,
                    "epoch": reply.epoch,
                    "server": reply.server,
                },
                sort_keys=True,
            )
        )
        return
    if reply.status != STATUS_OK:
        r = reply.result
        click.echo(f"{reply.status}: {r.get('code', '?')}: {r.get('message', '')}", err=True)
        return
    click.echo(" ".join(f"{k}={v}" for k, v in reply.result.items()))


@client_group.command("order")
@config_option
@click.argument("side", type=click.Choice(["buy", "sell"]))
@click.argument("instrument")
@click.argument("qty", type=int)
@click.argument("price", required=False)
@timeout_option
@json_option
@one_line_errors
def order_cmd(
    config_path: str | None,
    side: str,
    instrument: str,
    qty: int,
    price: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Place an order: SIDE INSTRUMENT QTY [PRICE] (no price: a market order)."""
    body: dict[str, Any] = {
        "op": "new",
        "instrument": instrument,
        "side": side,
        "qty": qty,
        "type": "market" if price is None else "limit",
    }
    if price is not None:
        body["price"] = price
    _send(config_path, body, timeout, as_json)


@client_group.command("cancel")
@config_option
@click.argument("order_id", type=int)
@timeout_option
@json_option
@one_line_errors
def cancel_cmd(config_path: str | None, order_id: int, timeout: float, as_json: bool) -> None:
    """Cancel an order (only the client that placed it may: use the library for that)."""
    _send(config_path, {"op": "cancel", "order_id": order_id}, timeout, as_json)


@client_group.command("status")
@config_option
@click.argument("order_id", type=int)
@timeout_option
@json_option
@one_line_errors
def status_cmd(config_path: str | None, order_id: int, timeout: float, as_json: bool) -> None:
    """Show one order."""
    _send(config_path, {"op": "status", "order_id": order_id}, timeout, as_json)


@client_group.command("book")
@config_option
@click.argument("instrument")
@click.option("--depth", default=10, show_default=True)
@timeout_option
@json_option
@one_line_errors
def book_cmd(
    config_path: str | None, instrument: str, depth: int, timeout: float, as_json: bool
) -> None:
    """Show an instrument's order book."""
    _send(config_path, {"op": "book", "instrument": instrument, "depth": depth}, timeout, as_json)
