"""The ledger on PostgreSQL beyond the shared store contract: config wiring with the DSN read from a
file, an end-to-end HTTP run, fencing of a stale writer, bounded retry of serialization failures,
driver errors surfacing as StorageError without the password, and a commit of unknown outcome
(connection lost during COMMIT) settled from what PostgreSQL holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from shared.config import ConfigError

from core_ledger import config as ledger_config_module
from core_ledger.app import create_app
from core_ledger.backup_format import restore_into_sqlite
from core_ledger.journal_checks import verify_store
from core_ledger.store import Head, JournalRow, SqliteStore, StorageError
from core_ledger.store.postgres import PostgresLimits, PostgresStore
from tests.support.clock import FakeClock
from tests.support.ledger import TOKENS, Api, bet, ledger_config
from tests.support.local_postgres import TEST_LIMITS, PgServer, fresh_schema

LOCK_WAIT_POLLS_MAX = 200
LOCK_WAIT_POLL_S = 0.05


def _config_file(tmp_path: Path, dsn: str, schema: str) -> Path:
    (tmp_path / "pg.dsn").write_text(dsn + "\n")
    path = tmp_path / "ledger.toml"
    path.write_text(
        f'[ledger]\ndata_dir = "data"\nbackend = "postgres"\npostgres_dsn_file = "pg.dsn"\n'
        f'postgres_schema = "{schema}"\npostgres_pool_size_max = 4\n'
    )
    return path


def test_config_reads_the_dsn_from_its_file_and_never_shows_it(tmp_path: Path) -> None:
    dsn = "postgresql://u:s3cret-pw@127.0.0.1:1/db"
    cfg = ledger_config_module.load(_config_file(tmp_path, dsn, "ledger_a"))
    assert (cfg.backend, cfg.postgres_dsn, cfg.postgres_schema, cfg.postgres_pool_size_max) == (
        "postgres",
        dsn,
        "ledger_a",
        4,
    )
    assert "s3cret-pw" not in repr(cfg)
    (tmp_path / "ledger.toml").write_text('[ledger]\nbackend = "postgres"\n')
    with pytest.raises(ConfigError, match="postgres_dsn_file is required"):
        ledger_config_module.load(tmp_path / "ledger.toml")
    (tmp_path / "ledger.toml").write_text('[ledger]\npostgres_dsn = "postgresql://inline"\n')
    with pytest.raises(ConfigError, match="unknown"):
        ledger_config_module.load(tmp_path / "ledger.toml")


async def test_ledger_over_http_on_postgres_replays_verifies_and_backs_up(
    aiohttp_client: Any, pg_server: PgServer, tmp_path: Path
) -> None:
    """Config file -> PostgreSQL store -> HTTP: money moves, replays (from the journal), chain, backup."""
    cfg = ledger_config_module.load(_config_file(tmp_path, pg_server.dsn, fresh_schema()))
    cfg = replace(cfg, tokens=ledger_config(tmp_path).tokens, backup_dir=tmp_path / "backups")
    api = Api(await aiohttp_client(create_app(cfg, clock=FakeClock())))
    await api.player(deposit=1000)
    status, first = await api.post("edge", "/v1/bets", bet("b1", 300))
    assert status == 201 and first["balance"]["balance_minor"] == 700
    for i in range(2, 6):
        assert (await api.post("edge", "/v1/bets", bet(f"b{i}", 50)))[0] == 201
    status, again = await api.post("edge", "/v1/bets", bet("b1", 300))
    assert status == 200 and again == {**first, "replayed": True}
    status, body = await api.post(
        "edge",
        "/v1/wins",
        {"id": "w1", "player_id": "p1", "currency": "EUR", "amount_minor": 120, "round_id": "r1", "close_round": True},
    )
    assert status == 201 and body["balance"]["balance_minor"] == 620
    assert (await api.post("edge", "/v1/bets", bet("b1", 301)))[1]["code"] == "idempotency_key_reused"
    status, body = await api.get("edge", "/v1/players/p1/rounds", params={"status": "closed"})
    assert status == 200 and [r["round_id"] for r in body["rounds"]] == ["r1"]
    status, report = await api.post("admin_read", "/admin/v1/audit/verify")
    assert status == 200 and report["ok"] is True and report["entries_checked"] == 8
    status, backup = await api.post("admin_write", "/admin/v1/backups")
    assert status == 201 and backup["head_sequence"] == 8 and backup["source_backend"] == "postgres"
    restored = await restore_into_sqlite(Path(backup["path"]), tmp_path / "restored")
    assert restored["head_sequence"] == 8 and restored["derived_tables_differ"] == []
    copy = SqliteStore(Path(restored["path"]))
    await copy.open()
    try:
        assert (await verify_store(copy))["ok"] and (await copy.head()).hash == report["head_hash"]
        assert (await copy.get("accounts", ("player:p1:EUR",)))[0]["balance_minor"] == 620
    finally:
        await copy.close()


@pytest.fixture
async def pg_pair(pg_server: PgServer) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on the same schema: two writers that each believe they own it."""
    schema = fresh_schema()
    a, b = (PostgresStore(pg_server.dsn, TEST_LIMITS, schema=schema) for _ in range(2))
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


def _rows(*sequences: int) -> list[JournalRow]:
    return [JournalRow(s, f"tx{s}", f'{{"sequence":{s}}}') for s in sequences]


async def test_a_writer_extending_a_stale_head_is_refused_and_leaves_nothing(pg_pair: Any) -> None:
    a, b = pg_pair
    await a.commit(_rows(1), {"players": [(("p1",), {"n": 1})]}, Head(1, "aa" * 32, 1))
    await a.commit(_rows(2), {"players": [(("p1",), {"n": 2})]}, Head(2, "bb" * 32, 1))
    with pytest.raises(StorageError, match="head"):
        await b.commit(_rows(2), {"players": [(("p1",), {"n": 99})], "games": [(("g",), {})]}, Head(2, "cc" * 32, 1))
    assert await b.head() == Head(2, "bb" * 32, 1)
    assert await b.dump("players") == {("p1",): {"n": 2}} and await b.dump("games") == {}
    assert await b.journal_of("tx2", 5) == ['{"sequence":2}']


async def _commit_behind_a_concurrent_update(pg_server: PgServer, store: PostgresStore) -> None:
    """Commit while another SERIALIZABLE transaction holds the head row, then let that one commit:
    the store's transaction (snapshot taken before) cannot be serialized."""
    other = await asyncpg.connect(pg_server.dsn, server_settings={"search_path": store.schema})
    try:
        tx = other.transaction(isolation="serializable")
        await tx.start()
        await other.execute("UPDATE head SET epoch = epoch")
        commit = asyncio.create_task(store.commit(_rows(2), {"games": [(("g",), {})]}, Head(2, "bb" * 32, 1)))
        for _ in range(LOCK_WAIT_POLLS_MAX):
            if await other.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"):
                break
            await asyncio.sleep(LOCK_WAIT_POLL_S)
        else:
            raise AssertionError("the store's commit never waited for the row lock")
        await tx.commit()
        await asyncio.wait_for(commit, 30)
    finally:
        await other.close()


@pytest.fixture
async def one_commit_store(pg_server: PgServer, request: pytest.FixtureRequest) -> AsyncIterator[PostgresStore]:
    """A store holding journal entry 1, allowing `request.param` attempts per write transaction."""
    limits = replace(TEST_LIMITS, serialization_attempts_max=request.param)
    store = PostgresStore(pg_server.dsn, limits, schema=fresh_schema())
    await store.open()
    try:
        await store.commit(_rows(1), {}, Head(1, "aa" * 32, 1))
        yield store
    finally:
        await store.close()


@pytest.mark.parametrize("one_commit_store", [3], indirect=True)
async def test_a_serialization_failure_is_retried_and_commits_once(
    pg_server: PgServer, one_commit_store: PostgresStore
) -> None:
    await _commit_behind_a_concurrent_update(pg_server, one_commit_store)
    assert (await one_commit_store.head()).sequence == 2
    assert await one_commit_store.dump("games") == {("g",): {}}
    assert [s for s, _ in await one_commit_store.journal(0, 10)] == [1, 2]


@pytest.mark.parametrize("one_commit_store", [1], indirect=True)
async def test_serialization_retries_are_bounded_then_a_storage_error_writes_nothing(
    pg_server: PgServer, one_commit_store: PostgresStore
) -> None:
    with pytest.raises(StorageError) as failure:
        await _commit_behind_a_concurrent_update(pg_server, one_commit_store)
    assert isinstance(failure.value.__cause__, asyncpg.SerializationError)
    assert (await one_commit_store.head()).sequence == 1 and await one_commit_store.dump("games") == {}


async def test_an_unreachable_server_is_a_storage_error_without_the_password(pg_server: PgServer) -> None:
    dsn = pg_server.dsn.replace(f":{pg_server.port}/", ":1/")
    store = PostgresStore(dsn, PostgresLimits(connect_timeout_s=5))
    with pytest.raises(StorageError) as failure:
        await store.open()
    assert pg_server.password not in str(failure.value) and pg_server.password not in repr(store)


class CutOffStore(PostgresStore):
    """A PostgreSQL store whose next commit loses its connection: after COMMIT reached the server
    (`landed`: the commit is stored, the ledger cannot know) or before it (nothing is stored)."""

    cut: str | None = None  # "landed" | "lost" | None

    async def commit(self, journal: Any, rows: Any, head: Head) -> None:
        cut, self.cut = self.cut, None
        if cut == "landed":
            await super().commit(journal, rows, head)
        if cut is not None:
            lost = asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
            raise StorageError(f"commit failed: {type(lost).__name__}: {lost}") from lost
        await super().commit(journal, rows, head)


@pytest.mark.parametrize("cut, retry_status", [("landed", 200), ("lost", 201)])
async def test_a_commit_of_unknown_outcome_is_settled_from_the_store_never_guessed(
    aiohttp_client: Any, pg_server: PgServer, tmp_path: Path, cut: str, retry_status: int
) -> None:
    """The bet's connection dies during its commit: 503 with Retry-After; the retry with the same id
    is judged against what PostgreSQL holds: replayed if the commit landed, committed if it did not;
    either way the bet is journaled once and the balance moved once."""
    store = CutOffStore(pg_server.dsn, TEST_LIMITS, schema=fresh_schema())
    cfg = replace(ledger_config(tmp_path), backend="postgres")
    client = await aiohttp_client(create_app(cfg, store=store, clock=FakeClock()))
    api = Api(client)
    await api.player(deposit=1000)
    store.cut = cut
    async with client.post("/v1/bets", json=bet("b1", 300), headers=api_headers("edge")) as r:
        body = await r.json()
        assert r.status == 503 and body["code"] == "storage_unavailable" and r.headers["Retry-After"] == "1"
    status, again = await api.post("edge", "/v1/bets", bet("b1", 300))
    assert status == retry_status and again["balance"]["balance_minor"] == 700, again
    assert again.get("replayed", False) is (cut == "landed")
    bets = await _bet_tx_ids(store)
    assert len(bets) == 1 and len(await store.journal_of(bets[0], 5)) == 1
    status, report = await api.post("admin_read", "/admin/v1/audit/verify")
    assert status == 200 and report["ok"] and report["entries_checked"] == 3


def api_headers(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


async def _bet_tx_ids(store: PostgresStore) -> list[str]:
    entries = [orjson.loads(text) for _, text in await store.journal(0, 100)]
    return [e["transaction"]["id"] for e in entries if e["transaction"]["type"] == "bet"]
