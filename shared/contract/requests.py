"""Request bodies of both services (docs/API.md is the contract, shared.contract.operations ties them to routes).

Every model forbids unknown fields and takes integers strictly (no floats, no bools, no strings
for money). `via` and `client_id` are set by an edge; the ledger accepts them only from an
`edge` credential.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from shared import request_ids
from shared.ids import Currency, ExternalRef, Id, Metadata, NonNegativeMinor, PositiveMinor, SignedMinor

BatchOp = Literal["bet", "win", "rollback", "jackpot_payout", "bonus_claim"]  # game money, edges only
RequestId = Annotated[str, Field(pattern=f"^{request_ids.VALID.pattern}$", max_length=request_ids.LENGTH_MAX)]


# Limits of the request bodies themselves (also published by the ledger at GET /v1/limits).
REASON_CHARS_MAX = 500
CURRENCIES_MAX = 16
GAME_IDS_MAX = 1000


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class MoneyWrite(Body):
    id: Id
    via: Id | None = None
    client_id: Id | None = None
    # The provider's own reference and free-form labels: journaled only when sent (`OPTIONAL_FIELDS`),
    # compared on a retry like every other field, searchable by `external_ref`.
    external_ref: ExternalRef | None = None
    metadata: Metadata | None = None


# Money-write fields that are left out of the journaled request when absent (None, or an empty
# map): entries written before they existed, and writes that do not use them, keep their bytes.
OPTIONAL_FIELDS = ("external_ref", "metadata", "bet_id")


class BetIn(MoneyWrite):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "b-1",
                    "player_id": "p1",
                    "currency": "EUR",
                    "amount_minor": 500,
                    "round_id": "r-1",
                    "game_id": "slots-1",
                }
            ]
        },
    )

    player_id: Id
    currency: Currency
    amount_minor: PositiveMinor
    round_id: Id
    game_id: Id


class WinIn(MoneyWrite):
    player_id: Id
    currency: Currency
    amount_minor: NonNegativeMinor
    round_id: Id
    close_round: StrictBool = False
    bet_id: Id | None = None  # the bet this win settles (optional; must be the player's bet in the round)


class RollbackIn(MoneyWrite):
    bet_id: Id
    player_id: Id
    round_id: Id | None = None


class JackpotPayoutIn(MoneyWrite):
    jackpot_id: Id
    player_id: Id
    round_id: Id


class BonusClaimIn(MoneyWrite):
    player_id: Id
    bonus_id: Id


class DepositIn(MoneyWrite):
    player_id: Id
    currency: Currency
    amount_minor: PositiveMinor


class WithdrawalIn(DepositIn):
    pass


class BatchAction(Body):
    op: BatchOp
    body: dict[str, Any]
    # The X-Request-Id of the request this action came from at the edge (shared/request_ids.py):
    # the ledger logs the action under it. Optional (older edges send none: the batch's own id).
    request_id: RequestId | None = None


class BatchIn(Body):
    actions: list[BatchAction] = Field(min_length=1)


# --- admin bodies -----------------------------------------------------------------------------


class PlayerCreateIn(Body):
    player_id: Id
    currencies: list[Currency] = Field(min_length=1, max_length=CURRENCIES_MAX)


class FreezeIn(Body):
    reason: str = Field(min_length=1, max_length=REASON_CHARS_MAX)


class UnfenceIn(Body):
    reason: str = Field(min_length=1, max_length=REASON_CHARS_MAX)
    force: StrictBool = False  # lift it even though a peer ledger proves a higher epoch as primary (journaled)


class AdjustmentIn(Body):
    id: Id
    player_id: Id
    currency: Currency
    amount_minor: SignedMinor
    reason: str = Field(min_length=1, max_length=REASON_CHARS_MAX)
    expected_version: int | None = Field(default=None, ge=0)


class JackpotCreateIn(Body):
    jackpot_id: Id
    currency: Currency
    seed_minor: NonNegativeMinor
    contribution_ppm: int = Field(ge=0, le=1_000_000)
    game_ids: list[Id] = Field(min_length=1, max_length=GAME_IDS_MAX)


def _rfc3339_text(value: Any) -> Any:
    if not isinstance(value, (str, datetime)):
        raise ValueError("an RFC 3339 timestamp string is required")
    return value


# Strict models refuse strings for datetimes; JSON carries timestamps as RFC 3339 strings.
Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text), Field(strict=False)]


class BonusGrantIn(Body):
    id: Id
    player_id: Id
    bonus_id: Id
    currency: Currency
    amount_minor: PositiveMinor
    wagering_requirement_minor: NonNegativeMinor
    expires_at: Timestamp


class RoundSettleIn(Body):
    """Settle an interrupted round by hand: `refund` its bets or `close` it as played."""

    policy: Literal["refund", "close"]
    reason: str = Field(min_length=1, max_length=REASON_CHARS_MAX)
    # The game-server client the round is scoped to; needed only when several clients play a round
    # of this id for the player.
    client_id: Id | None = None


class SessionStateIn(Body):
    state: dict[str, Any]
