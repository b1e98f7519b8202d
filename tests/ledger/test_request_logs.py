"""Request ids and request log lines on the ledger (issue 10): every answer names its request id
(header, and `request_id` in every problem body), a hostile `X-Request-Id` is replaced, each
request gets one `http_request` line and each money action one `ledger_action` line under its own
request id (in a batch: the id its edge sent with it)."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict
from structlog.testing import capture_logs

from shared import request_ids

from tests.support.ledger import NAMES, TOKENS, Api, bet

HEX32 = r"[0-9a-f]{32}"


async def post(
    api: Api, role: str, path: str, body: Any, request_id: str | None = None
) -> tuple[int, CIMultiDict[str], Any]:
    headers = {"Authorization": f"Bearer {TOKENS[role]}"}
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    async with api.client.post(path, json=body, headers=headers) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.json(content_type=None)


def lines(logs: list[dict], event: str) -> list[dict]:
    return [e for e in logs if e["event"] == event]


async def test_a_valid_request_id_is_echoed_and_logged_with_route_template_principal_client_and_via(api: Api):
    await api.player(deposit=1000)
    with capture_logs() as logs:
        status, headers, body = await post(
            api, "edge", "/v1/bets", bet("b1", 100, via="eu", client_id="gs"), request_id="bet-42.eu:1"
        )
    assert status == 201 and headers["X-Request-Id"] == "bet-42.eu:1"
    [line] = lines(logs, "http_request")
    assert line["request_id"] == "bet-42.eu:1" and line["route"] == "/v1/bets" and line["method"] == "POST"
    assert line["status"] == 201 and line["code"] is None and line["principal"] == NAMES["edge"]
    assert line["client_id"] == "gs" and line["via"] == "eu" and line["duration_ms"] >= 0
    [action] = lines(logs, "ledger_action")
    assert action["request_id"] == "bet-42.eu:1" and action["op"] == "bet" and action["id"] == "b1"
    assert action["sequence"] == body["transaction"]["sequence"] and action["status"] == 201
    assert TOKENS["edge"] not in repr(logs)


@pytest.mark.parametrize(
    "hostile", ['x" injected="1', "a\tb", "é" * 4, "x" * (request_ids.LENGTH_MAX + 1), "", "a b", "{}", "a;rm -rf"]
)
async def test_a_hostile_request_id_is_replaced_by_a_fresh_one_everywhere(api: Api, hostile: str):
    with capture_logs() as logs:
        async with api.client.get(
            "/v1/players/nobody/balances",
            headers={"Authorization": f"Bearer {TOKENS['edge']}", "X-Request-Id": hostile},
        ) as resp:
            body = await resp.json(content_type=None)
            echoed = resp.headers["X-Request-Id"]
    assert resp.status == 404 and request_ids.is_valid(echoed) and echoed != hostile and len(echoed) == 32
    assert body["request_id"] == echoed and body["code"] == "not_found"
    [line] = lines(logs, "http_request")
    assert line["request_id"] == echoed and line["route"] == "/v1/players/{player_id}/balances"
    assert line["code"] == "not_found" and line["status"] == 404
    assert hostile not in repr([v for e in logs for v in e.values()]) or hostile in ("", "{}")


async def test_every_problem_body_names_the_request_id_even_stored_rejections_and_unknown_routes(api: Api):
    await api.player(deposit=10)
    for path, body, role, code in [
        ("/v1/bets", bet("big", 10**6), "edge", "insufficient_funds"),  # a stored (journaled) rejection
        ("/v1/bets", {"id": "x"}, "edge", "validation_error"),
        ("/v1/bets", bet("b2"), "cashier", "forbidden"),
        ("/v1/nowhere", {}, "edge", "not_found"),
    ]:
        _, headers, answer = await post(api, role, path, body, request_id=f"rid-{code}")
        assert answer["code"] == code and answer["request_id"] == f"rid-{code}", answer
        assert headers["X-Request-Id"] == f"rid-{code}"
    async with api.client.post("/v1/bets", json=bet("b3")) as resp:  # no credential: 401, still named
        assert resp.status == 401 and (await resp.json())["request_id"] == resp.headers["X-Request-Id"]


async def test_each_batched_action_is_logged_and_answered_under_its_own_request_id(api: Api):
    await api.player(deposit=1000)
    actions = [
        {"op": "bet", "body": bet("b1", 100, via="eu", client_id="gs"), "request_id": "edge-rid-1"},
        {"op": "bet", "body": bet("b2", 10**6, via="eu", client_id="gs", round_id="r2"), "request_id": "edge-rid-2"},
        {
            "op": "win",
            "body": {"id": "w1", "player_id": "p1", "currency": "EUR", "amount_minor": -1},
            "request_id": "edge-rid-3",
        },  # invalid: judged alone
        {"op": "bet", "body": bet("b4", 1, via="eu", client_id="gs", round_id="r4")},  # an older edge: no id
    ]
    with capture_logs() as logs:
        status, headers, body = await post(api, "edge", "/v1/batch", {"actions": actions}, request_id="batch-1")
    assert status == 200 and headers["X-Request-Id"] == "batch-1"
    statuses = [r["status"] for r in body["results"]]
    assert statuses == [201, 422, 400, 201]
    assert body["results"][1]["body"]["request_id"] == "edge-rid-2"
    assert body["results"][2]["body"]["request_id"] == "edge-rid-3"
    assert "request_id" not in body["results"][0]["body"]  # money answers are unchanged
    by_rid = {a["request_id"]: a for a in lines(logs, "ledger_action")}
    assert set(by_rid) == {"edge-rid-1", "edge-rid-2", "edge-rid-3", "batch-1"}
    assert all(a["batch_request_id"] == "batch-1" for a in by_rid.values())
    assert by_rid["edge-rid-1"]["id"] == "b1" and by_rid["edge-rid-1"]["via"] == "eu"
    assert by_rid["edge-rid-2"]["code"] == "insufficient_funds" and by_rid["edge-rid-3"]["code"] == "validation_error"
    assert by_rid["batch-1"]["id"] == "b4"
    [line] = lines(logs, "http_request")
    assert line["request_id"] == "batch-1" and line["route"] == "/v1/batch" and line["actions"] == 4


async def test_a_batch_action_with_a_hostile_request_id_is_refused_whole_and_changes_nothing(api: Api):
    await api.player(deposit=1000)
    action = {"op": "bet", "body": bet("b1", 100), "request_id": "bad id\n"}
    status, _, body = await post(api, "edge", "/v1/batch", {"actions": [action]})
    assert status == 400 and body["code"] == "validation_error" and body["field"] == "actions.0.request_id"
    assert (await api.get("edge", "/v1/players/p1/balances"))[1]["balances"][0]["balance_minor"] == 1000


async def test_admin_writes_are_logged_with_the_admin_and_the_outcome(api: Api):
    with capture_logs() as logs:
        await api.player("p9")
        await api.post("admin_write", "/admin/v1/players/p9/freeze", {"reason": "kyc"})
    actions = [(a["action"], a["principal"], a["player_id"], a["status"]) for a in lines(logs, "admin_action")]
    assert actions == [("player_create", NAMES["admin_write"], "p9", 201), ("freeze", NAMES["admin_write"], "p9", 201)]
