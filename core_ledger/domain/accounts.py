"""Ledger account names: the one place they are built and taken apart.

A player's wallet is `player:<player_id>:<currency>`, a system account `<kind>:<currency>` (kind:
cashier, house or bonus), a jackpot pool `jackpot:<jackpot_id>`. Ids may contain ":" but currencies never do (see
shared.ids), so a player account splits back at its last ":".
"""

from __future__ import annotations

from typing import Literal

SystemKind = Literal["cashier", "house", "bonus"]
PLAYER_PREFIX = "player:"
JACKPOT_PREFIX = "jackpot:"


def player_account(player_id: str, currency: str) -> str:
    return f"{PLAYER_PREFIX}{player_id}:{currency}"


def system_account(kind: SystemKind, currency: str) -> str:
    return f"{kind}:{currency}"


def jackpot_account(jackpot_id: str) -> str:
    return f"{JACKPOT_PREFIX}{jackpot_id}"


def is_player_account(account: str) -> bool:
    return account.startswith(PLAYER_PREFIX)


def player_of(account: str) -> str:
    """The player id of a player account name (ValueError for any other account)."""
    if not is_player_account(account):
        raise ValueError(f"{account!r} is not a player account")
    return account[len(PLAYER_PREFIX) :].rsplit(":", 1)[0]
