"""HTTP contract of the money API: answers, idempotency, sticky failures, roles, batch."""

from __future__ import annotations

from typing import Any

import pytest

from core_ledger import http
from tests.support.ledger import NAMES, Api, bet


async def test_bet_answers_201_with_balance_and_replays_identically_as_200(api: Api) -> None:
    await api.player(deposit=1000)
    status, first = await api.post("edge", "/v1/bets", bet("b1", 300, via="eu", client_id="gs-1"))
    assert status == 201 and first["replayed"] is False
    assert first["balance"] == {"player_id": "p1", "currency": "EUR", "balance_minor": 700, "version": 2}
    tx = first["transaction"]
    assert (tx["id"], tx["type"], tx["via"], tx["client_id"]) == ("b1", "bet", "eu", "gs-1")
    assert isinstance(tx["sequence"], int) and tx["committed_at"].endswith("Z")
    # The same bet forwarded by another edge is a replay, not a conflict.
    status, again = await api.post("edge", "/v1/bets", bet("b1", 300, via="us", client_id="gs-1"))
    assert status == 200 and again == {**first, "replayed": True}
    status, body = await api.get("edge", "/v1/players/p1/balances")
    assert body["balances"] == [{"currency": "EUR", "balance_minor": 700, "version": 2}]


async def test_same_id_different_request_is_idempotency_key_reused_naming_the_field(api: Api) -> None:
    await api.player(deposit=1000)
    await api.post("edge", "/v1/bets", bet("b1", 300))
    status, body = await api.post("edge", "/v1/bets", bet("b1", 301))
    assert status == 422 and body["code"] == "idempotency_key_reused" and body["field"] == "amount_minor"
    status, body = await api.post(
        "edge", "/v1/wins", {"id": "b1", "player_id": "p1", "currency": "EUR", "amount_minor": 1, "round_id": "r1"}
    )
    assert status == 422 and body["field"] == "type"
    status, body = await api.get("edge", "/v1/players/p1/balances")
    assert body["balances"][0]["balance_minor"] == 700


async def test_insufficient_funds_sticks_to_the_id_after_a_deposit(api: Api) -> None:
    await api.player(deposit=100)
    status, first = await api.post("edge", "/v1/bets", bet("b1", 500))
    assert status == 422 and first["code"] == "insufficient_funds" and first["replayed"] is False
    await api.post("cashier", "/v1/deposits", {"id": "d2", "player_id": "p1", "currency": "EUR", "amount_minor": 1000})
    status, again = await api.post("edge", "/v1/bets", bet("b1", 500))
    # a replay is the first answer again, but for `replayed` and the `request_id` of the request it answers
    assert status == 422 and again == {**first, "replayed": True, "request_id": again["request_id"]}
    status, fresh = await api.post("edge", "/v1/bets", bet("b2", 500))
    assert status == 201 and fresh["balance"]["balance_minor"] == 600


async def test_client_id_scopes_ids_and_defaults_to_the_credential(api: Api) -> None:
    await api.player(deposit=1000)
    assert (await api.post("edge", "/v1/bets", bet("b1", 100, client_id="gs-a")))[0] == 201
    status, body = await api.post("edge", "/v1/bets", bet("b1", 100, client_id="gs-b"))
    assert status == 201 and body["balance"]["balance_minor"] == 800
    status, body = await api.post("edge", "/v1/bets", bet("b1", 100))
    assert status == 201 and body["transaction"]["client_id"] == NAMES["edge"]


async def test_only_edges_may_send_via_or_client_id_and_roles_are_enforced(api: Api) -> None:
    await api.player()
    deposit = {"id": "d1", "player_id": "p1", "currency": "EUR", "amount_minor": 5}
    status, body = await api.post("cashier", "/v1/deposits", {**deposit, "via": "eu"})
    assert status == 403 and body["code"] == "forbidden"
    for role in ("cashier", "admin_write", "game_server", "replica"):
        assert (await api.post(role, "/v1/bets", bet("b1")))[0] == 403
    assert (await api.post("edge", "/v1/deposits", deposit))[0] == 403
    status, body = await api.post("", "/v1/bets", bet("b1"))
    assert status == 401 and body["code"] == "unauthenticated"


async def test_batch_judges_each_action_alone_in_order(api: Api) -> None:
    await api.player(deposit=250)
    actions = [
        {"op": "bet", "body": bet("b1", 100)},
        {"op": "bet", "body": bet("b2", 200)},
        {"op": "bet", "body": {"id": "bad"}},
        {"op": "bet", "body": bet("b1", 100)},
        {
            "op": "win",
            "body": {
                "id": "w1",
                "player_id": "p1",
                "currency": "EUR",
                "amount_minor": 40,
                "round_id": "r1",
                "close_round": True,
            },
        },
    ]
    status, body = await api.post("edge", "/v1/batch", {"actions": actions})
    assert status == 200
    got = [(r["status"], r["body"].get("code"), r["body"].get("replayed")) for r in body["results"]]
    assert got == [
        (201, None, False),
        (422, "insufficient_funds", False),
        (400, "validation_error", None),
        (200, None, True),
        (201, None, False),
    ]
    assert body["results"][4]["body"]["balance"]["balance_minor"] == 190
    too_many = {"actions": [{"op": "bet", "body": bet(f"x{i}")} for i in range(9)]}
    status, body = await api.post("edge", "/v1/batch", too_many)
    assert status == 400 and body["field"] == "actions"


async def test_a_bug_with_one_action_of_a_batch_answers_that_action_500_and_the_others_commit(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It failed the whole batch with 500, which an edge could only retry as it was."""
    await api.player(deposit=1000)
    build = http.money_command

    def money_command(op: str, body: Any, who: Any) -> Any:
        if body.get("id") == "poison":
            raise KeyError("a bug building this command")
        return build(op, body, who)

    monkeypatch.setattr(http, "money_command", money_command)
    actions = [{"op": "bet", "body": bet(i, 10, round_id=f"r-{i}")} for i in ("b1", "poison", "b2")]
    status, body = await api.post("edge", "/v1/batch", {"actions": actions})
    assert status == 200, body
    assert [r["status"] for r in body["results"]] == [201, 500, 201]
    assert body["results"][1]["body"]["code"] == "internal_error"


async def test_an_edge_cannot_act_for_a_client_named_as_another_role_of_this_ledger(api: Api) -> None:
    """An edge sets `client_id` to the game server it acts for, and ids are scoped by it: naming a
    cashier's credential, an edge shared the cashier's idempotency keys and squatted its deposit
    ids (the cashier's deposit `d-x` was refused as a reused key after a bet `d-x`)."""
    await api.player(deposit=1000)
    status, problem = await api.post("edge", "/v1/bets", bet("d-x", 100, client_id=NAMES["cashier"]))
    assert status == 403 and problem["code"] == "forbidden" and problem["field"] == "client_id", problem
    status, body = await api.post(
        "edge",
        "/v1/batch",
        {
            "actions": [
                {"op": "bet", "body": bet("d-y", 100, client_id=NAMES["admin_write"])},
                {"op": "bet", "body": bet("d-y", 100, client_id=NAMES["game_server"])},  # a game server's own name
            ]
        },
    )
    assert status == 200 and [r["status"] for r in body["results"]] == [403, 201], body
    deposit = {"id": "d-x", "player_id": "p1", "currency": "EUR", "amount_minor": 50}
    assert (await api.post("cashier", "/v1/deposits", deposit))[0] == 201  # its id was never squatted


async def test_a_read_the_store_fails_is_503_storage_unavailable_not_a_bug(aiohttp_client: Any, tmp_path: Any) -> None:
    """A store that failed under a read (or a promotion) was answered 500 `internal_error` and
    logged as a bug, though the route documents `storage_unavailable`: an edge reading a balance
    took a passing disk error for a bug of the ledger."""
    from core_ledger.app import create_app
    from core_ledger.app_keys import READS
    from core_ledger.store import StorageError
    from tests.support.clock import FakeClock
    from tests.support.ledger import ledger_config

    app = create_app(ledger_config(tmp_path / "data"), clock=FakeClock())
    api = Api(await aiohttp_client(app))
    await api.player(deposit=100)

    async def failing_get(table: str, key: Any) -> Any:
        raise StorageError("the disk did not answer")

    app[READS].store.get = failing_get  # type: ignore[method-assign]  # a store failing under reads only
    status, problem = await api.get("edge", "/v1/players/p1/balances")
    assert status == 503 and problem["code"] == "storage_unavailable", problem
