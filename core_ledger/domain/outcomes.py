"""What a decision can come to, in the domain's own words (no HTTP here).

A command is either committed (with postings) or rejected with a sticky `RejectCode` (journaled with
no postings; a retry of the same id gets the same answer), or refused with a `RefusalCode` before
anything is journaled (the id stays free). The codes are the stable strings clients see; which
HTTP status carries each one is decided outside the domain (`core_ledger.rejections`).
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """The `outcome` member of a journaled transaction."""

    COMMITTED = "committed"
    REJECTED = "rejected"


class RejectCode(StrEnum):
    """Sticky refusals: journaled, bound to the id."""

    ROUND_CLOSED = "round_closed"
    ROUND_REFUNDED = "round_refunded"
    BET_ROLLED_BACK = "bet_rolled_back"
    VERSION_CONFLICT = "version_conflict"
    ALREADY_CLAIMED = "already_claimed"
    WAGERING_ALREADY_CLAIMED = "wagering_already_claimed"
    WAGERING_NOT_MET = "wagering_not_met"
    BONUS_EXPIRED = "bonus_expired"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    CURRENCY_MISMATCH = "currency_mismatch"
    BALANCE_LIMIT_EXCEEDED = "balance_limit_exceeded"
    REPORT_LIMIT_EXCEEDED = "report_limit_exceeded"
    ACCOUNT_FROZEN = "account_frozen"


class RefusalCode(StrEnum):
    """Non-binding refusals: not journaled, the id stays free (the request was wrong, not the moment)."""

    INVALID = "validation_error"  # the request contradicts the state (a round of another game...)
    NOT_FOUND = "not_found"  # a player, round, bonus or jackpot the request names does not exist
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"  # the id was used for a different request


class Rejection(Exception):
    """A refusal of a command. This class: non-binding (`RefusalCode`), never journaled; `field`
    names the request member at fault, when one is."""

    def __init__(self, code: RefusalCode | RejectCode, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field


class Refusal(Rejection):
    """Non-binding: the command is answered with the code and nothing is journaled. A `RejectCode`
    here is a state-dependent refusal that binds nothing (a settlement's, see `rounds`)."""

    def __init__(self, code: RefusalCode | RejectCode, detail: str, *, field: str | None = None) -> None:
        super().__init__(code, detail, field=field)


class Reject(Rejection):
    """A state-dependent refusal: journaled with no postings, and sticky to the id."""

    def __init__(self, code: RejectCode, detail: str) -> None:
        super().__init__(code, detail)
