"""Concurrent abuse through the edges (requests spread over all three at once): 50 claims of one
bonus pay it once, 50 rollbacks of one bet refund it once, and 50 copies of one claim commit once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from harness.cluster import BONUS_ID
from tests.support.cluster_client import Client, Reply

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="package")]

ATTACKERS = 50
BONUS_AMOUNT_MINOR = 1_000  # what harness.cluster.seed grants every player
WAGERING_MINOR = 5_000  # the seeded wagering requirement


async def _balance(client: Client, player_id: str) -> int:
    reply = await client.as_role("ledger", "admin_read", "GET", f"/v1/players/{player_id}/balances")
    assert reply.status == 200, reply.raw
    [eur] = [b for b in reply.json()["balances"] if b["currency"] == "EUR"]
    return eur["balance_minor"]


async def _bet(client: Client, player_id: str, id_: str, amount_minor: int) -> None:
    reply = await client.as_role(
        "eu",
        "game_server",
        "POST",
        "/v1/bets",
        body={
            "id": id_,
            "player_id": player_id,
            "currency": "EUR",
            "amount_minor": amount_minor,
            "round_id": f"{id_}-r",
            "game_id": "slots-1",
        },
    )
    assert reply.status == 201, reply.raw


async def _spread(client: Client, path: str, bodies: list[dict[str, Any]]) -> list[Reply]:
    edges = client.cluster.edge_ids
    return await asyncio.gather(
        *(
            client.as_role(edges[i % len(edges)], "game_server", "POST", path, body=body)
            for i, body in enumerate(bodies)
        )
    )


async def test_fifty_concurrent_claims_of_one_bonus_pay_it_exactly_once(client):
    player = "p004"
    await _bet(client, player, "abuse-claim-wager", WAGERING_MINOR)
    before = await _balance(client, player)
    replies = await _spread(
        client,
        "/v1/bonus-claims",
        [{"id": f"abuse-claim-{i}", "player_id": player, "bonus_id": BONUS_ID} for i in range(ATTACKERS)],
    )
    statuses = sorted(r.status for r in replies)
    assert statuses == [201] + [409] * (ATTACKERS - 1), statuses
    refused = [r.json() for r in replies if r.status == 409]
    assert {p["code"] for p in refused} == {"already_claimed"}, refused[:2]
    assert all(r.content_type == "application/problem+json" for r in replies if r.status == 409)
    assert await _balance(client, player) == before + BONUS_AMOUNT_MINOR


async def test_fifty_concurrent_copies_of_one_claim_commit_once_and_replay_the_same_answer(client):
    player = "p005"
    await _bet(client, player, "abuse-same-wager", WAGERING_MINOR)
    before = await _balance(client, player)
    claim = {"id": "abuse-same-claim", "player_id": player, "bonus_id": BONUS_ID}
    replies = await _spread(client, "/v1/bonus-claims", [claim] * ATTACKERS)
    statuses = sorted(r.status for r in replies)
    assert statuses == [200] * (ATTACKERS - 1) + [201], statuses
    assert len({r.json()["transaction"]["sequence"] for r in replies}) == 1
    assert [r.json()["replayed"] for r in replies].count(False) == 1
    assert await _balance(client, player) == before + BONUS_AMOUNT_MINOR


async def test_fifty_concurrent_rollbacks_of_one_bet_refund_it_exactly_once(client):
    player = "p006"
    before = await _balance(client, player)
    await _bet(client, player, "abuse-rb-bet", 700)
    assert await _balance(client, player) == before - 700
    replies = await _spread(
        client,
        "/v1/rollbacks",
        [{"id": f"abuse-rb-{i}", "bet_id": "abuse-rb-bet", "player_id": player} for i in range(ATTACKERS)],
    )
    assert sorted(r.status for r in replies) == [201] * ATTACKERS, [r.raw[:200] for r in replies if r.status != 201]
    reversals = [r for r in replies if r.json()["transaction"].get("reversed")]
    assert len(reversals) == 1, [r.json()["transaction"] for r in replies[:3]]
    assert await _balance(client, player) == before
    # Each answer shows the balance after that rollback: never more than the refund once.
    assert {r.json()["balance"]["balance_minor"] for r in replies} == {before}
