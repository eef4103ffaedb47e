"""The application interface: what zmqfail makes fail-safe, and what it asks of it.

The reference's application process takes a request, processes it as a
transaction on tables in RAM and persistent queues, and hands the changes to
the transaction log as one record; a backup brings its own tables up to date
from those records. zmqfail splits that work in two:

* the **framework** owns the transaction log, replication, flushing,
  snapshots on disk, failover, the reply gate and client sessions (with the
  stored replies that make a resend exactly-once);
* the **application** owns its tables and queues and answers five questions:
  what would this request do (``execute``, which changes nothing), make these
  changes (``apply``: the same function on the primary, on a backup and in
  recovery), what is your whole state (``snapshot`` / ``restore``,
  ``digest``), what do your tables hold (``describe``, shown by ``status``)
  and do your own invariants hold (``check``).

A read-only query is a request whose outcome has ``write`` False: it is
answered (after every earlier write is committed) and never logged or applied.
A write's changes are a list of operations on named tables and queues, each a
msgpack array (see ``PUT``... below); an application may give ``apply`` more
to do than the operations say (keep an index, evict by a retention rule) as
long as ``apply`` stays a pure function of the state, the changes and the
settings. docs/applications.md is the guide; ``zmqfail.app_tables.TableApp``
does everything but ``execute`` for applications that need nothing more.

An application that can be sharded names its routing key: a module-level
``routing_keys(body)`` beside ``create`` (the keys a request touches; the
order engine's is the instrument, the ledger's the account), and ``keys(settings)``
(the keys there are, for ``config init --shards`` to share out).

An application is chosen by the cluster config: ``[cluster] app`` names a
shipped one (``orders``, ``ledger``) or ``package.module:factory``, and the
``[app]`` table holds its own settings, handed to the factory.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple, Protocol

import msgpack

from zmqfail.errors import ConfigError, ZmqfailError
from zmqfail.protocol import STATUS_OK, STATUS_REJECTED
from zmqfail.tablecheck import check_keys, positive_ints

# Change operations, the vocabulary of a transaction record:
PUT = "put"  # [PUT, table, key, value]: insert or replace a row
DEL = "del"  # [DEL, table, key]: delete a row (absent: nothing)
PUSH = "push"  # [PUSH, queue, key, item]: append to the queue `key` of `queue`
POP = "pop"  # [POP, queue, key, n]: drop the n oldest items of that queue
OPS = (PUT, DEL, PUSH, POP)

# Shipped applications by short name: module (with `create` and `workload`).
SHIPPED = {"orders": "zmqfail.apps.orders", "ledger": "zmqfail.apps.ledger"}
DEFAULT_APP = "orders"


class Outcome(NamedTuple):
    """What executing one request would do, computed without touching the state.

    ``status`` is ``ok`` or ``rejected``. ``write`` False is a read-only query:
    not logged, not applied, not remembered for resends. A rejected write
    keeps ``write`` True with no changes, so the log records the refusal and a
    resend gets the same answer even if the state moved on meanwhile.

    A named tuple, immutable like a frozen dataclass but built in C (a frozen
    dataclass sets each field through object.__setattr__): one is made per
    request, and the processor unpacks it in one step.
    """

    write: bool
    status: str
    result: dict[str, Any]
    changes: list[Any]


def ok(result: dict[str, Any], changes: list[Any]) -> Outcome:
    """A write that succeeded: these changes, this answer."""
    return Outcome(True, STATUS_OK, result, changes)


def answer(result: dict[str, Any]) -> Outcome:
    """The answer of a read-only query."""
    return Outcome(False, STATUS_OK, result, [])


def reject(write: bool, code: str, message: str) -> Outcome:
    """A refusal. ``write`` True: logged (the answer depends on the state, so a
    resend must get this very answer); False: the answer depends on the
    request alone (a malformed body), so nothing needs remembering."""
    return Outcome(write, STATUS_REJECTED, {"code": code, "message": message}, [])


@dataclass(frozen=True, slots=True)
class Description:
    """Sizes of an application's tables and queues (rows; queued items, all
    keys together), plus any counters it wants `zmqfail status` to show."""

    tables: dict[str, int]
    queues: dict[str, int]
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.tables.values()) + sum(self.queues.values())

    def as_dict(self) -> dict[str, Any]:
        return {"tables": dict(self.tables), "queues": dict(self.queues), "stats": dict(self.stats)}


class Application(Protocol):
    """A deterministic state machine on tables and queues: no clock, no
    randomness, no I/O, nothing that could make a backup's ``apply`` differ."""

    def execute(self, client_id: str, body: dict[str, Any]) -> Outcome:
        """What the request would do. Reads the tables, changes nothing.
        ``client_id`` is the caller (stable across its sessions)."""
        ...

    def apply(self, changes: list[Any]) -> None:
        """Make logged changes (lists or tuples, as msgpack gives them back).
        Raises ProtocolError on an operation it does not know: the node stops,
        since its state may be half-updated."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain msgpack-able data (str-keyed maps, lists,
        int, str, bytes, bool, None). May share values with the live tables."""
        ...

    def restore(self, snap: dict[str, Any]) -> None:
        """Fill this fresh instance from a snapshot; ProtocolError if malformed."""
        ...

    def digest(self) -> str:
        """A hash of the whole state: equal states, equal digests, on any node."""
        ...

    def describe(self) -> Description: ...

    def check(self) -> list[str]:
        """The application's own invariants on its current state: one line per
        violation, [] when they hold. Run by the demo and the tests on replayed
        state; never on the request path."""
        ...


Factory = Callable[[dict[str, Any]], Application]
# A request body -> the routing keys it touches (zmqfail/shards.py): () when
# it names none, several when it spans several (a transfer's two accounts).
RoutingKeys = Callable[[dict[str, Any]], tuple[str, ...]]
_METHODS = ("execute", "apply", "snapshot", "restore", "digest", "describe", "check")


class Workload(Protocol):
    """Client side: the request mix `zmqfail client bench` and the demo send."""

    def next_body(self) -> dict[str, Any]: ...

    def on_ok(self, body: dict[str, Any], result: dict[str, Any]) -> None:
        """Learn from an ok reply (ids to cancel, balances...)."""
        ...

    def is_write(self, body: dict[str, Any]) -> bool:
        """Does this body of the mix write (so an acknowledgement means it is
        in the log)? Checkers of a run need it; the framework never asks."""
        ...


def int_settings(
    settings: dict[str, Any], cls: type[Any], app: str, skip: Iterable[str] = ()
) -> dict[str, int]:
    """The [app] keys of a settings dataclass that are positive integers (all
    but `skip`); ConfigError for an unknown key or a bad value."""
    check_keys(f"[app] for {app}:", settings, (f.name for f in fields(cls)))
    return positive_ints("[app]", {k: v for k, v in settings.items() if k not in skip})


def digest_of(obj: Any) -> str:
    """sha256 of the msgpack of `obj`: maps keep their order, so callers that
    want order-independence sort first."""
    return hashlib.sha256(msgpack.packb(obj, use_bin_type=True)).hexdigest()


@dataclass(frozen=True, slots=True)
class AppSpec:
    """Which application the cluster runs, and its settings (the ``[app]``
    table, handed as is to the factory; do not mutate)."""

    ref: str = DEFAULT_APP
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.ref

    def _module_and_attr(self) -> tuple[str, str]:
        if self.ref in SHIPPED:
            return SHIPPED[self.ref], "create"
        module, colon, attr = self.ref.partition(":")
        if not colon or not module or not attr.isidentifier():
            names = ", ".join(sorted(SHIPPED))
            raise ConfigError(
                f"[cluster] app must be one of {names} or 'package.module:factory', "
                f"got {self.ref!r}"
            )
        return module, attr

    def _attr(self, module: str, attr: str) -> Any:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(
                f"[cluster] app {self.ref!r}: cannot import {module}: {exc}"
            ) from None
        obj = getattr(mod, attr, None)
        if not callable(obj):
            raise ConfigError(f"[cluster] app {self.ref!r}: {module} has no callable {attr!r}")
        return obj

    def factory(self) -> Factory:
        factory: Factory = self._attr(*self._module_and_attr())
        return factory

    def create(self) -> Application:
        """A fresh instance; ConfigError (one line) if the settings are refused."""
        factory = self.factory()
        try:
            app = factory(dict(self.settings))
        except ZmqfailError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"[app] settings refused by {self.ref!r}: {type(exc).__name__}: {exc}"
            ) from None
        lacks = [m for m in _METHODS if not callable(getattr(app, m, None))]
        if lacks:
            raise ConfigError(
                f"[cluster] app {self.ref!r} made a {type(app).__name__}, which lacks "
                f"{', '.join(lacks)}: not an application"
            )
        return app

    def workload(self, seed: int) -> Workload:
        """The app's request mix for load tools: `workload(settings, seed)` in
        the factory's module."""
        module, _attr = self._module_and_attr()
        make = self._attr(module, "workload")
        mix: Workload = make(dict(self.settings), seed)
        return mix

    def router(self) -> RoutingKeys:
        """The application's ``routing_keys(body)`` (beside its factory);
        ConfigError when it has none, since it cannot then be sharded."""
        module, _attr = self._module_and_attr()
        fn = getattr(importlib.import_module(module), "routing_keys", None)
        if not callable(fn):
            raise ConfigError(
                f"[cluster] app {self.ref!r} names no routing key ({module} has no "
                "routing_keys(body)), so it cannot be split into [shards]"
            )
        keys_of: RoutingKeys = fn
        return keys_of

    def keys(self) -> list[str]:
        """Every routing key the settings define (``keys(settings)`` beside the
        factory), for ``config init --shards`` to share out."""
        module, _attr = self._module_and_attr()
        listed: list[str] = self._attr(module, "keys")(dict(self.settings))
        return listed
