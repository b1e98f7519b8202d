"""A small seeding plan and the check that a rebuild left a clean, equal store, for tests of the
seeder and of rebuild."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core_ledger.journal_checks import rebuild_differences
from core_ledger.store import SqliteStore
from harness.journal_seed import SeedPlan


def small_plan(size: int, players: int) -> SeedPlan:
    """`size` entries over `players` funded players, shaped like the benchmarks' traffic."""
    return SeedPlan(
        size=size,
        players=players,
        currency="EUR",
        deposit_minor=10**9,
        bet_minor=100,
        game_ids=("slots-1", "slots-2", "roulette-1"),
        jackpot_id="mega",
        jackpot_games=("slots-1", "slots-2"),
    )


async def assert_rebuilt_cleanly(directory: Path, db: Path) -> None:
    """No rebuild scratch file is left in `directory`, and `db`'s derived rows equal a rebuild."""
    left = await asyncio.to_thread(lambda: [p.name for p in directory.iterdir() if "rebuild" in p.name])
    assert not left
    store = SqliteStore(db)
    await store.open()
    try:
        assert await rebuild_differences(store) == []
    finally:
        await store.close()
