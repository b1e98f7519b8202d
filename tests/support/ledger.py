"""The ledger as tests talk to it: one credential per role, a config holding their digests, an HTTP
client that speaks as a role, a standby app tailing a primary, and the body of a bet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from shared.auth import TokenEntry, hash_token

from core_ledger.app import create_app
from core_ledger.config import LedgerConfig
from core_ledger.standby_tailer import StandbySettings
from tests.support.clock import FakeClock

ROLES = ("edge", "cashier", "admin_read", "admin_write", "replica", "game_server")
TOKENS = {role: f"token-of-{role}-0123456789" for role in ROLES}
NAMES = {role: f"{role.replace('_', '-')}-1" for role in ROLES}


def auth_headers(role: str) -> dict[str, str]:
    """The Authorization header of `role`'s credential."""
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def ledger_config(data_dir: Path, **overrides: Any) -> LedgerConfig:
    tokens = tuple(TokenEntry(NAMES[r], r, hash_token(TOKENS[r])) for r in ROLES)
    return LedgerConfig(data_dir=data_dir, tokens=tokens, **overrides)


@dataclass
class Api:
    """A test client that speaks as a role; returns (status, parsed body)."""

    client: Any

    async def call(self, role: str, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        headers = auth_headers(role) if role else {}
        async with self.client.request(method, path, json=body, headers=headers, **kw) as resp:
            if resp.content_type in ("application/json", "application/problem+json"):
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def post(self, role: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await self.call(role, "POST", path, body)

    async def get(self, role: str, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call(role, "GET", path, **kw)

    async def player(self, player_id: str = "p1", currencies: tuple[str, ...] = ("EUR",), deposit: int = 0) -> None:
        status, body = await self.post(
            "admin_write", "/admin/v1/players", {"player_id": player_id, "currencies": list(currencies)}
        )
        assert status == 201, body
        if deposit:
            status, body = await self.post(
                "cashier",
                "/v1/deposits",
                {"id": f"dep-{player_id}", "player_id": player_id, "currency": currencies[0], "amount_minor": deposit},
            )
            assert status == 201, body


def standby_of(primary_server: Any, data_dir: Path, clock: FakeClock, **config: Any) -> web.Application:
    """A standby ledger app (with `config` overrides) tailing `primary_server` with the replica
    credential, polling fast."""
    settings = StandbySettings(str(primary_server.make_url("")).rstrip("/"), TOKENS["replica"], poll_interval_s=0.05)
    return create_app(ledger_config(data_dir, **config), clock=clock, standby=settings)


def bet(
    id: str,
    amount: int = 100,
    *,
    player: str = "p1",
    round_id: str = "r1",
    game: str = "slots",
    currency: str = "EUR",
    **extra: Any,
) -> dict[str, Any]:
    """The body of POST /v1/bets."""
    return {
        "id": id,
        "player_id": player,
        "currency": currency,
        "amount_minor": amount,
        "round_id": round_id,
        "game_id": game,
        **extra,
    }
