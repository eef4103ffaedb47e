"""Replies as a person reads them: one line per order or fill, tables for books
and reports. Pure: text and rich tables out of the request and its reply, so
the wording is tested without a cluster (`--json` gives the raw reply)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.table import Table


def _qty(n: object) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def _progress(status: object, filled: object, qty: object, remaining: object) -> str:
    """`new, 0 of 100 filled, 100 open`: what became of an order, in one phrase."""
    words = f"{str(status).replace('_', ' ')}, {_qty(filled)} of {_qty(qty)} filled"
    return words + (f", {_qty(remaining)} open" if remaining else "")


def _asked(side: object, qty: object, instrument: object, price: object) -> str:
    at = f"@ {price}" if price is not None else "at market"
    return f"{side} {_qty(qty)} {instrument} {at}"


def order_line(body: Mapping[str, Any], result: Mapping[str, Any]) -> list[str]:
    """A new order: what was asked, what became of it, then one line per fill."""
    asked = _asked(body.get("side"), body.get("qty"), body.get("instrument"), body.get("price"))
    done = _progress(
        result.get("status"), result.get("filled"), body.get("qty"), result.get("remaining")
    )
    lines = [f"order {result.get('order_id')} ({asked}): {done}"]
    for f in result.get("fills") or ():
        lines.append(
            f"  fill {f.get('exec_id')}: {_qty(f.get('qty'))} @ {f.get('price')}"
            f" against order {f.get('maker_order_id')}"
        )
    return lines


def cancel_line(result: Mapping[str, Any]) -> list[str]:
    return [
        f"order {result.get('order_id')}: cancelled, "
        f"{_qty(result.get('cancelled_qty'))} left unfilled"
    ]


def status_line(r: Mapping[str, Any]) -> list[str]:
    asked = _asked(r.get("side"), r.get("qty"), r.get("instrument"), r.get("price"))
    done = _progress(r.get("status"), r.get("filled"), r.get("qty"), r.get("remaining"))
    return [
        f"order {r.get('order_id')} ({asked}, {r.get('type')}): {done}; client {r.get('client_id')}"
    ]


def book_table(result: Mapping[str, Any]) -> Table:
    """Bids and asks side by side, best prices on the first row."""
    t = Table(
        title=f"{result.get('instrument')} order book",
        box=box.SIMPLE_HEAD,
        title_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    for head in ("orders", "bid qty", "bid", "ask", "ask qty", "orders"):
        t.add_column(head, justify="right" if head != "ask" else "left", no_wrap=True)
    bids: Sequence[Sequence[Any]] = result.get("bids") or []
    asks: Sequence[Sequence[Any]] = result.get("asks") or []
    for i in range(max(len(bids), len(asks))):
        b = bids[i] if i < len(bids) else None
        a = asks[i] if i < len(asks) else None
        t.add_row(
            _qty(b[2]) if b else "",
            _qty(b[1]) if b else "",
            str(b[0]) if b else "",
            str(a[0]) if a else "",
            _qty(a[1]) if a else "",
            _qty(a[2]) if a else "",
        )
    if not bids and not asks:
        t.add_row("", "", "(empty)", "", "", "")
    return t


def reports_table(result: Mapping[str, Any]) -> Table | str:
    reports: Sequence[Mapping[str, Any]] = result.get("reports") or []
    if not reports:
        return "no new execution reports"
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    heads = ("exec", "order", "instrument", "side", "price", "qty", "open")
    keys = ("exec_id", "order_id", "instrument", "side", "price", "qty", "remaining")
    for h in heads:
        t.add_column(h, justify="left" if h in ("instrument", "side") else "right")
    for r in reports:
        t.add_row(*(_qty(r.get(k)) for k in keys))
    return t


def rejection_line(status: str, result: Mapping[str, Any]) -> str:
    return f"{status}: {result.get('code', '?')}: {result.get('message', '')}"
