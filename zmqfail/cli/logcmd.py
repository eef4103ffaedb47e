"""`zmqfail log dump|verify`: inspect a node's data directory without changing it.

Both commands only read, so they are safe on a running node's directory and on
a directory kept as evidence after an incident. That is why dump stops before a
torn tail (a live writer may be mid-append) instead of running recovery.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from zmqfail.cli.common import one_line_errors
from zmqfail.errors import ProtocolError
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.recovery import TornTail, iter_records, verify


def _jsonable(obj: object) -> Any:
    # msgpack bin fields arrive as bytes, which json cannot carry.
    if isinstance(obj, bytes | bytearray):
        return obj.hex()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _compact(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, default=_jsonable)


def _text_line(rec: TxRecord) -> str:
    who = f"{rec.client_id}#{rec.msg_id}" if rec.client_id else f"system#{rec.msg_id}"
    return (
        f"{rec.lsn:>10} e{rec.epoch} {who} {rec.status} body={_compact(rec.body)} "
        f"result={_compact(rec.result)} changes={len(rec.changes)}"
    )


def _fail(message: str) -> NoReturn:
    # Same shape as one_line_errors, so every zmqfail command fails alike.
    click.echo(f"zmqfail: error: {message}", err=True)
    sys.exit(1)


def _data_dir(path: str) -> Path:
    d = Path(path)
    if not d.is_dir():
        _fail(f"data dir {d} does not exist or is not a directory")
    return d


@click.group("log")
def log_group() -> None:
    """Read a node's transaction log (read-only)."""


@log_group.command("dump")
@click.option("--data-dir", "data_dir", required=True, help="The node's data directory.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@click.option("--from-lsn", "from_lsn", type=click.IntRange(min=0), default=0, show_default=True)
@one_line_errors
def dump_cmd(data_dir: str, as_json: bool, from_lsn: int) -> None:
    """Print the records on disk (the snapshot's contents are not included)."""
    d = _data_dir(data_dir)
    torn: list[TornTail] = []
    try:
        for lsn, payload in iter_records(d, from_lsn, torn.append):
            try:
                rec = TxRecord.decode(payload)
            except ProtocolError as exc:
                _fail(f"lsn {lsn}: undecodable record: {exc}")
            if as_json:
                line = json.dumps(rec.to_json_obj(), sort_keys=True, default=_jsonable)
            else:
                line = _text_line(rec)
            click.echo(line)
    except OSError as exc:
        _fail(f"cannot read {d}: {exc}")
    for t in torn:
        click.echo(
            f"zmqfail: note: {t.path}: stopped before a torn tail of {t.nbytes} bytes at "
            f"offset {t.offset} ({t.reason})",
            err=True,
        )


@log_group.command("verify")
@click.option("--data-dir", "data_dir", required=True, help="The node's data directory.")
@one_line_errors
def verify_cmd(data_dir: str) -> None:
    """Check snapshots, meta and every log frame and record; exit 1 on damage."""
    d = _data_dir(data_dir)
    try:
        rep = verify(d)
    except OSError as exc:
        _fail(f"cannot read {d}: {exc}")
    snap = "none" if rep.snapshot_lsn is None else str(rep.snapshot_lsn)
    span = f"lsn {rep.first_lsn}..{rep.last_lsn}" if rep.records else "no records"
    click.echo(
        f"{d}: snapshot lsn {snap}; {rep.segments} segment(s), {rep.records} record(s), {span}"
    )
    for w in rep.warnings:
        click.echo(f"warning: {w}")
    for p in rep.problems:
        click.echo(f"PROBLEM: {p}")
    click.echo("OK" if rep.ok else f"DAMAGED: {len(rep.problems)} problem(s)")
    if not rep.ok:
        sys.exit(1)
