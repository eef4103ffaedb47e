"""The ledger's request mix for `zmqfail client bench` and the demo.

Transfers of small amounts between random accounts, each with an id unique to
this client (its seed and a counter), so a checker can tell from the log
whether any transfer was applied twice; a few balance queries. Deterministic
given its seed.
"""

from __future__ import annotations

import random
from typing import Any

from zmqfail.apps.ledger.settings import LedgerConfig


class TransferMix:
    def __init__(self, cfg: LedgerConfig, seed: int, queries: float = 0.05) -> None:
        if cfg.accounts < 2:
            raise ValueError("transfers need at least two accounts")
        self.rng = random.Random(seed)
        self.accounts = cfg.accounts
        self.prefix = f"t{seed}-"
        self.queries = queries
        self.sent = 0

    def next_body(self) -> dict[str, Any]:
        rng = self.rng
        if rng.random() < self.queries:
            return {"op": "balance", "account": rng.randint(1, self.accounts)}
        src, dst = rng.sample(range(1, self.accounts + 1), 2)
        self.sent += 1
        return {
            "op": "transfer",
            "id": f"{self.prefix}{self.sent}",
            "from": src,
            "to": dst,
            "amount": rng.randint(1, 100),
        }

    def on_ok(self, body: dict[str, Any], result: dict[str, Any]) -> None:
        """Nothing to learn: every transfer stands alone."""

    def is_write(self, body: dict[str, Any]) -> bool:
        return body.get("op") in ("transfer", "open")
