"""`zmqfail log dump|verify|reset`: inspect a node's data directory, or set a
damaged one aside so the node copies its peer's state.

dump and verify only read, so they are safe on a running node's directory and
on a directory kept as evidence after an incident. That is why dump stops
before a torn tail (a live writer may be mid-append) instead of running
recovery. Both read the archive too (``[retention]``): the whole audit trail.
"""

from __future__ import annotations

import enum
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from zmqfail.cli.common import one_line_errors
from zmqfail.errors import ProtocolError
from zmqfail.txlog.record import TxRecord
from zmqfail.txlog.recovery import TornTail, has_data, iter_records, verify
from zmqfail.txlog.reset import reset_data_dir
from zmqfail.txlog.retention import ARCHIVE_DIRNAME


def _jsonable(obj: object) -> Any:
    # msgpack bin fields arrive as bytes, which json cannot carry; a decoded
    # enum field is written as it travels, its value.
    if isinstance(obj, bytes | bytearray):
        return obj.hex()
    if isinstance(obj, enum.Enum):
        return obj.value
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


def _data_dir(path: str, archive: Path | None = None) -> Path:
    d = Path(path)
    if not d.is_dir():
        _fail(f"data dir {d} does not exist or is not a directory")
    if not has_data(d, archive):
        _fail(
            f"{d} holds no zmqfail data (no meta.zfm, log/, snap/ or {ARCHIVE_DIRNAME}/): "
            "is it a node's data directory?"
        )
    return d


def _reader_gone() -> NoReturn:
    """The reader of our output left (`log dump | head`): stop quietly, as Unix
    tools do, instead of blaming the data directory."""
    # Python would flush stdout again at exit and complain: point it at /dev/null.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(128 + signal.SIGPIPE)


def data_dir_params(f: Callable[..., None]) -> Callable[..., None]:
    """DATA_DIR as an argument or as --data-dir: `log dump DIR | head` is what
    people type. (`log reset`, which moves files, keeps the explicit option.)"""
    f = click.argument("data_dir_arg", required=False, metavar="[DATA_DIR]")(f)
    return click.option("--data-dir", "data_dir", help="The node's data directory.")(f)


def _given_dir(option: str | None, argument: str | None) -> str:
    if option and argument and option != argument:
        raise click.UsageError(f"two data directories given: {argument} and --data-dir {option}")
    d = option or argument
    if not d:
        raise click.UsageError("Missing the node's data directory: DATA_DIR or --data-dir")
    return d


archive_option = click.option(
    "--archive-dir",
    "archive_dir",
    default=None,
    type=click.Path(file_okay=False),
    help=f"Where archived segments are (default: DATA_DIR/{ARCHIVE_DIRNAME}).",
)


@click.group("log")
def log_group() -> None:
    """Read a node's transaction log (read-only)."""


@log_group.command("dump")
@data_dir_params
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@click.option("--from-lsn", "from_lsn", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--to-lsn", "to_lsn", type=click.IntRange(min=0), default=None, help="Last lsn.")
@archive_option
@click.option("--no-archive", is_flag=True, help="Only the live log, not the archive.")
@one_line_errors
def dump_cmd(
    data_dir: str | None,
    data_dir_arg: str | None,
    as_json: bool,
    from_lsn: int,
    to_lsn: int | None,
    archive_dir: str | None,
    no_archive: bool,
) -> None:
    """Print the records on disk, archived ones first (snapshots are not included)."""
    archive = Path(archive_dir) if archive_dir else None
    d = _data_dir(_given_dir(data_dir, data_dir_arg), archive)
    torn: list[TornTail] = []
    notes: list[str] = []
    records = iter_records(
        d,
        from_lsn,
        torn.append,
        to_lsn=to_lsn,
        archive=archive,
        include_archive=not no_archive,
        on_gap=notes.append,
    )
    try:
        for lsn, payload in records:
            try:
                rec = TxRecord.decode(payload)
            except ProtocolError as exc:
                _fail(f"lsn {lsn}: undecodable record: {exc}")
            if as_json:
                line = json.dumps(rec.to_json_obj(), sort_keys=True, default=_jsonable)
            else:
                line = _text_line(rec)
            click.echo(line)
            for note in notes:
                click.echo(f"zmqfail: note: {note}", err=True)
            notes.clear()
        sys.stdout.flush()
    except BrokenPipeError:
        _reader_gone()
    except OSError as exc:
        _fail(f"cannot read {d}: {exc}")
    for note in notes:
        click.echo(f"zmqfail: note: {note}", err=True)
    for t in torn:
        click.echo(
            f"zmqfail: note: {t.path}: stopped before a torn tail of {t.nbytes} bytes at "
            f"offset {t.offset} ({t.reason})",
            err=True,
        )


@log_group.command("verify")
@data_dir_params
@archive_option
@one_line_errors
def verify_cmd(data_dir: str | None, data_dir_arg: str | None, archive_dir: str | None) -> None:
    """Check snapshots, meta, every log frame and record, and the archive; exit 1 on damage."""
    archive = Path(archive_dir) if archive_dir else None
    d = _data_dir(_given_dir(data_dir, data_dir_arg), archive)
    try:
        rep = verify(d, archive)
    except OSError as exc:
        _fail(f"cannot read {d}: {exc}")
    snap = "none" if rep.snapshot_lsn is None else str(rep.snapshot_lsn)
    span = f"lsn {rep.first_lsn}..{rep.last_lsn}" if rep.records + rep.archived_records else ""
    click.echo(
        f"{d}: snapshot lsn {snap}; {rep.segments} segment(s), {rep.records} record(s); "
        f"archive: {rep.archived_segments} segment(s), {rep.archived_records} record(s)"
        + (f"; {span}" if span else "; no records")
    )
    for w in rep.warnings:
        click.echo(f"warning: {w}")
    for p in rep.problems:
        click.echo(f"PROBLEM: {p}")
    click.echo("OK" if rep.ok else f"DAMAGED: {len(rep.problems)} problem(s)")
    if not rep.ok:
        sys.exit(1)


@log_group.command("reset")
@click.option("--data-dir", "data_dir", required=True, help="The stopped node's data directory.")
@one_line_errors
def reset_cmd(data_dir: str) -> None:
    """Restore this server from its peer, keeping its damaged files aside.

    Moves log/ and snap/ into DATA_DIR/damaged-<UTC time>/ and marks the node
    as one that may not lead and must resynchronise; start it again while its
    peer serves and it copies the peer's state. Only when the peer is serving:
    alone, the node would wait for a peer that never comes.
    """
    res = reset_data_dir(Path(data_dir))
    moved = ", ".join(res.moved) or "nothing"
    click.echo(f"{data_dir}: moved {moved} to {res.aside}")
    if res.meta_note:
        click.echo(f"warning: {res.meta_note}")
    click.echo(
        f"meta: epoch {res.epoch}, may not lead, must resync. Next: start the node while its "
        "peer serves; it follows the peer and copies its state."
    )
