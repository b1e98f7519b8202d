"""The writer judges a group of commands together, planned before any of them applies: it must
answer and journal exactly as if each had been sent alone. A differential test: the same seeded
mix of every command type (money, cashier, admin, settlements; ids reused, rollbacks of unknown
bets, a jackpot and a player created mid-way) is sent one by one, then in random groups with
restarts of the writer (an empty overlay) in between, at pipeline depth 1 and 2. Answers (but
`replayed`), the journal and every derived table must be equal, and neither run may halt.
(A payout planned in the group that created its jackpot halted the writer.)"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from shared.auth import Principal
from shared.errors import CroupierError

from core_ledger.domain import ADMIN_SCOPE, Command
from core_ledger.domain.rounds import settlement
from core_ledger.domain.state import TABLES
from core_ledger.http import money_command
from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.store import MemoryStore
from core_ledger.writer import WriterLimits

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
PLAYERS, CURRENCIES, GAMES, CLIENTS = ("p1", "p2", "p3"), ("EUR", "USD"), ("slots-1", "slots-2", "roul"), ("gs", "gs2")
EDGE, CASHIER = Principal("eu", "edge"), Principal("cashier-1", "cashier")
SEEDS = range(200)
COMMANDS_PER_SEED = 60
GROUP_SIZE_MAX = 8


def admin(kind: str, fields: dict[str, Any], key: str | None) -> Command:
    return Command(kind, fields, "admin", None if key is None else (ADMIN_SCOPE, key))


def setup() -> list[Command]:
    """Two jackpots, three players in two currencies, funded."""
    commands = [
        admin(
            "jackpot_create",
            {
                "jackpot_id": "mega",
                "currency": "EUR",
                "seed_minor": 1000,
                "contribution_ppm": 10_000,
                "game_ids": ["slots-1", "slots-2"],
            },
            "mega",
        ),
        admin(
            "jackpot_create",
            {
                "jackpot_id": "usdj",
                "currency": "USD",
                "seed_minor": 5,
                "contribution_ppm": 300_000,
                "game_ids": ["slots-1"],
            },
            "usdj",
        ),
    ]
    for player in PLAYERS:
        commands.append(admin("player_create", {"player_id": player, "currencies": list(CURRENCIES)}, player))
        commands += [
            money_command(
                "deposit", {"id": f"d-{player}-{c}", "player_id": player, "currency": c, "amount_minor": 5000}, CASHIER
            )
            for c in CURRENCIES
        ]
    return commands


def traffic(rng: random.Random, count: int) -> list[Command]:
    """`count` commands of every type; ids mostly fresh, sometimes an earlier one (a retry or a
    reuse), rollbacks of earlier, later and unknown bets."""
    ids = [f"t{i}" for i in range(count)]
    out: list[Command] = []

    def earlier_id() -> str:
        return rng.choice(ids[: len(out) + 3])

    for i in range(count):
        player, currency, round_id = rng.choice(PLAYERS), rng.choice(CURRENCIES), f"r{rng.randrange(5)}"
        edge = {"client_id": rng.choice(CLIENTS), "via": rng.choice(["eu", "us"])}
        tx_id = ids[i] if rng.random() < 0.85 else earlier_id()
        amount = rng.choice([1, 50, 100, 500, 3000, 10**15])
        kind = rng.random()
        if kind < 0.30:
            body = {
                "id": tx_id,
                "player_id": player,
                "currency": currency,
                "amount_minor": amount,
                "round_id": round_id,
                "game_id": rng.choice(GAMES),
            }
            out.append(money_command("bet", {**body, **edge}, EDGE))
        elif kind < 0.42:
            body = {
                "id": tx_id,
                "player_id": player,
                "currency": currency,
                "amount_minor": rng.choice([0, 10, 700]),
                "round_id": round_id,
                "close_round": rng.random() < 0.3,
            }
            out.append(money_command("win", {**body, **edge}, EDGE))
        elif kind < 0.57:
            body = {"id": tx_id, "bet_id": earlier_id(), "player_id": player}
            if rng.random() < 0.3:
                body["round_id"] = round_id
            out.append(money_command("rollback", {**body, **edge}, EDGE))
        elif kind < 0.63:
            body = {
                "id": tx_id,
                "jackpot_id": rng.choice(["mega", "usdj", "late"]),
                "player_id": player,
                "round_id": round_id,
            }
            out.append(money_command("jackpot_payout", {**body, **edge}, EDGE))
        elif kind < 0.69:
            body = {"id": tx_id, "player_id": player, "bonus_id": rng.choice(["b1", "b2"])}
            out.append(money_command("bonus_claim", {**body, **edge}, EDGE))
        elif kind < 0.76:
            body = {"id": tx_id, "player_id": player, "currency": currency, "amount_minor": amount}
            out.append(money_command(rng.choice(["deposit", "withdrawal"]), body, CASHIER))
        elif kind < 0.79:
            fields = {
                "id": tx_id,
                "player_id": player,
                "bonus_id": rng.choice(["b1", "b2"]),
                "currency": currency,
                "amount_minor": 300,
                "wagering_requirement_minor": rng.choice([0, 100, 1000]),
                "expires_at": "2026-12-01T00:00:00+00:00",
            }
            out.append(admin("bonus_grant", fields, tx_id))
        elif kind < 0.82:
            out.append(admin(rng.choice(["freeze", "unfreeze"]), {"player_id": player, "reason": "test"}, None))
        elif kind < 0.85:
            fields = {
                "id": tx_id,
                "player_id": player,
                "currency": currency,
                "amount_minor": rng.choice([-500, 500]),
                "reason": "test",
            }
            out.append(admin("adjustment", fields, tx_id))
        elif kind < 0.90:
            out.append(settlement(rng.choice(["refund", "close"]), player, round_id, rng.choice(CLIENTS), "t", "admin"))
        elif kind < 0.93:
            fields = {
                "jackpot_id": "late",
                "currency": currency,
                "seed_minor": rng.choice([0, 100]),
                "contribution_ppm": 500_000,
                "game_ids": [rng.choice(GAMES)],
            }
            out.append(admin("jackpot_create", fields, "late"))
        elif kind < 0.95:
            out.append(admin("player_create", {"player_id": "p4", "currencies": ["EUR"]}, "p4"))
        else:
            body = {
                "id": tx_id,
                "player_id": "p4",
                "currency": "EUR",
                "amount_minor": amount,
                "round_id": round_id,
                "game_id": rng.choice(GAMES),
            }
            out.append(money_command("bet", {**body, **edge}, EDGE))
    return out


def answer(result: Any) -> Any:
    if isinstance(result, CroupierError):
        return ("refused", result.code, result.detail)
    status, body = result
    return status, orjson.dumps({k: v for k, v in body.items() if k != "replayed"}, option=orjson.OPT_SORT_KEYS)


async def run(
    commands: list[Command], groups: list[int], restarts: set[int], depth: int | None, rng: random.Random
) -> tuple[list[Any], MemoryStore]:
    """Answers of `commands` sent in `groups` (sizes), the writer restarted before each group index
    in `restarts`; a group is sent as one job or as one job per command taken together."""
    store = MemoryStore()

    async def started() -> LedgerService:
        service = LedgerService(
            store, WriterLimits(pipeline_depth=depth), clock=lambda: NOW, metrics=LedgerMetrics(CollectorRegistry())
        )
        await service.start()
        return service

    service = await started()
    for command in setup():
        await service.submit([command])
    answers: list[Any] = []
    at = 0
    try:
        for index, size in enumerate(groups):
            if index in restarts:
                await service.stop()
                service = await started()
            group, at = commands[at : at + size], at + size
            jobs = [service.enqueue([c]) for c in group] if rng.random() < 0.5 else [service.enqueue(group)]
            for job in jobs:
                answers += [answer(r) for r in await job]
            assert service.halted is None, f"halted in the group {[c.type for c in group]}: {service.halted}"
    finally:
        await service.stop()
    return answers, store


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_group_answers_and_journals_as_its_commands_one_by_one(seed: int) -> None:
    rng = random.Random(seed)
    commands = traffic(rng, COMMANDS_PER_SEED)
    alone, alone_store = await run(commands, [1] * len(commands), set(), None, rng)
    groups: list[int] = []
    while sum(groups) < len(commands):
        groups.append(min(len(commands) - sum(groups), rng.randrange(1, GROUP_SIZE_MAX + 1)))
    restarts = {i for i in range(len(groups)) if rng.random() < 0.4}
    grouped, grouped_store = await run(commands, groups, restarts, rng.choice([1, 2]), rng)
    for i, (one, together) in enumerate(zip(alone, grouped, strict=True)):
        assert one == together, f"command {i} ({commands[i].type}) answered differently in a group"
    assert await alone_store.journal(0, 10**9) == await grouped_store.journal(0, 10**9)
    for table in TABLES:
        assert await alone_store.dump(table) == await grouped_store.dump(table), table
