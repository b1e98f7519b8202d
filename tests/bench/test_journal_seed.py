"""harness/journal_seed.py: the fast seeder journals exactly what the writer would, the chain
verifies, the derived tables equal a rebuild from the journal, and the ledger carries on from it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from core_ledger.domain import TABLES, Command
from core_ledger.journal_checks import rebuild_differences, verify_store
from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.store import SqliteStore, Store
from core_ledger.writer import WriterLimits
from harness.journal_seed import SEED_PRINCIPAL, SeedRefused, seed_commands, seed_store
from tests.support.local_postgres import PgServer, postgres_store
from tests.support.seeding import small_plan

MOMENT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def service_on(store: Store) -> LedgerService:
    return LedgerService(store, WriterLimits(), clock=lambda: MOMENT, metrics=LedgerMetrics(CollectorRegistry()))


async def seeded_and_checked(store: Store, size: int, players: int, group: int) -> None:
    """Seed `store`, check its chain and derived rows, then let the writer journal one more bet."""
    await store.open()
    try:
        head = await seed_store(
            store, seed_commands(small_plan(size, players)), group_entries=group, clock=lambda: MOMENT
        )
        assert head.sequence == size
        assert (await store.head()) == head
        report = await verify_store(store)
        assert report["ok"] and report["entries_checked"] == size
        assert await rebuild_differences(store) == []  # every row the seeder dropped was committed first
    finally:
        await store.close()
    service = service_on(store)
    await service.start()
    try:
        request = {
            "id": "after-seed",
            "player_id": "bench-p0",
            "currency": "EUR",
            "amount_minor": 100,
            "round_id": "after-seed-r",
            "game_id": "slots-1",
        }
        bet = Command("bet", request, SEED_PRINCIPAL, (SEED_PRINCIPAL, "after-seed"), SEED_PRINCIPAL)
        [(status, body)] = await service.submit([bet])  # type: ignore[misc]  # a bet's result is an answer tuple; the status says so
        assert status == 201, body
        assert service.head.sequence == size + 1
    finally:
        await service.stop()


async def test_seeded_entries_and_rows_are_byte_identical_to_what_the_writer_journals(tmp_path: Path) -> None:
    size, players = 97, 7
    writer_store, seeded = SqliteStore(tmp_path / "writer.db"), SqliteStore(tmp_path / "seeded.db")
    through_writer = service_on(writer_store)
    await through_writer.start()
    try:
        for _, command in seed_commands(small_plan(size, players)):
            [(status, _)] = await through_writer.submit([command])  # type: ignore[misc]  # an answer tuple; the status says so
            assert status in (200, 201)
    finally:
        await through_writer.stop()
    await writer_store.open()
    await seeded.open()
    try:
        await seed_store(seeded, seed_commands(small_plan(size, players)), group_entries=10, clock=lambda: MOMENT)
        written = await writer_store.journal(0, size + 1)
        assert len(written) == size and await seeded.journal(0, size + 1) == written
        for table in TABLES:
            assert await seeded.dump(table) == await writer_store.dump(table), table
    finally:
        await seeded.close()
        await writer_store.close()


async def test_seeding_in_groups_verifies_rebuilds_equal_and_the_writer_carries_on(tmp_path: Path) -> None:
    # Groups of ~25 entries over 11 players of ~12 entries: groups end between players, rows dropped.
    await seeded_and_checked(SqliteStore(tmp_path / "ledger.db"), 133, 11, 25)


async def test_seeding_refuses_a_store_that_holds_entries_and_a_plan_that_cannot_fit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "ledger.db")
    await store.open()
    try:
        await seed_store(store, seed_commands(small_plan(5, 2)), clock=lambda: MOMENT)
        with pytest.raises(SeedRefused, match="already holds 5 entries"):
            await seed_store(store, seed_commands(small_plan(5, 2)), clock=lambda: MOMENT)
        assert (await store.head()).sequence == 5
    finally:
        await store.close()
    with pytest.raises(ValueError, match="cannot hold"):
        small_plan(4, 2)


async def test_seeding_on_postgres_verifies_and_rebuilds_equal(pg_server: PgServer, tmp_path: Path) -> None:
    await seeded_and_checked(postgres_store(pg_server), 61, 5, 20)
