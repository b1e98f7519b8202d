"""`evolve` refuses to fold an entry that would break the balances (its messages are built only
when it does): a player balance below zero, or a folded balance other than the decided one."""

from __future__ import annotations

from typing import Any, cast

import pytest

from core_ledger.domain import InvariantBroken, State, evolve
from core_ledger.domain.accounts import player_account
from core_ledger.domain.records import Entry

PLAYER = player_account("p1", "EUR")


def _entry(amount: int, balance: dict[str, Any] | None) -> Entry:
    tx = {
        "type": "deposit",
        "id": None,
        "client_id": None,
        "outcome": "committed",
        "request": {},
        "via": None,
        "principal": "cashier",
        "committed_at": "2026-01-01T00:00:00Z",
        "result": {"balance": balance} if balance else {},
    }
    return cast(
        Entry,
        {
            "sequence": 7,
            "epoch": 1,
            "transaction": tx,
            "postings": [
                {"account": PLAYER, "currency": "EUR", "amount_minor": amount},
                {"account": "cash:EUR", "currency": "EUR", "amount_minor": -amount},
            ],
        },
    )


def test_a_player_balance_going_negative_is_an_invariant_failure() -> None:
    with pytest.raises(InvariantBroken, match=f"{PLAYER} would go negative at 7"):
        evolve(State(complete=True), _entry(-1, None))


def test_a_folded_balance_other_than_the_decided_one_is_an_invariant_failure() -> None:
    decided = {"player_id": "p1", "currency": "EUR", "balance_minor": 6, "version": 1}
    with pytest.raises(InvariantBroken, match=r"the balance folded at 7 .* is not the decided one"):
        evolve(State(complete=True), _entry(5, decided))
    with pytest.raises(InvariantBroken, match="is not the decided one"):
        evolve(State(complete=True), _entry(5, {**decided, "balance_minor": 5, "version": 2}))
    state = State(complete=True)
    evolve(state, _entry(5, {**decided, "balance_minor": 5}))  # the decided balance: folded
    assert state.get("accounts", (PLAYER,)) == {"balance_minor": 5, "version": 1}
