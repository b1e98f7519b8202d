"""Ledger domain commands for tests that drive `LedgerService` directly, and `traffic()`: a fixed
mix of every kind of command (accepted and refused) that leaves a journal worth checking."""

from __future__ import annotations

from core_ledger.domain import ADMIN_SCOPE, Command


def cmd(kind: str, key: str | None, principal: str = "edge-1", via: str | None = "eu", **request: object) -> Command:
    scope = ADMIN_SCOPE if kind in ("player_create", "jackpot_create") else "gs"
    return Command(kind, dict(request), principal, (scope, key) if key else None, via)


def traffic() -> list[Command]:
    bet = {"player_id": "p1", "currency": "EUR", "game_id": "slots"}
    return [
        cmd("player_create", "player:p1", player_id="p1", currencies=["EUR"]),
        cmd(
            "jackpot_create",
            "jackpot:j",
            jackpot_id="j",
            currency="EUR",
            seed_minor=100,
            contribution_ppm=50_000,
            game_ids=["slots"],
        ),
        cmd("deposit", "d1", id="d1", amount_minor=5000, player_id="p1", currency="EUR"),
        cmd(
            "bonus_grant",
            "g1",
            id="g1",
            bonus_id="b",
            player_id="p1",
            currency="EUR",
            amount_minor=10,
            wagering_requirement_minor=100,
            expires_at="2030-01-01T00:00:00Z",
        ),
        *(cmd("bet", f"b{i}", id=f"b{i}", amount_minor=100 + i, round_id=f"r{i // 3}", **bet) for i in range(9)),
        cmd("rollback", "rb1", id="rb1", bet_id="b7", player_id="p1", round_id=None),
        cmd("rollback", "rb2", id="rb2", bet_id="ghost", player_id="p1", round_id=None),
        cmd("win", "w1", id="w1", player_id="p1", currency="EUR", amount_minor=300, round_id="r0", close_round=True),
        cmd("jackpot_payout", "jp", id="jp", jackpot_id="j", player_id="p1", round_id="r1"),
        cmd("bonus_claim", "c1", id="c1", player_id="p1", bonus_id="b"),
        cmd("freeze", None, player_id="p1", reason="x"),
        cmd("withdrawal", "w9", id="w9", player_id="p1", currency="EUR", amount_minor=1),
    ]
