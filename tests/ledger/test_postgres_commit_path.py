"""The PostgreSQL commit path: a group commit is one statement in its transaction, a checkout
costs no reset query, and prepared lookups keep using their index after a table grew from empty."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from core_ledger.domain.state import ENTRIES
from core_ledger.store import Head, JournalRow, StorageError
from core_ledger.store.base import KEYS_PER_QUERY_MAX
from core_ledger.store.postgres import PostgresStore, _load_many_sql
from tests.support.local_postgres import TEST_LIMITS, PgServer, fresh_schema

GENERIC_PLAN_AFTER = 5  # PostgreSQL may switch a prepared statement to its generic plan after 5 runs
BETS_ROWS = 200_000  # the planner prefers a scan of a small table; at this size only a stale plan scans
KEYS = 64  # a group's bets: their ids are looked up in one statement


def _array(texts: list[str]) -> str:
    return "ARRAY[" + ", ".join(f"'{t}'" for t in texts) + "]"


@pytest.fixture
async def store(pg_server: PgServer) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(pg_server.dsn, TEST_LIMITS, schema=fresh_schema())
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def test_the_duplicate_lookup_uses_the_bets_index_after_the_table_grew_from_empty(store: PostgresStore) -> None:
    """The load of `bets` by (client_id, bet_id), prepared and run while the table is empty, must
    still seek the primary key once the table is large (a cached generic plan scanned it whole)."""
    keys = f"{_array(['edge'] * KEYS)}, {_array([f'b{i}' for i in range(KEYS)])}"
    keys = f"{keys}, {keys}"  # the writer's pass looks up idempotency records and bets in one statement
    async with store._p.acquire() as conn:
        await conn.execute(f"PREPARE dup (text[], text[], text[], text[]) AS {_load_many_sql(['idem', 'bets'])}")
        for _ in range(GENERIC_PLAN_AFTER + 3):  # on the empty table: the plan a fresh database makes
            await conn.execute(f"EXECUTE dup ({keys})")
        await conn.execute(
            "INSERT INTO bets (client_id, bet_id, doc) SELECT 'edge', 'b' || g, '{}' "
            f"FROM generate_series(1, {BETS_ROWS}) AS g"
        )
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE dup ({keys})"))
        await conn.execute("DEALLOCATE dup")
    assert "Seq Scan on bets" not in plan, plan
    assert "Index" in plan and "bets_pkey" in plan, plan


async def test_a_group_commit_is_one_statement_and_a_checkout_sends_no_reset(store: PostgresStore) -> None:
    queries: list[tuple[str, str]] = []
    for name, pool in (("commit", store._commit_pool), ("read", store._p)):
        assert pool is not None
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda record, name=name: queries.append((name, record.query)))
    await store.commit([JournalRow(1, "tx1", '{"sequence":1}')], {}, Head(1, "aa" * 32, 1))  # asyncpg's first
    queries.clear()  # statement on a connection also asks for the types of its arrays: once
    journal = [JournalRow(s, f"tx{s}", f'{{"sequence":{s}}}') for s in (2, 3)]
    rows: Any = {
        "players": [(("p1",), {"n": 1})],
        "accounts": [(("a",), {"b": 1}), (("c",), {"b": 2})],
        "history": [(("a", 1), {"x": 1})],
        "bets": [(("edge", "b1"), {"s": 1})],
    }
    await store.commit(journal, rows, Head(3, "bb" * 32, 1))  # each pool has one connection so far: that one
    await store.head()  # a checkout and release in between: no reset query
    await store.commit(
        [JournalRow(4, "tx4", '{"sequence":4}')], {"players": [(("p1",), {"n": 2})]}, Head(4, "cc" * 32, 1)
    )
    sent = [(name, q.split()[0].rstrip(";")) for name, q in queries]
    # the commit statement alone: no BEGIN, no COMMIT (its own SERIALIZABLE transaction)
    assert sent == [("commit", "WITH"), ("read", "SELECT"), ("commit", "WITH")], queries
    assert await store.dump("accounts") == {("a",): {"b": 1}, ("c",): {"b": 2}}
    assert await store.dump("history") == {("a", 1): {"x": 1}}
    assert await store.dump("bets") == {("edge", "b1"): {"s": 1}}
    assert await store.dump("players") == {("p1",): {"n": 2}}
    assert (await store.head()).sequence == 4 and len(await store.journal(0, 10)) == 4


async def test_the_commit_connection_runs_serializable_and_a_commit_is_all_or_nothing(store: PostgresStore) -> None:
    assert store._commit_pool is not None
    async with store._commit_pool.acquire() as conn:
        assert await conn.fetchval("SHOW transaction_isolation") == "serializable"  # outside any BEGIN
        # durability is the server's: the store sets neither fsync nor synchronous_commit
        durability = "SELECT source FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit')"
        assert {r[0] for r in await conn.fetch(durability)} <= {"default", "configuration file", "command line"}
    async with store._p.acquire() as conn:
        # a journal row 1 already there (the journal takes inserts only): the commit's head move
        # succeeds, its journal insert then fails, and the whole statement must be undone
        await conn.execute("INSERT INTO journal (sequence, tx_id, entry) VALUES (1, 'x', '{}')")
    with pytest.raises(StorageError, match="UniqueViolation"):
        await store.commit(
            [JournalRow(1, "tx1", '{"sequence":1}')], {"players": [(("p1",), {"n": 1})]}, Head(1, "aa" * 32, 1)
        )
    assert (await store.head()).sequence == 0
    assert await store.dump("players") == {}
    with pytest.raises(StorageError, match="not the one this commit extends"):  # fenced: nothing written
        await store.commit([JournalRow(5, "tx5", "{}")], {"players": [(("p2",), {"n": 1})]}, Head(5, "bb" * 32, 1))
    assert await store.dump("players") == {} and (await store.head()).sequence == 0


async def test_a_load_of_several_tables_is_one_statement_and_keeps_key_types(store: PostgresStore) -> None:
    players = [(f"p{i}",) for i in range(KEYS_PER_QUERY_MAX + 5)]  # more keys than one statement takes
    rows: Any = {
        "players": [(key, {"n": i}) for i, key in enumerate(players)],
        "history": [(("a", 1), {"x": 1}), (("a", 2), {"x": 2})],
        "client_rounds": [(("p1", "r1", "edge"), {"c": 1})],
    }
    await store.commit([JournalRow(1, "tx1", '{"sequence":1}')], rows, Head(1, "aa" * 32, 1))
    queries: list[str] = []
    async with store._p.acquire() as conn:
        conn.add_query_logger(lambda record: queries.append(record.query))
    wanted: Any = {
        "history": [("a", 2), ("a", 3), ("a", 2)],  # a key twice, one absent
        "client_rounds": [("p1", "r1", "edge"), ("p1", "r1", "other")],
        ENTRIES: [(1,), (2,)],
        "bets": [("edge", "nope")],
        "idem": [],
    }
    await store.load(wanted)  # asyncpg's first use of these array types asks for them: once
    queries.clear()
    found = await store.load(wanted)
    assert len(queries) == 1, queries  # every table of the pass in one round trip
    assert found == {
        "history": {("a", 2): {"x": 2}},
        "client_rounds": {("p1", "r1", "edge"): {"c": 1}},
        ENTRIES: {(1,): {"sequence": 1}},
        "bets": {},
        "idem": {},
    }
    queries.clear()
    many = await store.load({"players": players, "accounts": [("a",)]})
    assert len(queries) == 2  # KEYS_PER_QUERY_MAX keys per statement at most
    assert many == {"players": {key: {"n": i} for i, key in enumerate(players)}, "accounts": {}}


async def test_a_connection_the_driver_lost_track_of_fails_the_commit_retryably_and_is_never_reused(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg raises InternalClientError ("cannot switch to state 12; another operation (2) is in
    progress") when the server ended the session mid-statement, as a dying leader does. That is an
    outage of one connection, not a ledger bug: the commit fails as a StorageError (503, retried by
    the client, never a halt), the connection is closed rather than given to the next commit, and
    the next commit goes through on a fresh one."""
    import asyncpg

    assert store._commit_pool is not None
    async with store._commit_pool.acquire() as conn:
        broken = conn._con  # the pool's one commit connection (the pool hands out a proxy of it)
    real_fetchval = asyncpg.Connection.fetchval

    async def lost_track(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        if self is broken:
            raise asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress")
        return await real_fetchval(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "fetchval", lost_track)
    with pytest.raises(StorageError, match="InternalClientError"):
        await store.commit([JournalRow(1, "tx1", '{"sequence":1}')], {}, Head(1, "aa" * 32, 1))
    assert broken.is_closed()  # terminated, not back in the pool
    await store.commit([JournalRow(1, "tx1", '{"sequence":1}')], {}, Head(1, "aa" * 32, 1))  # the retry
    assert (await store.head()).sequence == 1
