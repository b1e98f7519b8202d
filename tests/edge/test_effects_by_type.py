"""The CRDT effects of each transaction type (edge.crdt.effects.EFFECTS_BY_TYPE), as a table."""

from __future__ import annotations

from typing import Any

import pytest

from shared.contract.answers import Transaction

from edge.crdt.effects import (
    EFFECTS_BY_TYPE,
    NO_EFFECTS,
    EdgeEffects,
    SlotEffect,
    effect_documents,
    effects_of,
    reported_epochs,
)
from edge.metrics import MONEY_OPERATIONS

COMMON = {
    "id": "t1",
    "sequence": 7,
    "epoch": 1,
    "ledger_epoch": 1,
    "committed_at": "2026-11-23T10:00:00.000000Z",
    "via": "eu",
    "client_id": "gs",
    "outcome": "committed",
}


def transaction(tx: dict[str, Any]) -> Transaction:
    """The ledger's typed answer for a case: the common members plus the case's own."""
    return Transaction.model_validate({**COMMON, **tx})


BET = {
    "type": "bet",
    "player_id": "p1",
    "jackpot_contributions": [{"jackpot_id": "j1", "amount_minor": 3, "epoch": 2}],
    "bonus_wagering": [{"bonus_id": "b1", "amount_minor": 300}],
}
ROLLBACK = {
    "type": "rollback",
    "player_id": "p1",
    "reversed": True,
    "bet_via": "eu",
    "reversed_contributions": [{"jackpot_id": "j1", "amount_minor": 3, "epoch": 2}],
    "bonus_wagering": [{"bonus_id": "b1", "amount_minor": 300}],
}
PAYOUT = {"type": "jackpot_payout", "jackpot_id": "j1", "epoch": 3, "seed_minor": 1000, "currency": "EUR"}
TAKEN_BACK = (SlotEffect("jackpot/j1", {"epoch": 2, "amount_minor": -3}), SlotEffect("bonus/p1", {"b1": -300}))

CASES: list[tuple[str, dict[str, Any], EdgeEffects]] = [
    (
        "a bet credits its contributions and wagering to this edge's slots",
        BET,
        EdgeEffects((SlotEffect("jackpot/j1", {"epoch": 2, "amount_minor": 3}), SlotEffect("bonus/p1", {"b1": 300}))),
    ),
    (
        "a bet without contributions or wagering changes nothing",
        {**BET, "jackpot_contributions": [], "bonus_wagering": []},
        NO_EFFECTS,
    ),
    ("a win changes no document", {"type": "win", "player_id": "p1", "amount_minor": 5}, NO_EFFECTS),
    ("a bonus claim changes no document", {"type": "bonus_claim", "player_id": "p1", "bonus_id": "b1"}, NO_EFFECTS),
    ("a rollback of a bet taken here takes its credits back here", ROLLBACK, EdgeEffects(TAKEN_BACK)),
    (
        "a rollback of a bet taken by another edge asks that edge to reconcile",
        {**ROLLBACK, "bet_via": "us"},
        EdgeEffects(reconcile=("jackpot/j1", "bonus/p1"), reconcile_at="us"),
    ),
    (
        "a rollback of a bet sent without an edge reconciles everywhere",
        {**ROLLBACK, "bet_via": None},
        EdgeEffects(reconcile=("jackpot/j1", "bonus/p1"), reconcile_everywhere=True),
    ),
    ("a rollback that reversed nothing changes nothing", {**ROLLBACK, "reversed": False}, NO_EFFECTS),
    (
        "a payout moves this edge's slot to the new epoch and its seed",
        PAYOUT,
        EdgeEffects((SlotEffect("jackpot/j1", {"epoch": 3, "amount_minor": 0, "seed_minor": 1000}, "EUR"),)),
    ),
    ("a type the edge does not forward has no effect", {"type": "deposit", "player_id": "p1"}, NO_EFFECTS),
]


@pytest.mark.parametrize(("case", "tx", "expected"), CASES, ids=[c[0] for c in CASES])
def test_effects_of_each_type(case: str, tx: dict[str, Any], expected: EdgeEffects) -> None:
    assert effects_of(tx["type"], transaction(tx), "eu") == expected


# (case, transaction, documents its effects touch, jackpot epochs its answer reports)
TOUCHED: list[tuple[str, dict[str, Any], list[str], list[tuple[str, int]]]] = [
    ("a bet touches its jackpots and the player's bonus document", BET, ["bonus/p1", "jackpot/j1"], [("j1", 2)]),
    ("a win touches nothing", {"type": "win", "player_id": "p1", "amount_minor": 5}, [], []),
    (
        "a rollback touches the jackpots it reversed and the bonus document",
        {**ROLLBACK, "bet_via": "us"},
        ["bonus/p1", "jackpot/j1"],
        [("j1", 2)],
    ),
    ("a payout touches its jackpot and reports the new epoch", PAYOUT, ["jackpot/j1"], [("j1", 3)]),
    ("a rejected payout reports no new epoch", {**PAYOUT, "outcome": "rejected", "code": "x"}, ["jackpot/j1"], []),
    (
        "a type the edge does not forward touches nothing",
        {"type": "deposit", "player_id": "p1", "jackpot_contributions": BET["jackpot_contributions"]},
        [],
        [],
    ),
]


@pytest.mark.parametrize(("case", "tx", "documents", "epochs"), TOUCHED, ids=[c[0] for c in TOUCHED])
def test_documents_and_epochs_of_each_type(
    case: str, tx: dict[str, Any], documents: list[str], epochs: list[tuple[str, int]]
) -> None:
    assert effect_documents(tx["type"], transaction(tx)) == documents
    assert reported_epochs(tx["type"], transaction(tx)) == epochs


def test_every_money_operation_an_edge_forwards_has_a_row() -> None:
    assert set(EFFECTS_BY_TYPE) == set(MONEY_OPERATIONS)
