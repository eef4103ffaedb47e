"""A ledger: accounts and transfers between them, the classic test of a
replicated system because its invariant is global: money only moves, so the
total of all balances never changes, whatever fails.

Tables:

* ``accounts``: account number (int) -> balance (int, never negative).
  Accounts 1..``accounts`` exist from the start with ``initial_balance``
  each (the same on every node: they come from the settings); ``open`` adds
  more, at balance 0, so the total stays what the settings made it.
* ``transfers``: transfer id (str, chosen by the client) -> ``[from, to,
  amount]``, oldest first. A transfer whose id is already there is not
  applied again: the answer is ok with ``duplicate`` true. This is what makes
  a retry safe when the framework cannot say whether a request was executed
  (a session expired, a stale msg_id): send the same transfer id again. The
  last ``max_transfers`` transfers are remembered; an id older than that
  would be applied again, so ids must never be reused.

Requests (``op``): ``transfer`` {id, from, to, amount}, ``open`` {account},
and the queries ``balance`` {account} and ``total``.
"""

from __future__ import annotations

from typing import Any

from zmqfail.app import DEL, PUT, Outcome, answer, ok, reject
from zmqfail.app_tables import TableApp
from zmqfail.apps.ledger.settings import LedgerConfig

MAX_AMOUNT = 10**15
MAX_ID_LEN = 64

BAD_REQUEST = "bad_request"
UNKNOWN_ACCOUNT = "unknown_account"
INSUFFICIENT_FUNDS = "insufficient_funds"
ACCOUNT_EXISTS = "account_exists"
ID_REUSED = "id_reused"


def _account(body: dict[str, Any], key: str) -> int | None:
    v = body.get(key)
    return v if type(v) is int and v > 0 else None


class Ledger(TableApp):
    TABLES = ("accounts", "transfers")

    def __init__(self, cfg: LedgerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tables["accounts"] = dict.fromkeys(range(1, cfg.accounts + 1), cfg.initial_balance)

    @property
    def expected_total(self) -> int:
        return self.cfg.accounts * self.cfg.initial_balance

    def execute(self, client_id: str, body: dict[str, Any]) -> Outcome:
        op = body.get("op") if isinstance(body, dict) else None
        if op == "transfer":
            return self._transfer(body)
        if op == "balance":
            acct = _account(body, "account")
            if acct is None:
                return reject(False, BAD_REQUEST, "account must be a positive integer")
            balance = self.tables["accounts"].get(acct)
            if balance is None:
                return reject(False, UNKNOWN_ACCOUNT, f"no account {acct}")
            return answer({"account": acct, "balance": balance})
        if op == "total":
            accounts = self.tables["accounts"]
            return answer({"total": sum(accounts.values()), "accounts": len(accounts)})
        if op == "open":
            acct = _account(body, "account")
            if acct is None:
                return reject(False, BAD_REQUEST, "account must be a positive integer")
            if acct in self.tables["accounts"]:
                return reject(True, ACCOUNT_EXISTS, f"account {acct} exists")
            return ok({"account": acct, "balance": 0}, [[PUT, "accounts", acct, 0]])
        return reject(False, BAD_REQUEST, f"unknown op {op!r}")

    def _transfer(self, body: dict[str, Any]) -> Outcome:
        tid, src, dst, amount = body.get("id"), body.get("from"), body.get("to"), body.get("amount")
        if not isinstance(tid, str) or not 0 < len(tid) <= MAX_ID_LEN:
            return reject(False, BAD_REQUEST, f"id must be a string of 1..{MAX_ID_LEN} characters")
        if type(src) is not int or type(dst) is not int or src == dst:
            return reject(False, BAD_REQUEST, "from and to must be two different account numbers")
        if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
            return reject(False, BAD_REQUEST, f"amount must be an integer within 1..{MAX_AMOUNT}")
        transfers = self.tables["transfers"]
        done = transfers.get(tid)
        if done is not None:
            # Logged (it depends on the state) with no changes: a retry of a
            # transfer that was applied, perhaps through another session.
            if done != [src, dst, amount]:
                return reject(True, ID_REUSED, f"transfer {tid!r} was {done}, not this one")
            return ok({"id": tid, "duplicate": True}, [])
        accounts = self.tables["accounts"]
        have, dst_balance = accounts.get(src), accounts.get(dst)
        if have is None or dst_balance is None:
            missing = src if have is None else dst
            return reject(True, UNKNOWN_ACCOUNT, f"no account {missing}")
        if have < amount:
            return reject(True, INSUFFICIENT_FUNDS, f"account {src} holds {have}, not {amount}")
        changes: list[Any] = [
            [PUT, "accounts", src, have - amount],
            [PUT, "accounts", dst, dst_balance + amount],
            [PUT, "transfers", tid, [src, dst, amount]],
        ]
        if len(transfers) >= self.cfg.max_transfers:
            # Retention in the record itself, oldest first: every replica drops
            # the same id because the log says which.
            changes.append([DEL, "transfers", next(iter(transfers))])
        return ok({"id": tid, "duplicate": False, "balance": have - amount}, changes)

    def stats(self) -> dict[str, int]:
        total = sum(self.tables["accounts"].values())
        return {"total": total, "expected_total": self.expected_total}

    def check(self) -> list[str]:
        accounts = self.tables["accounts"]
        bad = [f"account {a} is negative: {b}" for a, b in accounts.items() if b < 0]
        total = sum(accounts.values())
        if total != self.expected_total:
            bad.append(f"the balances total {total}, not {self.expected_total}")
        if len(self.tables["transfers"]) > self.cfg.max_transfers:
            bad.append(f"{len(self.tables['transfers'])} transfers kept, more than the limit")
        return bad
