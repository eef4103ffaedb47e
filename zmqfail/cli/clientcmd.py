"""`zmqfail client ...`: send single requests from the shell.

Every call uses the user's stable client id (see `zmqfail/cli/identity.py`),
so `client cancel` and `client reports` work on what earlier calls placed.
Output is for people (lines and tables); `--json` prints the raw reply.
Exit status: 0 ok, 2 rejected or refused by the server, 1 any other error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from zmqfail.apps.orders.engine import MAX_QTY, MAX_REPORTS
from zmqfail.apps.orders.queries import MAX_DEPTH
from zmqfail.cli import show
from zmqfail.cli.common import config_option, load_config, one_line_errors, timeout_option
from zmqfail.cli.identity import claim
from zmqfail.cli.lazy import LazyGroup
from zmqfail.cli.params import MAX_ID, NumberArgs, Price, WholeNumber
from zmqfail.client.sync import Client
from zmqfail.protocol import STATUS_OK, Reply

F = TypeVar("F", bound=Callable[..., Any])


@click.group(
    "client",
    cls=LazyGroup,
    lazy={"bench": "zmqfail.cli.benchcmd:bench_cmd", "plot": "zmqfail.cli.benchcmd:plot_cmd"},
)
def client_group() -> None:
    """Send requests to the cluster (orders, cancels, queries)."""


def request_options(fn: F) -> F:
    """--config, --timeout, --json and --client-id, shared by every request command."""
    fn = click.option(
        "--client-id",
        envvar="ZMQFAIL_CLIENT_ID",
        default=None,
        help="Act as this client (default: your own id, kept in ~/.local/state/zmqfail/).",
    )(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Print the raw reply as JSON.")(fn)
    fn = timeout_option(5.0, "Seconds to wait for the reply.")(fn)
    return config_option(fn)


def _send(
    config_path: str | None,
    body: dict[str, Any],
    timeout: float,
    client_id: str | None,
) -> Reply:
    cfg = load_config(config_path)
    with (
        claim(client_id, wait=timeout) as ident,
        Client(cfg, client_id=ident.client_id, timeout=timeout) as c,
    ):
        # One request uses one msg_id (resends reuse it); it is on disk before it is sent.
        c.session.next_msg_id = ident.reserve(1)
        return c.request(body)


def _finish(reply: Reply, as_json: bool, human: Callable[[dict[str, Any]], Any]) -> None:
    if as_json:
        out = {
            "msg_id": reply.msg_id,
            "status": reply.status,
            "result": reply.result,
            "epoch": reply.epoch,
            "server": reply.server,
        }
        click.echo(json.dumps(out, sort_keys=True))
    elif reply.status == STATUS_OK:
        shown = human(reply.result)
        if isinstance(shown, list):
            for line in shown:
                click.echo(line)
        else:
            from zmqfail.cli.layout import make_console

            make_console().print(shown)
    else:
        click.echo(show.rejection_line(reply.status, reply.result), err=True)
    if reply.status != STATUS_OK:
        sys.exit(2)


@client_group.command("order", cls=NumberArgs)
@click.argument("side", type=click.Choice(["buy", "sell"]))
@click.argument("instrument")
@click.argument("qty", type=WholeNumber(1, MAX_QTY))
@click.argument("price", required=False, type=Price())
@request_options
@one_line_errors
def order_cmd(
    config_path: str | None,
    side: str,
    instrument: str,
    qty: int,
    price: str | None,
    timeout: float,
    as_json: bool,
    client_id: str | None,
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
    reply = _send(config_path, body, timeout, client_id)
    _finish(reply, as_json, lambda r: show.order_line(body, r))


@client_group.command("cancel", cls=NumberArgs)
@click.argument("order_id", type=WholeNumber(1, MAX_ID))
@request_options
@one_line_errors
def cancel_cmd(
    config_path: str | None, order_id: int, timeout: float, as_json: bool, client_id: str | None
) -> None:
    """Cancel an order this client placed."""
    reply = _send(config_path, {"op": "cancel", "order_id": order_id}, timeout, client_id)
    _finish(reply, as_json, show.cancel_line)


@client_group.command("status", cls=NumberArgs)
@click.argument("order_id", type=WholeNumber(1, MAX_ID))
@request_options
@one_line_errors
def status_cmd(
    config_path: str | None, order_id: int, timeout: float, as_json: bool, client_id: str | None
) -> None:
    """Show one order."""
    reply = _send(config_path, {"op": "status", "order_id": order_id}, timeout, client_id)
    _finish(reply, as_json, show.status_line)


@client_group.command("book", cls=NumberArgs)
@click.argument("instrument")
@click.option("--depth", default=10, show_default=True, type=WholeNumber(1, MAX_DEPTH))
@request_options
@one_line_errors
def book_cmd(
    config_path: str | None,
    instrument: str,
    depth: int,
    timeout: float,
    as_json: bool,
    client_id: str | None,
) -> None:
    """Show an instrument's order book."""
    body = {"op": "book", "instrument": instrument, "depth": depth}
    reply = _send(config_path, body, timeout, client_id)
    _finish(reply, as_json, show.book_table)


@client_group.command("reports", cls=NumberArgs)
@click.option("--max", "most", default=100, show_default=True, type=WholeNumber(1, MAX_REPORTS))
@request_options
@one_line_errors
def reports_cmd(
    config_path: str | None, most: int, timeout: float, as_json: bool, client_id: str | None
) -> None:
    """Take this client's execution reports (fills), oldest first; each is shown once."""
    reply = _send(config_path, {"op": "reports", "max": most}, timeout, client_id)
    _finish(reply, as_json, show.reports_table)
