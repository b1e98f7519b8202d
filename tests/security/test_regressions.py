"""Bugs the security suite found, kept as regression tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from shared.ids import AMOUNT_MINOR_MAX

from harness.cluster import Cluster, seed
from tests.support.cluster_client import PROBLEM

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="package")]


async def test_a_session_state_nested_too_deep_to_store_gets_a_problem_not_a_crash(client):
    # 300 levels parse (orjson reads up to 1024) but are deeper than orjson writes (255).
    raw = b'{"state":' + b'{"a":' * 300 + b"1" + b"}" * 301
    reply = await client.as_role("eu", "game_server", "PUT", "/v1/players/p003/session/deep-game", data=raw)
    assert reply.status == 400 and reply.content_type == PROBLEM, (reply.status, reply.raw[:200])
    assert reply.json()["code"] == "validation_error"


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def lone_ledger(tmp_path_factory) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("overflow"), edge_ids=())
    try:
        await c.start()
        await seed(c, players=2)
        yield c
    finally:
        await c.stop()


async def test_wins_that_would_push_the_house_past_64_bits_are_refused_alone_not_failing_their_batch(lone_ledger):
    """Each win is at most AMOUNT_MINOR_MAX, but nothing bounds their sum: after ~9200 of them the
    house account leaves the 64-bit range that the store can encode."""
    c, edge = lone_ledger, lone_ledger.headers("edge")
    url = c.url("ledger")
    async with aiohttp.ClientSession(headers=edge) as http:
        async with http.post(
            f"{url}/v1/bets",
            json={
                "id": "ovf-bet",
                "player_id": "p001",
                "currency": "EUR",
                "amount_minor": 1,
                "round_id": "ovf",
                "game_id": "g",
            },
        ) as r:
            assert r.status == 201
        statuses: list[int] = []
        for b in range(40):  # 40 x 240 wins of 10**15 minor units: past 2**63 in total
            actions = [
                {
                    "op": "win",
                    "body": {
                        "id": f"ovf-win-{b}-{i}",
                        "player_id": "p001",
                        "currency": "EUR",
                        "amount_minor": AMOUNT_MINOR_MAX,
                        "round_id": "ovf",
                    },
                }
                for i in range(239)
            ]
            actions.append(
                {
                    "op": "bet",
                    "body": {
                        "id": f"ovf-other-{b}",
                        "player_id": "p002",
                        "currency": "EUR",
                        "amount_minor": 1,
                        "round_id": f"ovf-o-{b}",
                        "game_id": "g",
                    },
                }
            )
            async with http.post(f"{url}/v1/batch", json={"actions": actions}) as r:
                assert r.status == 200
                results = (await r.json())["results"]
            statuses += [x["status"] for x in results[:-1]]
            assert results[-1]["status"] == 201, ("an unrelated bet failed with its batch", results[-1])
        assert set(statuses) == {201, 422}, sorted(set(statuses))
        async with http.post(
            f"{url}/v1/wins",
            json={
                "id": "ovf-win-39-0",
                "player_id": "p001",
                "currency": "EUR",
                "amount_minor": AMOUNT_MINOR_MAX,
                "round_id": "ovf",
            },
        ) as r:
            body = await r.json()
        assert body.get("code") == "balance_limit_exceeded" and body.get("replayed") is True, body
