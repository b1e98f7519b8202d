"""The writer lease of an active/passive ledger pair on one PostgreSQL (`WriterLease`): one copy
holds it, the other waits; a copy without the lease commits nothing even at the right head; when
the active's session dies (a crash, or cut off from the database) the passive takes the lease
within seconds; and two writers racing at one head never both commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from core_ledger.store import Head, JournalRow, StorageError
from core_ledger.store.postgres import PostgresStore, WriterLease
from tests.support.local_postgres import TEST_LIMITS, PgServer, fresh_schema

TAKEOVER_S = 5.0
RACES = 20


def _rows(sequence: int, tag: str) -> list[JournalRow]:
    return [JournalRow(sequence, f"{tag}{sequence}", f'{{"sequence":{sequence},"by":"{tag}"}}')]


@pytest.fixture
async def pair(pg_server: PgServer) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one schema, each with a lease of its own (not yet acquired)."""
    schema = fresh_schema()
    stores, leases = [], []
    try:
        for _ in range(2):
            store = PostgresStore(pg_server.dsn, TEST_LIMITS, schema=schema)
            stores.append(store)
            await store.open()
            store.lease = WriterLease(pg_server.dsn, schema, TEST_LIMITS)
            leases.append(store.lease)
        yield stores[0], stores[1]
    finally:
        for lease in leases:
            await lease.release()
        for store in stores:
            await store.close()


async def test_only_the_lease_holder_commits_and_the_passive_takes_over_when_the_active_dies(
    pg_server: PgServer, pair: tuple[PostgresStore, PostgresStore]
) -> None:
    active, passive = pair
    assert active.lease is not None and passive.lease is not None
    assert await active.lease.acquire(timeout_s=TAKEOVER_S)
    assert not await passive.lease.acquire(poll_s=0.05, timeout_s=0.3)  # the passive waits
    await active.commit(_rows(1, "a"), {}, Head(1, "aa" * 32, 1))
    with pytest.raises(StorageError, match="writer lease"):  # the right head, but no lease
        await passive.commit(_rows(2, "p"), {}, Head(2, "bb" * 32, 1))
    waiting = asyncio.create_task(passive.lease.acquire(poll_s=0.05, timeout_s=TAKEOVER_S))
    admin = await asyncpg.connect(pg_server.dsn)
    try:  # the active's session ends as in a crash or a cut from the database
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", active.lease.pid)
    finally:
        await admin.close()
    assert await asyncio.wait_for(waiting, TAKEOVER_S + 1)
    with pytest.raises(StorageError, match="writer lease"):  # the old active commits nothing any more
        await active.commit(_rows(2, "a"), {}, Head(2, "cc" * 32, 1))
    head = await passive.head()
    await passive.commit(_rows(head.sequence + 1, "p"), {}, Head(head.sequence + 1, "dd" * 32, 1))
    assert [s for s, _ in await passive.journal(0, 10)] == [1, 2]
    assert await passive.journal_of("p2", 5) and not await passive.journal_of("a2", 5)


async def test_two_writers_racing_at_one_head_never_both_commit(pair: tuple[PostgresStore, PostgresStore]) -> None:
    """Even when both believe they hold the lease (the active's session died after its check), the
    head compare-and-set lets one commit per sequence through."""
    a, b = pair
    assert a.lease is not None and b.lease is not None
    a.lease, b.lease = None, None  # no lease check: the fence alone
    for n in range(1, RACES + 1):
        outcomes = await asyncio.gather(
            a.commit(_rows(n, "a"), {}, Head(n, f"{n:064x}", 1)),
            b.commit(_rows(n, "b"), {}, Head(n, f"{n:064x}", 1)),
            return_exceptions=True,
        )
        assert sum(o is None for o in outcomes) == 1, outcomes
        assert all(isinstance(o, StorageError) for o in outcomes if o is not None)
    assert [s for s, _ in await a.journal(0, RACES + 5)] == list(range(1, RACES + 1))


async def test_a_silent_lease_session_is_ended_by_the_server_after_its_ttl(pg_server: PgServer) -> None:
    """An active cut off from the database sends nothing more: with a ttl, PostgreSQL itself ends
    its lease's session (`idle_session_timeout`), the lock is released and the other copy takes it;
    the silent one's heartbeat then fails. A heartbeat in time keeps the lease."""
    schema = fresh_schema()
    silent = WriterLease(pg_server.dsn, schema, TEST_LIMITS, ttl_s=1.0)
    other = WriterLease(pg_server.dsn, schema, TEST_LIMITS, ttl_s=1.0)
    try:
        assert await silent.acquire(timeout_s=TAKEOVER_S)
        for _ in range(3):  # heartbeats within the ttl keep it, well past the ttl
            await asyncio.sleep(0.4)
            await silent.heartbeat(1.0)
        assert not await other.acquire(poll_s=0.1, timeout_s=0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await other.acquire(poll_s=0.1, timeout_s=TAKEOVER_S)  # the silent one said nothing more
        assert loop.time() - started < TAKEOVER_S
        with pytest.raises(StorageError, match="writer lease"):
            await silent.heartbeat(1.0)
        await other.heartbeat(1.0)
    finally:
        await silent.release()
        await other.release()
