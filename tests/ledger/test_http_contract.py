"""The HTTP edges of the contract on the ledger (the edge shares the same plumbing, shared/web.py):
a body's validation problem lists every invalid member, a 401 says how to authenticate, a 405 says
which methods the path takes, and `GET /v1/limits` publishes what a client must respect."""

from __future__ import annotations

from typing import Any

from shared.contract.answers import Limits

from core_ledger.config import LedgerConfig
from tests.support.ledger import TOKENS, Api


async def test_a_validation_problem_lists_every_invalid_member_and_changes_nothing(api: Api) -> None:
    await api.player("p1", deposit=1000)
    status, problem = await api.post(
        "edge",
        "/v1/bets",
        {"id": "b-1", "player_id": "p1", "currency": "eur", "amount_minor": "5", "round_id": "r1", "colour": "red"},
    )
    assert status == 400 and problem["code"] == "validation_error"
    fields = sorted(e["field"] for e in problem["errors"])
    assert fields == ["amount_minor", "colour", "currency", "game_id"]
    assert problem["field"] == problem["errors"][0]["field"]  # the first, as before
    assert all(e["message"] for e in problem["errors"])
    status, balances = await api.get("edge", "/v1/players/p1/balances")
    assert balances["balances"][0]["balance_minor"] == 1000


async def test_a_batch_action_problem_lists_every_invalid_member_too(api: Api) -> None:
    status, body = await api.post("edge", "/v1/batch", {"actions": [{"op": "bet", "body": {"id": "b-1"}}]})
    assert status == 200
    [result] = body["results"]
    assert result["status"] == 400
    assert sorted(e["field"] for e in result["body"]["errors"]) == [
        "amount_minor",
        "currency",
        "game_id",
        "player_id",
        "round_id",
    ]


async def test_a_401_carries_a_bearer_challenge(api: Api) -> None:
    async with api.client.get("/v1/players/p1/balances") as r:
        assert r.status == 401 and r.headers["WWW-Authenticate"] == 'Bearer realm="croupier"'
    async with api.client.get("/v1/players/p1/balances", headers={"Authorization": "Bearer wrong-token"}) as r:
        challenge = r.headers["WWW-Authenticate"]
        assert r.status == 401 and challenge.startswith('Bearer realm="croupier", error="invalid_token"')
    async with api.client.get(
        "/v1/players/p1/balances", headers={"Authorization": f"Bearer {TOKENS['game_server']}"}
    ) as r:
        assert r.status == 403 and "WWW-Authenticate" not in r.headers


async def test_a_405_lists_the_methods_the_path_takes(api: Api) -> None:
    async with api.client.delete("/v1/bets", headers={"Authorization": f"Bearer {TOKENS['edge']}"}) as r:
        body = await r.json(content_type=None)
        assert r.status == 405 and r.headers["Allow"] == "POST" and body["code"] == "method_not_allowed"
    async with api.client.post("/v1/limits", headers={"Authorization": f"Bearer {TOKENS['edge']}"}) as r:
        assert r.status == 405 and r.headers["Allow"] == "GET"


async def test_the_limits_are_published_from_the_configuration(api: Api, app_config: LedgerConfig) -> None:
    published: dict[str, Any] = {}
    for role in ("edge", "cashier", "replica", "admin_read", "admin_write"):
        status, published = await api.get(role, "/v1/limits")
        assert status == 200, (role, published)
    limits = Limits.model_validate(published)
    assert (
        (limits.batch_actions_max, limits.body_bytes_max, limits.page_limit_max)
        == (app_config.batch_actions_max, app_config.body_bytes_max, app_config.page_limit_max)
        == (8, 4096, 50)
    )
    status, problem = await api.get("game_server", "/v1/limits")
    assert status == 403 and problem["code"] == "forbidden"


async def test_the_published_batch_limit_is_the_one_enforced(api: Api) -> None:
    status, limits = await api.get("edge", "/v1/limits")
    action = {"op": "bet", "body": {"id": "x"}}
    status, _ = await api.post("edge", "/v1/batch", {"actions": [action] * limits["batch_actions_max"]})
    assert status == 200
    status, problem = await api.post("edge", "/v1/batch", {"actions": [action] * (limits["batch_actions_max"] + 1)})
    assert status == 400 and problem["field"] == "actions"
