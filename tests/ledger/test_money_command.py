"""`money_command` builds the journaled request from the validated body without `model_dump`: the
same fields, values and order for every money operation, so an entry's bytes (and a retry's
comparison with them) do not change."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from pydantic import BaseModel

from shared import auth
from shared.contract.operations import MONEY_OPS
from shared.contract.requests import OPTIONAL_FIELDS

from core_ledger.http import money_command

EDGE = auth.Principal("edge-eu", "edge")
CASHIER = auth.Principal("till", "cashier")

BODIES: dict[str, list[dict[str, Any]]] = {
    "bet": [
        {"id": "b1", "player_id": "p1", "currency": "EUR", "amount_minor": 5, "round_id": "r1", "game_id": "g"},
        {
            "id": "b2",
            "player_id": "p1",
            "currency": "EUR",
            "amount_minor": 5,
            "round_id": "r1",
            "game_id": "g",
            "via": "eu",
            "client_id": "gs",
            "external_ref": "ext-1",
            "metadata": {"table": "7", "seat": "2"},
        },
        {
            "id": "b3",
            "player_id": "p",
            "currency": "EUR",
            "amount_minor": 1,
            "round_id": "r",
            "game_id": "g",
            "metadata": {},
        },
    ],
    "win": [
        {"id": "w1", "player_id": "p1", "currency": "EUR", "amount_minor": 0, "round_id": "r1"},
        {
            "id": "w2",
            "player_id": "p1",
            "currency": "EUR",
            "amount_minor": 9,
            "round_id": "r1",
            "close_round": True,
            "bet_id": "b1",
        },
    ],
    "rollback": [
        {"id": "rb1", "bet_id": "b1", "player_id": "p1"},
        {"id": "rb2", "bet_id": "b1", "player_id": "p1", "round_id": "r1"},
    ],
    "jackpot_payout": [{"id": "j1", "jackpot_id": "jp", "player_id": "p1", "round_id": "r1"}],
    "bonus_claim": [{"id": "c1", "player_id": "p1", "bonus_id": "bo", "external_ref": None}],
    "deposit": [{"id": "d1", "player_id": "p1", "currency": "EUR", "amount_minor": 100}],
    "withdrawal": [{"id": "x1", "player_id": "p1", "currency": "EUR", "amount_minor": 100, "metadata": {"k": "v"}}],
}


def dumped(op: str, raw: dict[str, Any]) -> dict[str, Any]:
    """What the request was built from before: model_dump without via and client_id, optional
    fields left out when null or empty."""
    request = MONEY_OPS[op].request.model_validate(raw).model_dump(exclude={"via", "client_id"})
    return {k: v for k, v in request.items() if not (k in OPTIONAL_FIELDS and v in (None, {}))}


def test_every_money_operation_has_bodies_here():
    assert set(BODIES) == set(MONEY_OPS)


@pytest.mark.parametrize("op", sorted(MONEY_OPS))
def test_a_money_body_holds_no_nested_model(op):
    """Where a field held a model, `__dict__` would keep the model where model_dump made a dict."""
    for name, field in MONEY_OPS[op].request.model_fields.items():
        kinds = [field.annotation, *get_args(field.annotation)]
        assert not any(isinstance(k, type) and issubclass(k, BaseModel) for k in kinds), (op, name)


@pytest.mark.parametrize("op", sorted(MONEY_OPS))
def test_the_request_is_what_model_dump_made_in_the_same_order(op):
    who = EDGE if "edge" in MONEY_OPS[op].roles else CASHIER
    for sent in BODIES[op]:
        raw = sent if who is EDGE else {k: v for k, v in sent.items() if k not in ("via", "client_id")}
        command = money_command(op, raw, who)
        expected = dumped(op, raw)
        assert list(command.request.items()) == list(expected.items()), raw
        assert "via" not in command.request and "client_id" not in command.request
        assert command.key == (raw.get("client_id") or who.name, raw["id"])
