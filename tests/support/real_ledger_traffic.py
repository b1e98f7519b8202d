"""Traffic for an edge in front of a real ledger: the player `p1` funded through the ledger, a
numbered bet, and a raw post whose answer bytes are kept (to compare answers byte for byte)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from shared.ids import AMOUNT_MINOR_MAX

Json = dict[str, Any]


async def post_raw(
    http: aiohttp.ClientSession, url: str, body: Json, request_id: str | None = None
) -> tuple[int, bytes]:
    headers = {"X-Request-Id": request_id} if request_id else None
    async with http.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.read()


def numbered_bet(i: int, amount: int) -> Json:
    """The body of bet number `i` of `p1`, alone in round `r-i`."""
    return {
        "id": f"b-{i}",
        "player_id": "p1",
        "currency": "EUR",
        "amount_minor": amount,
        "round_id": f"r-{i}",
        "game_id": "slots",
    }


async def setup_player(as_role: Callable[..., Awaitable[tuple[int, Json]]], deposits: int = 1) -> None:
    """Create `p1` (EUR) and deposit the largest amount `deposits` times, through `as_role(role, path, body)`."""
    assert (await as_role("admin_write", "/admin/v1/players", {"player_id": "p1", "currencies": ["EUR"]}))[0] == 201
    for i in range(deposits):
        status, _ = await as_role(
            "cashier",
            "/v1/deposits",
            {"id": f"d{i}", "player_id": "p1", "currency": "EUR", "amount_minor": AMOUNT_MINOR_MAX},
        )
        assert status == 201
