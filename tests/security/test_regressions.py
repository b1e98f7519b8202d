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


async def flood_of_wins(ledger: Cluster, games: tuple[str, ...]) -> str:
    """40 batches of 239 wins of 10**15 minor units (past 2**63 in total), each batch with an
    unrelated bet of another player last, over one round per game in `games` in turn: every win is
    answered on its own (201 or 422) and never fails its batch. The code a retry of a refused win
    replays."""
    url = ledger.url("ledger")
    async with aiohttp.ClientSession(headers=ledger.headers("edge")) as http:
        for game in games:
            bet = {"id": f"ovf-bet-{game}", "player_id": "p001", "currency": "EUR", "amount_minor": 1}
            async with http.post(f"{url}/v1/bets", json={**bet, "round_id": f"ovf-{game}", "game_id": game}) as r:
                assert r.status == 201
        statuses: list[int] = []
        wins = 0
        for b in range(40):
            actions = []
            for i in range(239):
                game = games[wins % len(games)]
                wins += 1
                win = {"id": f"ovf-win-{b}-{i}", "player_id": "p001", "currency": "EUR", "round_id": f"ovf-{game}"}
                actions.append({"op": "win", "body": {**win, "amount_minor": AMOUNT_MINOR_MAX}})
            other = {"id": f"ovf-other-{b}", "player_id": "p002", "currency": "EUR", "amount_minor": 1}
            actions.append({"op": "bet", "body": {**other, "round_id": f"ovf-o-{b}", "game_id": games[0]}})
            async with http.post(f"{url}/v1/batch", json={"actions": actions}) as r:
                assert r.status == 200
                results = (await r.json())["results"]
            statuses += [x["status"] for x in results[:-1]]
            assert results[-1]["status"] == 201, ("an unrelated bet failed with its batch", results[-1])
        assert set(statuses) == {201, 422}, sorted(set(statuses))
        last = {"id": "ovf-win-39-0", "player_id": "p001", "currency": "EUR", "amount_minor": AMOUNT_MINOR_MAX}
        async with http.post(f"{url}/v1/wins", json={**last, "round_id": f"ovf-{games[0]}"}) as r:
            body = await r.json()
        assert body.get("replayed") is True, body
        return str(body.get("code"))


async def test_wins_that_would_push_the_house_past_64_bits_are_refused_alone_not_failing_their_batch(lone_ledger):
    """Each win is at most AMOUNT_MINOR_MAX, but nothing bounds their sum: after ~4600 of them the
    house account would leave ±2^62 (the 64-bit range the stores encode, halved). Spread over three
    games, no game's report sums reach their own bound (2^61) first."""
    assert await flood_of_wins(lone_ledger, ("g", "h", "k")) == "balance_limit_exceeded"


async def test_wins_that_would_push_a_game_s_report_past_64_bits_are_refused_alone_not_failing_their_batch(
    tmp_path_factory,
):
    """On one game the day's report sum of wins reaches its bound (2^61) after ~2300 such wins,
    before the house's balance does: before that bound the sum passed 2^63 in the store (a float on
    SQLite; on PostgreSQL a failed commit for every group holding it, a retryable outage)."""
    c = Cluster(tmp_path_factory.mktemp("overflow-report"), edge_ids=())
    try:
        await c.start()
        await seed(c, players=2)
        assert await flood_of_wins(c, ("g",)) == "report_limit_exceeded"
    finally:
        await c.stop()
