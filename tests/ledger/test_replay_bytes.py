"""A replay is the first answer's exact bytes, apart from `replayed` (item 12): the first answer is
rendered from the entry just decided, a replay from the journal's canonical (sorted-key) text.
A problem body also names the request it answers (`request_id`): a retry sent with the first
request's `X-Request-Id`, as a client retrying one request does, gets the same bytes."""

from __future__ import annotations

from typing import Any

from tests.support.ledger import TOKENS, Api, bet


async def post_raw(api: Api, role: str, path: str, body: Any) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {TOKENS[role]}", "X-Request-Id": f"replay-test-{path}".replace("/", ".")}
    async with api.client.post(path, json=body, headers=headers) as resp:
        return resp.status, await resp.read()


def only_replayed_differs(first: bytes, replay: bytes) -> bool:
    return first.count(b'"replayed":false') == 1 and first.replace(b'"replayed":false', b'"replayed":true') == replay


async def test_every_replay_is_the_first_answer_byte_for_byte_but_replayed(api: Api) -> None:
    await api.player(deposit=10_000)
    assert (
        await api.post(
            "admin_write",
            "/admin/v1/jackpots",
            {
                "jackpot_id": "mega",
                "currency": "EUR",
                "seed_minor": 100,
                "contribution_ppm": 10_000,
                "game_ids": ["slots"],
            },
        )
    )[0] == 201
    assert (
        await api.post(
            "admin_write",
            "/admin/v1/bonuses",
            {
                "id": "g1",
                "player_id": "p1",
                "bonus_id": "welcome",
                "currency": "EUR",
                "amount_minor": 5,
                "wagering_requirement_minor": 10,
                "expires_at": "2030-01-01T00:00:00Z",
            },
        )
    )[0] == 201
    writes = [
        ("edge", "/v1/bets", bet("b1", 500, via="eu")),  # nested results: contributions, wagering
        ("edge", "/v1/bets", bet("b2", 50, round_id="r2")),
        (
            "edge",
            "/v1/wins",
            {
                "id": "w1",
                "player_id": "p1",
                "currency": "EUR",
                "amount_minor": 7,
                "round_id": "r1",
                "close_round": True,
            },
        ),
        ("edge", "/v1/rollbacks", {"id": "rb1", "bet_id": "b2", "player_id": "p1", "round_id": "r2"}),
        ("edge", "/v1/jackpot-payouts", {"id": "jp1", "jackpot_id": "mega", "player_id": "p1", "round_id": "r1"}),
        ("edge", "/v1/bonus-claims", {"id": "c1", "player_id": "p1", "bonus_id": "welcome"}),
        ("edge", "/v1/bets", bet("b3", 10**9, round_id="r3")),  # a stored rejection (problem+json)
        ("cashier", "/v1/deposits", {"id": "d1", "player_id": "p1", "currency": "EUR", "amount_minor": 3}),
        (
            "admin_write",
            "/admin/v1/adjustments",
            {"id": "a1", "player_id": "p1", "currency": "EUR", "amount_minor": -1, "reason": "fix"},
        ),
    ]
    for role, path, body in writes:
        first_status, first = await post_raw(api, role, path, body)
        replay_status, replay = await post_raw(api, role, path, body)
        assert first_status in (201, 422) and replay_status == (200 if first_status == 201 else first_status)
        assert only_replayed_differs(first, replay), (path, first, replay)


async def test_a_replay_in_a_batch_is_the_first_answer_byte_for_byte_but_replayed(api: Api) -> None:
    await api.player(deposit=1000)
    action = {"op": "bet", "body": bet("b1", 100, via="eu")}
    _, first = await post_raw(api, "edge", "/v1/batch", {"actions": [action]})
    _, replay = await post_raw(api, "edge", "/v1/batch", {"actions": [action]})
    assert b'"status":201' in first and b'"status":200' in replay
    assert only_replayed_differs(first.replace(b'"status":201', b'"status":200'), replay)
