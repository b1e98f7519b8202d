"""Former home of the request bodies: they live in shared/contract/requests.py now, the typed
money operations in shared/contract/operations.py. Kept so that old imports still work."""

from __future__ import annotations

from shared.contract.operations import MONEY_OPS, MoneyOp  # noqa: F401
from shared.contract.requests import (  # noqa: F401  (named for type checkers)
    AdjustmentIn,
    BatchAction,
    BatchIn,
    BetIn,
    Body,
    BonusClaimIn,
    BonusGrantIn,
    DepositIn,
    FreezeIn,
    JackpotCreateIn,
    JackpotPayoutIn,
    MoneyWrite,
    PlayerCreateIn,
    RequestId,
    RollbackIn,
    SessionStateIn,
    Timestamp,
    UnfenceIn,
    WinIn,
    WithdrawalIn,
)
