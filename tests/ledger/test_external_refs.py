"""References on money writes: `external_ref` and `metadata` are journaled only when sent, bound
to the id (a retry with others is `idempotency_key_reused`), answered, and found by reference;
a win may name the bet it settles."""

from __future__ import annotations

from typing import Any

import orjson

from shared.ids import METADATA_KEYS_MAX, METADATA_VALUE_CHARS_MAX

from tests.support.ledger import Api, bet


def win(id: str, amount: int, **extra: Any) -> dict[str, Any]:
    return {"id": id, "player_id": "p1", "currency": "EUR", "amount_minor": amount, "round_id": "r1", **extra}


async def entry_request(api: Api, sequence: int) -> dict[str, Any]:
    status, text = await api.get("admin_read", f"/v1/journal?after_sequence={sequence - 1}&limit=1")
    assert status == 200, text
    [line] = text.splitlines()  # NDJSON
    return orjson.loads(line)["transaction"]["request"]


async def test_reference_and_metadata_are_journaled_answered_and_bound_to_the_id(api: Api) -> None:
    await api.player(deposit=1000)
    body = {**bet("b1", 100), "external_ref": "prov-tx-1", "metadata": {"table": "7", "seat": "b"}}
    status, first = await api.post("edge", "/v1/bets", body)
    assert status == 201, first
    tx = first["transaction"]
    assert tx["external_ref"] == "prov-tx-1" and tx["metadata"] == {"seat": "b", "table": "7"}
    status, again = await api.post("edge", "/v1/bets", body)
    assert status == 200 and again["replayed"] and again["transaction"] == tx
    for changed in (
        {"external_ref": "prov-tx-2"},
        {"metadata": {"table": "8", "seat": "b"}},
        {"external_ref": None},
        {"metadata": None},
    ):
        status, problem = await api.post("edge", "/v1/bets", {**body, **changed})
        assert status == 422 and problem["code"] == "idempotency_key_reused", (changed, problem)
        assert problem["field"] == next(iter(changed))


async def test_writes_without_them_journal_no_such_keys(api: Api) -> None:
    await api.player(deposit=1000)
    status, answer = await api.post("edge", "/v1/bets", {**bet("b1", 100), "metadata": {}})
    assert status == 201
    assert "external_ref" not in answer["transaction"] and "metadata" not in answer["transaction"]
    request = await entry_request(api, answer["transaction"]["sequence"])
    assert set(request) == {"id", "player_id", "currency", "amount_minor", "round_id", "game_id"}
    # a retry that now sends an empty map or null is the same request
    status, again = await api.post("edge", "/v1/bets", {**bet("b1", 100), "external_ref": None})
    assert status == 200 and again["replayed"]


async def test_bounds_are_a_validation_error_naming_the_field_and_change_nothing(api: Api) -> None:
    await api.player(deposit=1000)
    too_many = {f"k{i}": "v" for i in range(METADATA_KEYS_MAX + 1)}
    cases = [
        ({"metadata": too_many}, "metadata"),
        ({"metadata": {"k": "v" * (METADATA_VALUE_CHARS_MAX + 1)}}, "metadata.k"),
        ({"metadata": {"k": 5}}, "metadata.k"),
        ({"metadata": {"bad key": "v"}}, "metadata"),
        ({"external_ref": "has space"}, "external_ref"),
        ({"external_ref": "x" * 129}, "external_ref"),
    ]
    for extra, field in cases:
        status, problem = await api.post("edge", "/v1/bets", {**bet("b1", 100), **extra})
        assert status == 400 and problem["code"] == "validation_error", (extra, problem)
        assert any(e["field"].startswith(field) for e in problem["errors"]), (extra, problem)
    status, balances = await api.get("edge", "/v1/players/p1/balances")
    assert balances["balances"][0]["balance_minor"] == 1000
    status, _ = await api.post("edge", "/v1/bets", bet("b1", 100))
    assert status == 201  # the id was never bound


async def test_lookup_by_reference_pages_and_scopes_to_the_caller(api: Api) -> None:
    await api.player(deposit=1000)
    for i in range(3):
        status, _ = await api.post("edge", "/v1/bets", {**bet(f"b{i}", 100), "external_ref": "round-9"})
        assert status == 201
    status, _ = await api.post("edge", "/v1/bets", {**bet("big", 10_000), "external_ref": "round-9"})
    assert status == 422  # rejected (insufficient funds): journaled, and found too
    status, _ = await api.post(
        "cashier",
        "/v1/deposits",
        {"id": "d9", "player_id": "p1", "currency": "EUR", "amount_minor": 5, "external_ref": "round-9"},
    )
    assert status == 201
    status, page = await api.get("admin_read", "/v1/transactions/by-external-ref/round-9?limit=2")
    assert status == 200, page
    assert [t["id"] for t in page["transactions"]] == ["b0", "b1"] and page["has_more"]
    status, page2 = await api.get(
        "admin_read", f"/v1/transactions/by-external-ref/round-9?after_sequence={page['next_after_sequence']}"
    )
    assert [(t["id"], t["outcome"]) for t in page2["transactions"]] == [
        ("b2", "committed"),
        ("big", "rejected"),
        ("d9", "committed"),
    ]
    assert not page2["has_more"]
    status, edge_view = await api.get("edge", "/v1/transactions/by-external-ref/round-9")
    assert [t["id"] for t in edge_view["transactions"]] == ["b0", "b1", "b2", "big"]
    status, cashier_view = await api.get("cashier", "/v1/transactions/by-external-ref/round-9")
    assert [t["id"] for t in cashier_view["transactions"]] == ["d9"]
    status, none = await api.get("admin_read", "/v1/transactions/by-external-ref/other")
    assert status == 200 and none["transactions"] == [] and not none["has_more"]


async def test_a_win_names_the_bet_it_settles(api: Api) -> None:
    await api.player(deposit=1000)
    await api.post("edge", "/v1/bets", bet("b1", 100))
    await api.post("edge", "/v1/bets", bet("b-other", 100, round_id="r2"))
    status, problem = await api.post("edge", "/v1/wins", win("w0", 10, bet_id="nope"))
    assert status == 404 and problem["field"] == "bet_id"
    status, problem = await api.post("edge", "/v1/wins", win("w0", 10, bet_id="b-other"))
    assert status == 400 and problem["code"] == "validation_error" and problem["field"] == "bet_id"
    status, answer = await api.post("edge", "/v1/wins", win("w1", 10, bet_id="b1"))
    assert status == 201 and answer["transaction"]["bet_id"] == "b1"
    status, answer = await api.post("edge", "/v1/wins", win("w2", 10))
    assert status == 201 and "bet_id" not in answer["transaction"]
