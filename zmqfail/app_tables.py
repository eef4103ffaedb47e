"""TableApp: everything an application needs but ``execute``, for state that is
nothing but named tables and named queues.

A table maps keys to values (``PUT``, ``DEL``); a queue maps keys to FIFOs
(``PUSH``, ``POP``), so "one outbox per client" is one queue. ``apply`` does
exactly what the operations say, nothing more; the snapshot keeps every
table's and queue's insertion order, and the digest hashes the snapshot as
is, so two replicas that applied the same records in the same order agree,
and any difference in order (which decides, say, "the oldest entry") shows.

Values are stored as the change operations carry them. On a backup they come
out of msgpack, so use what msgpack gives back (lists, not tuples; maps with
str keys; int, str, bytes, bool, None), and never change a stored value in
place: the primary's tables share it with the record already written.
"""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

from zmqfail.app import DEL, POP, PUSH, PUT, Description, Outcome, digest_of
from zmqfail.errors import ProtocolError


class TableApp:
    TABLES: ClassVar[tuple[str, ...]] = ()
    QUEUES: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.tables: dict[str, dict[Any, Any]] = {name: {} for name in self.TABLES}
        self.queues: dict[str, dict[Any, deque[Any]]] = {name: {} for name in self.QUEUES}

    def execute(self, client_id: str, body: dict[str, Any]) -> Outcome:
        raise NotImplementedError

    def apply(self, changes: list[Any]) -> None:
        tables, queues = self.tables, self.queues
        for ch in changes:
            try:
                op = ch[0]
                if op == PUT:
                    tables[ch[1]][ch[2]] = ch[3]
                elif op == DEL:
                    tables[ch[1]].pop(ch[2], None)
                elif op == PUSH:
                    family = queues[ch[1]]
                    q = family.get(ch[2])
                    if q is None:
                        q = family[ch[2]] = deque()
                    q.append(ch[3])
                elif op == POP:
                    family = queues[ch[1]]
                    q = family.get(ch[2])
                    if q is not None:
                        for _ in range(min(ch[3], len(q))):
                            q.popleft()
                        if not q:
                            del family[ch[2]]
                else:
                    raise ProtocolError(f"unknown change op {op!r}")
            except (KeyError, IndexError, TypeError) as exc:
                raise ProtocolError(f"bad change op {ch!r:.200}: {exc!r}") from None

    def snapshot(self) -> dict[str, Any]:
        return {
            "tables": {name: [[k, v] for k, v in t.items()] for name, t in self.tables.items()},
            "queues": {
                name: [[k, list(q)] for k, q in family.items()]
                for name, family in self.queues.items()
            },
        }

    def restore(self, snap: dict[str, Any]) -> None:
        try:
            tables, queues = snap["tables"], snap["queues"]
            if set(tables) != set(self.TABLES) or set(queues) != set(self.QUEUES):
                raise ProtocolError(
                    f"snapshot has tables {sorted(tables)} and queues {sorted(queues)}, "
                    f"expected {sorted(self.TABLES)} and {sorted(self.QUEUES)}"
                )
            self.tables = {name: dict(tables[name]) for name in self.TABLES}
            self.queues = {
                name: {k: deque(items) for k, items in queues[name] if items}
                for name in self.QUEUES
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"snapshot is malformed: {exc!r}") from None

    def digest(self) -> str:
        return digest_of(self.snapshot())

    def describe(self) -> Description:
        return Description(
            tables={name: len(t) for name, t in self.tables.items()},
            queues={name: sum(map(len, f.values())) for name, f in self.queues.items()},
            stats=self.stats(),
        )

    def stats(self) -> dict[str, int]:
        """Counters for `zmqfail status`, beyond table sizes."""
        return {}

    def check(self) -> list[str]:
        return []
