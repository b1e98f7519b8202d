"""The ledger's account names as the harness's checkers read them from a journal's postings.

The format is part of what the ledger publishes (GET /v1/journal; docs/DESIGN.md, "Accounts"): a
player's wallet is `player:<player_id>:<currency>`; system accounts (`cashier:`, `house:`,
`bonus:` + currency) and jackpot pools (`jackpot:<id>`) are not wallets. Player ids may contain
":", currencies never do, so a wallet splits at its last ":".

The verifier checks the ledger from outside, so it parses the names itself rather than importing
the ledger's own `core_ledger.domain.accounts`: a bug in the ledger's naming then shows up as a
difference instead of being repeated on both sides. tests/shared/test_checkers.py checks that both
read the same names the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

WALLET_PREFIX = "player:"


@dataclass(frozen=True)
class Wallet:
    """A player's wallet in one currency."""

    player_id: str
    currency: str


def wallet_of(account: str) -> Wallet | None:
    """The wallet an account name denotes; None for a system or jackpot account, and for a name
    with the wallet prefix but no player id or currency (see `malformed_wallet`)."""
    if not account.startswith(WALLET_PREFIX):
        return None
    player_id, colon, currency = account[len(WALLET_PREFIX) :].rpartition(":")
    return Wallet(player_id, currency) if colon and player_id and currency else None


def malformed_wallet(account: str) -> bool:
    """Whether an account name claims to be a wallet but is not `player:<player_id>:<currency>`."""
    return account.startswith(WALLET_PREFIX) and wallet_of(account) is None


def wallet_balances(balances: dict[str, int]) -> dict[Wallet, int]:
    """The wallets among folded account balances (system and jackpot accounts left out)."""
    return {wallet: amount for account, amount in balances.items() if (wallet := wallet_of(account)) is not None}
