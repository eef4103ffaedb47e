"""`zmqfail keys generate`: CURVE key pairs for servers, clients and operators."""

from __future__ import annotations

from pathlib import Path

import click

from zmqfail.cli.common import one_line_errors
from zmqfail.errors import ConfigError
from zmqfail.security import generate


@click.group("keys")
def keys_group() -> None:
    """CurveZMQ keys (docs/security.md)."""


@keys_group.command("generate")
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("names", nargs=-1, required=True)
@one_line_errors
def keys_generate(directory: str, names: tuple[str, ...]) -> None:
    """Write DIRECTORY/NAME.key (public) and NAME.key_secret (mode 0600) for
    each NAME; an existing key is never overwritten.

    A server's pair goes in the config's keys_dir under the server's name (the
    witness's as "witness"); a client's public key in clients_allowed_dir, an
    operator's in operators_allowed_dir. Copy each secret only to its own host.
    """
    if len(set(names)) != len(names):
        raise ConfigError("each key name once")
    d = Path(directory)
    for name in names:  # every name checked before any file is written
        for suffix in (".key", ".key_secret"):
            if (d / f"{name}{suffix}").exists():
                raise ConfigError(f"{d / (name + suffix)} exists; a key is never overwritten")
    for name in names:
        public, secret = generate(d, name)
        click.echo(f"{public}  {secret}")
