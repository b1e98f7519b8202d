"""One typed spec per money operation: its transaction type, request model, route path, answer
model, the ledger roles that may send it, and the problem codes its decision can produce.

`MONEY_OPS` is keyed by the operation's name, which is its transaction type (`op` in a
`POST /v1/batch` action, `type` of the journaled transaction): the ledger's per-type decision code
can key its own table by the same strings. The code sets below feed the `code` enums of the OpenAPI
documents (shared/routes.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.contract.answers import TransactionAnswer
from shared.contract.requests import (
    BetIn,
    BonusClaimIn,
    DepositIn,
    JackpotPayoutIn,
    MoneyWrite,
    RollbackIn,
    WinIn,
    WithdrawalIn,
)

# Any request with a body to an authenticated route.
REQUEST_CODES = (
    "validation_error",
    "malformed_json",
    "unauthenticated",
    "forbidden",
    "payload_too_large",
    "request_timeout",
)
# Any authenticated route without a body.
READ_CODES = ("validation_error", "unauthenticated", "forbidden", "not_found")
# Any write that reaches the ledger's writer: it may be refused as a whole.
WRITER_CODES = ("ledger_unavailable", "not_primary", "storage_unavailable", "standby_unavailable", "ledger_halted")
# A money action forwarded by an edge: the edge's own refusals (queue full, deadline, breaker), and
# its 500 on a bug of its own (or the ledger's, with that action alone, before anything was stored).
EDGE_FORWARD_CODES = ("ledger_unavailable", "edge_overloaded", "internal_error")
# Refusals a journaled money decision can give whatever its type.
DECISION_CODES = (
    "idempotency_key_reused",
    "not_found",
    "account_frozen",
    "balance_limit_exceeded",
    "report_limit_exceeded",
    "validation_error",
)


@dataclass(frozen=True)
class MoneyOp:
    tx_type: str  # also its name in /v1/batch and in MONEY_OPS
    request: type[MoneyWrite]
    path: str
    roles: tuple[str, ...]  # ledger roles that may send it
    codes: tuple[str, ...]  # what its decision can refuse with, beyond DECISION_CODES
    answer: type[TransactionAnswer] = TransactionAnswer

    @property
    def name(self) -> str:
        return self.tx_type

    @property
    def batchable(self) -> bool:
        """Sent by edges (in /v1/batch and through the edges' API); deposits and withdrawals are not."""
        return "edge" in self.roles

    @property
    def summary(self) -> str:
        return f"{self.tx_type.replace('_', ' ').capitalize()} (idempotent by id)"

    def decision_codes(self) -> tuple[str, ...]:
        return tuple(sorted({*DECISION_CODES, *self.codes}))


MONEY_OPS: dict[str, MoneyOp] = {
    op.tx_type: op
    for op in (
        MoneyOp(
            "bet",
            BetIn,
            "/v1/bets",
            ("edge",),
            ("insufficient_funds", "round_closed", "round_refunded", "bet_rolled_back", "currency_mismatch"),
        ),
        MoneyOp("win", WinIn, "/v1/wins", ("edge",), ("round_closed", "round_refunded", "currency_mismatch")),
        MoneyOp("rollback", RollbackIn, "/v1/rollbacks", ("edge",), ("round_closed", "wagering_already_claimed")),
        MoneyOp(
            "jackpot_payout",
            JackpotPayoutIn,
            "/v1/jackpot-payouts",
            ("edge",),
            ("currency_mismatch", "round_closed", "round_refunded"),
        ),
        MoneyOp(
            "bonus_claim",
            BonusClaimIn,
            "/v1/bonus-claims",
            ("edge",),
            ("already_claimed", "wagering_not_met", "bonus_expired"),
        ),
        MoneyOp("deposit", DepositIn, "/v1/deposits", ("cashier",), ("currency_mismatch",)),
        MoneyOp(
            "withdrawal", WithdrawalIn, "/v1/withdrawals", ("cashier",), ("insufficient_funds", "currency_mismatch")
        ),
    )
}
BATCH_OPS = tuple(name for name, op in MONEY_OPS.items() if op.batchable)
