"""Schema versions of the ledger stores (SQLite, PostgreSQL): recorded, adopted, migrated, refused.

The version-1 fixture is built here from migration 1's own statements, without a version recorded:
exactly what a ledger written before versions existed holds.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from shared.migrations import Migration, SchemaBehind, SchemaTooNew, plan

from core_ledger.store import Head, JournalRow, SqliteStore, StorageError
from core_ledger.store import postgres as pg_module
from core_ledger.store import sqlite as sqlite_module
from core_ledger.store.postgres import PostgresStore
from tests.support.ledger import Api
from tests.support.local_postgres import TEST_LIMITS, PgServer, fresh_schema

HEAD = Head(2, "ab" * 32, 3)
ROWS = [JournalRow(1, "tx1", '{"sequence":1}'), JournalRow(2, "tx2", '{"sequence":2}')]
PLAYERS = {"players": [(("p1",), {"currencies": ["EUR"]})]}
# The runner is exercised with migration 1 as released plus a test-only second step (the code's
# own later migrations are checked by LATEST below and by the store tests).
SQLITE_V1 = sqlite_module.MIGRATIONS[:1]
PG_V1 = pg_module.MIGRATIONS[:1]
LATEST = len(sqlite_module.MIGRATIONS)
V2 = Migration(2, "test only: a table that version 1 lacks", ("CREATE TABLE added_in_v2 (x integer)",))
BROKEN_V2 = Migration(2, "test only: fails half-way", ("CREATE TABLE half_done (x integer)", "NOT SQL AT ALL"))


def sqlite_v1_fixture(path: Path) -> None:
    """A ledger database of version 1 as released: today's tables, no version recorded, one commit."""
    db = sqlite3.connect(path)
    try:
        db.executescript(";\n".join(sqlite_module.MIGRATIONS[0].statements) + ";")
        db.executemany(
            "INSERT INTO journal (sequence, tx_id, entry) VALUES (?, ?, ?)",
            [(r.sequence, r.tx_id, r.text) for r in ROWS],
        )
        db.execute("INSERT INTO players VALUES ('p1', '{\"currencies\":[\"EUR\"]}')")
        db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [("head_sequence", HEAD.sequence), ("head_hash", HEAD.hash), ("epoch", HEAD.epoch)],
        )
        db.commit()
    finally:
        db.close()


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def set_user_version(path: Path, version: int) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute(f"PRAGMA user_version = {version}")
        db.commit()
    finally:
        db.close()


async def assert_v1_data_intact(store: SqliteStore | PostgresStore) -> None:
    assert await store.head() == HEAD
    assert await store.journal(0, 10) == [(1, '{"sequence":1}'), (2, '{"sequence":2}')]
    assert await store.dump("players") == {("p1",): {"currencies": ["EUR"]}}


class TestPlan:
    def test_newer_is_refused_naming_both_versions(self) -> None:
        with pytest.raises(SchemaTooNew, match="version 5, newer than this code's 1"):
            plan([Migration(1, "one", ())], 5, empty=False, allowed=True, store="s", migrate_command="m")

    def test_behind_runs_the_missing_steps_or_names_the_command(self) -> None:
        migrations = [Migration(1, "one", ()), V2]
        assert plan(migrations, 1, empty=False, allowed=True, store="s", migrate_command="m").steps == (V2,)
        with pytest.raises(SchemaBehind, match=r"version 1, behind this code's 2.*run `m`"):
            plan(migrations, 1, empty=False, allowed=False, store="s", migrate_command="m")
        # a new (empty) store is created whatever migrate_on_start says
        assert len(plan(migrations, 0, empty=True, allowed=False, store="s", migrate_command="m").steps) == 2

    def test_an_unversioned_store_is_adopted_without_permission_but_not_migrated(self) -> None:
        one = [Migration(1, "one", ())]
        assert plan(one, 0, empty=False, allowed=False, store="s", migrate_command="m").steps == tuple(one)
        with pytest.raises(SchemaBehind, match="version 0, behind this code's 2"):
            plan([*one, V2], 0, empty=False, allowed=False, store="s", migrate_command="m")

    def test_migrations_must_be_numbered_without_gaps(self) -> None:
        with pytest.raises(ValueError, match="numbered"):
            plan([V2], 0, empty=True, allowed=True, store="s", migrate_command="m")


class TestSqlite:
    async def test_a_new_store_records_the_latest_version(self, tmp_path: Path) -> None:
        store = SqliteStore(tmp_path / "ledger.db", allow_migration=False)
        await store.open()
        await store.close()
        assert user_version(tmp_path / "ledger.db") == len(sqlite_module.MIGRATIONS) == LATEST
        assert store.schema_plan is not None and store.schema_plan.stored == 0

    async def test_an_unversioned_v1_store_is_adopted_in_place(self, tmp_path: Path) -> None:
        path = tmp_path / "ledger.db"
        sqlite_v1_fixture(path)
        store = SqliteStore(path, migrations=SQLITE_V1)
        await store.open()
        try:
            await assert_v1_data_intact(store)
            assert store.schema_plan is not None and (store.schema_plan.stored, store.schema_plan.target) == (0, 1)
        finally:
            await store.close()
        assert user_version(path) == 1

    async def test_behind_without_permission_is_refused_and_unchanged(self, tmp_path: Path) -> None:
        path = tmp_path / "ledger.db"
        sqlite_v1_fixture(path)
        migrations = (*SQLITE_V1, V2)
        with pytest.raises(StorageError, match=r"version 0, behind this code's 2.*croupier ledger migrate --config"):
            await SqliteStore(path, allow_migration=False, migrations=migrations).open()
        assert user_version(path) == 0
        store = SqliteStore(path, allow_migration=False, migrations=SQLITE_V1)  # adopting version 1 needs no permission
        await store.open()
        await store.close()
        assert user_version(path) == 1

    async def test_a_newer_store_is_refused_naming_both_versions(self, tmp_path: Path) -> None:
        path = tmp_path / "ledger.db"
        sqlite_v1_fixture(path)
        set_user_version(path, 9)
        with pytest.raises(StorageError, match=f"schema version 9, newer than this code's {LATEST}"):
            await SqliteStore(path).open()
        assert user_version(path) == 9

    async def test_a_v1_store_migrates_to_v2_keeping_its_data(self, tmp_path: Path) -> None:
        path = tmp_path / "ledger.db"
        sqlite_v1_fixture(path)
        set_user_version(path, 1)
        migrations = (*SQLITE_V1, V2)
        with pytest.raises(StorageError, match="version 1, behind this code's 2"):
            await SqliteStore(path, allow_migration=False, migrations=migrations).open()
        store = SqliteStore(path, migrations=migrations)
        await store.open()
        try:
            await assert_v1_data_intact(store)
            await store.commit([JournalRow(3, "tx3", '{"sequence":3}')], PLAYERS, Head(3, "cd" * 32, 3))
        finally:
            await store.close()
        assert user_version(path) == 2
        db = sqlite3.connect(path)
        try:
            assert db.execute("SELECT count(*) FROM added_in_v2").fetchone() == (0,)
        finally:
            db.close()

    async def test_a_backup_carries_the_schema_version(self, tmp_path: Path) -> None:
        store = SqliteStore(tmp_path / "ledger.db")
        await store.open()
        try:
            await store.commit(ROWS, PLAYERS, HEAD)
            await store.backup(tmp_path / "backups" / "copy.db")
        finally:
            await store.close()
        assert user_version(tmp_path / "backups" / "copy.db") == len(sqlite_module.MIGRATIONS)

    async def test_a_backup_manifest_names_the_source_stores_schema_version_and_entry_format(
        self, tmp_path: Path, aiohttp_client: Any
    ) -> None:
        from core_ledger.app import create_app
        from core_ledger.domain import ENTRY_FORMAT
        from tests.support.clock import FakeClock
        from tests.support.ledger import ledger_config

        store = SqliteStore(
            tmp_path / "data" / "ledger.db",
            migrations=(*sqlite_module.MIGRATIONS, Migration(LATEST + 1, V2.summary, V2.statements)),
        )
        config = ledger_config(tmp_path / "data", backup_dir=tmp_path / "backups")
        api = Api(await aiohttp_client(create_app(config, clock=FakeClock(), store=store)))
        await api.player()
        status, backup = await api.post("admin_write", "/admin/v1/backups", {})
        assert status == 201, backup
        manifest = orjson.loads((Path(backup["path"]) / "manifest.json").read_bytes())
        assert (manifest["schema_version"], manifest["journal_entry_format"]) == (LATEST + 1, ENTRY_FORMAT)

    async def test_a_failing_migration_changes_nothing(self, tmp_path: Path) -> None:
        path = tmp_path / "ledger.db"
        sqlite_v1_fixture(path)
        set_user_version(path, 1)
        with pytest.raises(StorageError, match="cannot open"):
            await SqliteStore(path, migrations=(*SQLITE_V1, BROKEN_V2)).open()
        assert user_version(path) == 1
        db = sqlite3.connect(path)
        try:
            assert db.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall() == []
        finally:
            db.close()


async def pg_v1_fixture(server: PgServer, schema: str) -> None:
    """A PostgreSQL ledger schema of version 1 as released: today's tables, no version table."""
    conn = await asyncpg.connect(server.dsn, server_settings={"search_path": schema})
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        for statement in pg_module.MIGRATIONS[0].statements:
            await conn.execute(statement)
        await conn.execute("INSERT INTO journal VALUES (1, 'tx1', '{\"sequence\":1}'), (2, 'tx2', '{\"sequence\":2}')")
        await conn.execute("INSERT INTO players VALUES ('p1', '{\"currencies\":[\"EUR\"]}')")
        await conn.execute("UPDATE head SET sequence = $1, hash = $2, epoch = $3", HEAD.sequence, HEAD.hash, HEAD.epoch)
    finally:
        await conn.close()


async def pg_version(server: PgServer, schema: str) -> int | None:
    conn = await asyncpg.connect(server.dsn, server_settings={"search_path": schema})
    try:
        if not await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL"):
            return None
        return int(await conn.fetchval("SELECT version FROM schema_version"))
    finally:
        await conn.close()


class TestPostgres:
    async def test_a_new_schema_records_the_latest_version(self, pg_server: PgServer) -> None:
        schema = fresh_schema()
        store = PostgresStore(pg_server.dsn, TEST_LIMITS, schema=schema, allow_migration=False)
        await store.open()
        try:
            assert await store.head() == Head()
        finally:
            await store.close()
        assert await pg_version(pg_server, schema) == len(pg_module.MIGRATIONS) == LATEST

    async def test_v1_is_adopted_then_migrates_to_v2_and_newer_is_refused(self, pg_server: PgServer) -> None:
        schema = fresh_schema()
        await pg_v1_fixture(pg_server, schema)
        with pytest.raises(StorageError, match="version 0, behind this code's 2"):
            await PostgresStore(
                pg_server.dsn, TEST_LIMITS, schema=schema, allow_migration=False, migrations=(*PG_V1, V2)
            ).open()
        assert await pg_version(pg_server, schema) is None
        store = PostgresStore(
            pg_server.dsn, TEST_LIMITS, schema=schema, allow_migration=False, migrations=PG_V1
        )  # adopted
        await store.open()
        try:
            await assert_v1_data_intact(store)
        finally:
            await store.close()
        assert await pg_version(pg_server, schema) == 1

        with pytest.raises(StorageError, match="cannot open"):
            await PostgresStore(pg_server.dsn, TEST_LIMITS, schema=schema, migrations=(*PG_V1, BROKEN_V2)).open()
        assert await pg_version(pg_server, schema) == 1
        store = PostgresStore(pg_server.dsn, TEST_LIMITS, schema=schema, migrations=(*PG_V1, V2))
        await store.open()
        try:
            await assert_v1_data_intact(store)
        finally:
            await store.close()
        assert await pg_version(pg_server, schema) == 2
        with pytest.raises(StorageError, match="schema version 2, newer than this code's 1"):
            await PostgresStore(pg_server.dsn, TEST_LIMITS, schema=schema, migrations=PG_V1).open()

    async def test_a_backup_to_sqlite_carries_the_sqlite_schema_version(
        self, pg_server: PgServer, tmp_path: Path
    ) -> None:
        store = PostgresStore(pg_server.dsn, TEST_LIMITS, schema=fresh_schema())
        await store.open()
        try:
            await store.backup(tmp_path / "copy.db")
        finally:
            await store.close()
        assert user_version(tmp_path / "copy.db") == len(sqlite_module.MIGRATIONS)


def croupier(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(
        [sys.executable, "-m", "croupier", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_config(tmp_path: Path, *, migrate_on_start: bool) -> Path:
    path = tmp_path / "ledger.toml"
    path.write_text(f'[ledger]\ndata_dir = "./data"\nport = 1\nmigrate_on_start = {str(migrate_on_start).lower()}\n')
    return path


class TestCommands:
    def test_migrate_adopts_a_v1_store_and_reports_it(self, tmp_path: Path) -> None:
        config = write_config(tmp_path, migrate_on_start=False)
        (tmp_path / "data").mkdir()
        sqlite_v1_fixture(tmp_path / "data" / "ledger.db")
        done = croupier("ledger", "migrate", "--config", str(config), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        report = orjson.loads(done.stdout)  # stdout is the report alone; the log line goes to the log
        assert (report["from_version"], report["to_version"], report["backend"]) == (0, LATEST, "sqlite")
        assert '"schema_migrated"' in done.stderr
        assert user_version(tmp_path / "data" / "ledger.db") == LATEST
        again = croupier("ledger", "migrate", "--config", str(config), cwd=tmp_path)
        assert again.returncode == 0
        assert orjson.loads(again.stdout) == {
            "backend": "sqlite",
            "from_version": LATEST,
            "to_version": LATEST,
            "migrations": [],
        }

    def test_serve_refuses_a_newer_store_with_a_message_not_a_traceback(self, tmp_path: Path) -> None:
        config = write_config(tmp_path, migrate_on_start=True)
        (tmp_path / "data").mkdir()
        sqlite_v1_fixture(tmp_path / "data" / "ledger.db")
        set_user_version(tmp_path / "data" / "ledger.db", 9)
        done = croupier("ledger", "serve", "--config", str(config), "--port", "1", cwd=tmp_path)
        assert done.returncode == 1
        assert f"schema version 9, newer than this code's {LATEST}" in done.stderr and "Traceback" not in done.stderr
        assert user_version(tmp_path / "data" / "ledger.db") == 9

    def test_verify_never_migrates_an_older_backup_and_refuses_a_newer_one(self, tmp_path: Path) -> None:
        path = tmp_path / "backup.db"
        sqlite_v1_fixture(path)  # written before versions (and before migration 2): left as it is
        done = croupier("ledger", "verify", str(path), cwd=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert f"behind this code's {LATEST}" in done.stderr and "croupier ledger migrate" in done.stderr
        assert user_version(path) == 0
        set_user_version(path, 9)
        refused = croupier("ledger", "verify", str(path), cwd=tmp_path)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert f"schema version 9, newer than this code's {LATEST}" in refused.stderr and user_version(path) == 9


async def test_the_running_ledger_exports_its_store_schema_version(api: Api) -> None:
    _, text = await api.get("admin_read", "/metrics")
    assert f"ledger_store_schema_version {float(len(sqlite_module.MIGRATIONS))}" in text


class TestConfig:
    def test_migrate_on_start_defaults_to_true_and_reaches_the_store(self, tmp_path: Path) -> None:
        from shared.config import ConfigError

        from core_ledger import config
        from core_ledger.app import store_for

        path = tmp_path / "ledger.toml"
        path.write_text('[ledger]\ndata_dir = "d"\n')
        cfg = config.load(path)
        assert cfg.migrate_on_start is True
        store = store_for(cfg)
        assert isinstance(store, SqliteStore) and store.allow_migration is True
        path.write_text('[ledger]\ndata_dir = "d"\nmigrate_on_start = false\n')
        store = store_for(config.load(path))
        assert isinstance(store, SqliteStore) and store.allow_migration is False
        path.write_text('[ledger]\ndata_dir = "d"\nmigrate_on_start = "yes"\n')
        with pytest.raises(ConfigError, match="migrate_on_start"):
            config.load(path)


class TestTransactionIndexMigration:
    """Migration 4 adds the transaction index of operator queries; migration 1 is left as released."""

    def test_migration_1_does_not_create_the_later_table(self) -> None:
        for migrations in (sqlite_module.MIGRATIONS, pg_module.MIGRATIONS):
            assert not any("tx_summaries" in s for s in migrations[0].statements)
            assert migrations[3].version == 4 and any("tx_summaries" in s for s in migrations[3].statements)

    async def test_a_version_2_store_migrates_and_filtered_pages_use_the_index(self, tmp_path: Path) -> None:
        path = tmp_path / "ledger.db"
        old = SqliteStore(path, migrations=sqlite_module.MIGRATIONS[:2])
        await old.open()
        await old.commit(ROWS, PLAYERS, HEAD)
        await old.close()
        assert user_version(path) == 2
        store = SqliteStore(path)
        await store.open()
        try:
            assert store.schema_plan is not None and (store.schema_plan.stored, store.schema_plan.target) == (
                2,
                sqlite_module.MIGRATIONS[-1].version,
            )
            assert await store.summaries({"player_id": "p1"}, after_sequence=0, limit=5) == ([], 2)
        finally:
            await store.close()
        db = sqlite3.connect(path)
        try:
            plan_rows = db.execute(
                "EXPLAIN QUERY PLAN SELECT sequence, doc FROM tx_summaries "
                "WHERE sequence > 0 AND json_extract(doc, '$.player_id') = 'p1' "
                "ORDER BY sequence LIMIT 10"
            ).fetchall()
            seek = db.execute(
                "EXPLAIN QUERY PLAN SELECT sequence, doc FROM history WHERE account = 'a' "
                "AND sequence <= 5 ORDER BY sequence DESC LIMIT 1"
            ).fetchall()
        finally:
            db.close()
        assert any("tx_summaries_by_player_id" in str(r[-1]) for r in plan_rows), plan_rows
        assert not any("TEMP B-TREE" in str(r[-1]) for r in plan_rows), plan_rows  # no sort: index order
        assert any("PRIMARY KEY" in str(r[-1]) or "INDEX" in str(r[-1]) for r in seek), seek
