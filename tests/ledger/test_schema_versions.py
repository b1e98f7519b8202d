"""Schema versions of the ledger stores (SQLite, PostgreSQL): recorded, adopted, migrated, refused.

The version-1 fixture is built here from migration 1's own statements, without a version recorded:
exactly what a ledger written before versions existed holds.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from prometheus_client import CollectorRegistry

from shared.auth import Principal
from shared.migrations import Migration, SchemaBehind, SchemaTooNew, plan

from core_ledger.domain import ADMIN_SCOPE, Command
from core_ledger.domain.accounts import player_account
from core_ledger.domain.state import TABLES
from core_ledger.http import money_command
from core_ledger.journal_checks import rebuild_differences
from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.store import Head, JournalRow, SqliteStore, StorageError, Store
from core_ledger.store import postgres as pg_module
from core_ledger.store import sqlite as sqlite_module
from core_ledger.store.memory import MemoryStore
from core_ledger.store.postgres import PostgresStore
from core_ledger.writer import WriterLimits
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
        set_user_version(path, 99)
        with pytest.raises(StorageError, match=f"schema version 99, newer than this code's {LATEST}"):
            await SqliteStore(path).open()
        assert user_version(path) == 99

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
        set_user_version(tmp_path / "data" / "ledger.db", 99)
        done = croupier("ledger", "serve", "--config", str(config), "--port", "1", cwd=tmp_path)
        assert done.returncode == 1
        assert f"schema version 99, newer than this code's {LATEST}" in done.stderr and "Traceback" not in done.stderr
        assert user_version(tmp_path / "data" / "ledger.db") == 99

    def test_verify_never_migrates_an_older_backup_and_refuses_a_newer_one(self, tmp_path: Path) -> None:
        path = tmp_path / "backup.db"
        sqlite_v1_fixture(path)  # written before versions (and before migration 2): left as it is
        done = croupier("ledger", "verify", str(path), cwd=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert f"behind this code's {LATEST}" in done.stderr and "croupier ledger migrate" in done.stderr
        assert user_version(path) == 0
        set_user_version(path, 99)
        refused = croupier("ledger", "verify", str(path), cwd=tmp_path)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert f"schema version 99, newer than this code's {LATEST}" in refused.stderr and user_version(path) == 99


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
            assert store.schema_plan is not None and (store.schema_plan.stored, store.schema_plan.target) == (2, LATEST)
            assert await store.summaries({"player_id": "p1"}, after_sequence=0, limit=5) == ([], 2)
        finally:
            await store.close()
        db = sqlite3.connect(path)
        try:
            seek = db.execute(
                "EXPLAIN QUERY PLAN SELECT sequence, balance_minor FROM history WHERE account = 'a' "
                "AND sequence <= 5 ORDER BY sequence DESC LIMIT 1"
            ).fetchall()
        finally:
            db.close()
        assert any("PRIMARY KEY" in str(r[-1]) or "INDEX" in str(r[-1]) for r in seek), seek


# The tables migration 7 made columnar, with the statements that created them as documents.
V7_COLUMNAR = (
    "accounts",
    "history",
    "round_openings",
    "rounds",
    "client_rounds",
    "report_play_days",
    "report_cash_days",
)


def back_to_version_8(db: sqlite3.Connection) -> None:
    """Turn a ledger file of the latest layout back into version 8's: the transaction index's own
    indexes by player and by round instead of migration 9's partial ones."""
    db.executescript(
        "BEGIN;"
        "DROP INDEX tx_summaries_unposted_by_player_id;"
        "DROP INDEX tx_summaries_unnoted_by_round_id;"
        "CREATE INDEX tx_summaries_by_player_id ON tx_summaries (player_id);"
        "CREATE INDEX tx_summaries_by_round_id ON tx_summaries (round_id);"
        "PRAGMA user_version = 8;"
        "COMMIT;"
    )


def back_to_version_7(db: sqlite3.Connection) -> None:
    """Turn a ledger file of the latest layout back into version 7's: `bets` as (client_id, bet_id,
    doc) with its rows as documents (what migration 8 made columns)."""
    back_to_version_8(db)
    db.executescript(
        "BEGIN;"
        f"CREATE TABLE bets_v7 AS SELECT client_id, bet_id, {sqlite_module.doc_sql('bets')} AS doc FROM bets;"
        "DROP TABLE bets;"
        "CREATE TABLE bets (client_id, bet_id, doc TEXT NOT NULL, PRIMARY KEY (client_id, bet_id));"
        "INSERT INTO bets (client_id, bet_id, doc) SELECT client_id, bet_id, doc FROM bets_v7;"
        "DROP TABLE bets_v7;"
        "PRAGMA user_version = 7;"
        "COMMIT;"
    )


def back_to_version_6(db: sqlite3.Connection) -> None:
    """Turn a ledger file of the latest layout back into version 6's: the tables of migration 7 as
    (key columns, doc) with their rows as documents, the round openings' expression index."""
    back_to_version_7(db)
    creates = {
        statement.split()[5]: statement
        for migration in sqlite_module.MIGRATIONS[:6]
        for statement in migration.statements
        if statement.startswith("CREATE TABLE IF NOT EXISTS")
    }
    script = ["BEGIN"]
    for table in V7_COLUMNAR:
        keys = ", ".join(TABLES[table])
        script += [
            f"CREATE TABLE {table}_v6 AS SELECT {keys}, {sqlite_module.doc_sql(table)} AS doc FROM {table}",
            f"DROP TABLE {table}",
            creates[table],
            f"INSERT INTO {table} ({keys}, doc) SELECT {keys}, doc FROM {table}_v6",
            f"DROP TABLE {table}_v6",
        ]
    script += [
        "CREATE INDEX round_openings_open ON round_openings (json_extract(doc, '$.status'), sequence)",
        "CREATE INDEX rounds_by_round ON rounds (round_id)",
        "CREATE INDEX client_rounds_by_round ON client_rounds (round_id)",
        "PRAGMA user_version = 6",
        "COMMIT",
    ]
    db.executescript(";".join(script) + ";")


def summary_doc(n: int) -> dict[str, Any]:
    """A transaction index row as `summarize` writes it (members of every shape: text and null)."""
    return {
        "id": f"b{n}" if n % 5 else None,
        "type": ("bet", "win", "player_create")[n % 3],
        "outcome": "rejected" if n % 7 == 0 else "committed",
        "client_id": f"gs{n % 2}",
        "via": "edge-1" if n % 2 else None,
        "committed_at": f"2026-01-01T00:00:{n // 2:02d}.000000Z",
        "player_id": f"p{n % 4}",
        "game_id": None if n % 3 == 2 else f"g{n % 2}",
        "round_id": None if n % 3 == 2 else f"r{n // 6}",
        "currency": "EUR" if n % 3 != 2 else None,
    }


def folded_beside(docs: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> dict[str, list[tuple[Any, ...]]]:
    """The rows the folds write beside these transaction index rows, as far as a page by player or
    by round reads them (schema migration 9): a committed bet's history row on its player's
    account, and a committed bet's or win's note in its round."""
    history, accounts, rounds = [], {}, {}
    for (sequence,), doc in docs:
        if doc["outcome"] != "committed" or doc["type"] not in ("bet", "win"):
            continue
        if doc["type"] == "bet":
            account = player_account(doc["player_id"], doc["currency"])
            history.append(
                ((account, sequence), {"amount_minor": -1, "balance_minor": 0, "type": "bet", "id": doc["id"]})
            )
            accounts[(account,)] = {"balance_minor": 0, "version": sequence}
        key = (doc["player_id"], doc["round_id"], doc["client_id"])
        round_ = rounds.setdefault(
            key,
            {
                "game_id": doc["game_id"],
                "currency": doc["currency"],
                "status": "open",
                "bets_minor": 0,
                "wins_minor": 0,
                "win_count": 0,
                "opened_sequence": sequence,
                "transactions": [],
            },
        )
        round_["transactions"].append(
            {"id": doc["id"] or "x", "type": doc["type"], "sequence": sequence, "amount_minor": 1}
        )
    return {"history": history, "accounts": list(accounts.items()), "client_rounds": list(rounds.items())}


SUMMARY_QUERIES: list[tuple[dict[str, str], dict[str, Any]]] = [
    ({}, {}),
    ({"player_id": "p1"}, {}),
    ({"round_id": "r2"}, {}),
    ({"type": "player_create", "outcome": "committed"}, {"time_from": "2026-01-01T00:00:05.000000Z"}),
    ({"game_id": "g1", "via": "edge-1"}, {}),
    ({"client_id": "gs0", "currency": "EUR"}, {"time_until": "2026-01-01T00:00:09.000000Z"}),
    ({"player_id": "p2", "type": "bet"}, {"time_from": "2026-01-01T00:00:03.000000Z"}),
]


async def summary_answers(store: Store) -> list[Any]:
    """Every page of every query in SUMMARY_QUERIES (pages of 3), and `sequence_at` at a few times."""
    out: list[Any] = []
    for equals, times in SUMMARY_QUERIES:
        after, pages = 0, []
        while True:
            rows, _ = await store.summaries(equals, after_sequence=after, limit=3, **times)
            pages.append(rows)
            if len(rows) < 3:
                break
            after = rows[-1][0]
        out.append(pages)
    out.append([await store.sequence_at(f"2026-01-01T00:00:{s:02d}.500000Z") for s in (0, 4, 9, 30)])
    return out


class TestTransactionIndexColumns:
    """Migration 6: the transaction index as columns with four indexes instead of a JSON document
    with nine json_extract expression indexes; old stores are rebuilt from their rows."""

    async def test_a_version_4_store_migrates_and_answers_every_query_the_same(self, tmp_path: Path) -> None:
        path = tmp_path / "ledger.db"
        journal = [JournalRow(n, f"t{n}", f'{{"sequence":{n}}}') for n in range(1, 41)]
        docs = [((n,), summary_doc(n)) for n in range(1, 41)]
        beside = folded_beside(docs)
        reference = MemoryStore()  # the contract's reference answers
        await reference.commit(journal, {"tx_summaries": docs}, Head(40, "ab" * 32, 1))
        expected = await summary_answers(reference)
        assert all(pages[0] for pages in expected[:-1]) and expected[-1] != [0, 0, 0, 0]  # each query finds rows
        old = SqliteStore(path, migrations=sqlite_module.MIGRATIONS[:4])
        await old.open()
        await old.close()
        db = sqlite3.connect(path)  # rows as version 4 stored them: one JSON document each
        try:
            db.executemany(
                "INSERT INTO tx_summaries (sequence, doc) VALUES (?, ?)",
                [(key[0], orjson.dumps(doc).decode()) for key, doc in docs],
            )
            for table, rows in beside.items():
                marks = ", ".join("?" * (len(TABLES[table]) + 1))
                db.executemany(
                    f"INSERT INTO {table} VALUES ({marks})", [(*key, orjson.dumps(doc).decode()) for key, doc in rows]
                )
            db.commit()
        finally:
            db.close()
        store = SqliteStore(path)
        await store.open()
        try:
            assert store.schema_plan is not None and (store.schema_plan.stored, store.schema_plan.target) == (4, LATEST)
            assert await summary_answers(store) == expected
            assert await store.dump("tx_summaries") == dict(docs)
            more = [((n,), summary_doc(n)) for n in range(41, 45)]  # written into the columns from now on
            await store.commit(
                journal[:4],  # the fixture stored summaries only: this store's journal is empty
                {"tx_summaries": more},
                Head(4, "cd" * 32, 1),
            )
            assert await store.dump("tx_summaries") == dict(docs + more)
        finally:
            await store.close()

    async def test_the_index_is_columns_with_four_indexes_that_filtered_pages_use(self, tmp_path: Path) -> None:
        path = tmp_path / "ledger.db"
        store = SqliteStore(path)
        await store.open()
        await store.close()
        db = sqlite3.connect(path)
        try:
            columns = [row[1] for row in db.execute("PRAGMA table_info(tx_summaries)")]
            indexes = sorted(row[1] for row in db.execute("PRAGMA index_list(tx_summaries)"))
            plans = {
                name: db.execute(
                    f"EXPLAIN QUERY PLAN SELECT sequence FROM tx_summaries WHERE {name} = 'x' AND sequence > 5 "
                    "ORDER BY sequence LIMIT 10"
                ).fetchall()
                for name in ("type",)
            }
            at = db.execute(
                "EXPLAIN QUERY PLAN SELECT sequence FROM tx_summaries WHERE committed_at <= 'x' "
                "ORDER BY committed_at DESC, sequence DESC LIMIT 1"
            ).fetchall()
        finally:
            db.close()
        assert columns == ["sequence", *sqlite_module.SUMMARY_MEMBERS] and "doc" not in columns
        # by player and by round since migration 9: history, the rounds and two partial indexes
        # (tests/ledger/test_summary_sources.py)
        assert indexes == [
            "tx_summaries_by_committed_at",
            "tx_summaries_by_type",
            "tx_summaries_unnoted_by_round_id",
            "tx_summaries_unposted_by_player_id",
        ]
        for name, plan_rows in (*plans.items(), ("committed_at", at)):
            assert any(f"tx_summaries_by_{name}" in str(r[-1]) for r in plan_rows), plan_rows
            assert not any("TEMP B-TREE" in str(r[-1]) for r in plan_rows), plan_rows  # no sort: index order

    async def test_postgres_migrates_a_version_4_schema_to_the_four_indexes(self, pg_server: PgServer) -> None:
        schema = fresh_schema()
        old = PostgresStore(pg_server.dsn, TEST_LIMITS, schema=schema, migrations=pg_module.MIGRATIONS[:4])
        await old.open()
        await old.close()

        async def indexes() -> list[str]:
            conn = await asyncpg.connect(pg_server.dsn)
            try:
                rows = await conn.fetch(
                    "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'tx_summaries'", schema
                )
            finally:
                await conn.close()
            return sorted(
                str(r[0]) for r in rows if str(r[0]).startswith("tx_summaries_") and r[0] != "tx_summaries_pkey"
            )

        assert len(await indexes()) == 9
        store = PostgresStore(pg_server.dsn, TEST_LIMITS, schema=schema)
        await store.open()
        try:
            journal = [JournalRow(n, f"t{n}", f'{{"sequence":{n}}}') for n in range(1, 41)]
            docs = [((n,), summary_doc(n)) for n in range(1, 41)]
            await store.commit(journal, {"tx_summaries": docs, **folded_beside(docs)}, Head(40, "ab" * 32, 1))
            reference = MemoryStore()
            await reference.commit(journal, {"tx_summaries": docs}, Head(40, "ab" * 32, 1))
            assert await summary_answers(store) == await summary_answers(reference)
        finally:
            await store.close()
        assert await pg_version(pg_server, schema) == LATEST
        assert await indexes() == [  # by player and by round: partial indexes since migration 9
            "tx_summaries_by_committed_at",
            "tx_summaries_by_type",
            "tx_summaries_unnoted_by_round_id",
            "tx_summaries_unposted_by_player_id",
        ]

    async def test_a_ledger_moved_back_to_version_4_migrates_to_rows_equal_to_a_rebuild(self, tmp_path: Path) -> None:
        """Real entries (bets, a win, refusals, null members): after the version-4 layout is migrated,
        the transaction index equals what folding the journal gives."""
        path = tmp_path / "ledger.db"
        service = LedgerService(
            SqliteStore(path),
            WriterLimits(),
            clock=lambda: datetime.now(UTC),
            metrics=LedgerMetrics(CollectorRegistry()),
        )
        await service.start()
        edge, cashier = Principal("edge-1", "edge"), Principal("cashier", "cashier")
        try:
            await service.submit(
                [Command("player_create", {"player_id": "p1", "currencies": ["EUR"]}, "admin", (ADMIN_SCOPE, "p1"))]
            )
            deposit = {"id": "d1", "player_id": "p1", "currency": "EUR", "amount_minor": 500}
            bets = [
                {
                    "id": f"b{n}",
                    "player_id": "p1",
                    "currency": "EUR",
                    "amount_minor": 200,
                    "round_id": "r1",
                    "game_id": "g",
                }
                for n in range(4)  # the third is refused for funds (journaled), the fourth too
            ]
            win = {"id": "w1", "player_id": "p1", "currency": "EUR", "amount_minor": 50, "round_id": "r1"}
            await service.submit([money_command("deposit", deposit, cashier)])
            await service.submit([money_command("bet", b, edge) for b in bets] + [money_command("win", win, edge)])
            expected = await service.store.dump("tx_summaries")
        finally:
            await service.stop()
        assert {d["outcome"] for d in expected.values()} == {"committed", "rejected"}
        assert any(d["via"] is None for d in expected.values()) and any(d["game_id"] is None for d in expected.values())
        db = sqlite3.connect(path)  # the table as version 4 held it: documents and nine expression indexes
        try:
            back_to_version_6(db)
            members = ", ".join(f"'{m}', {m}" for m in sqlite_module.SUMMARY_MEMBERS)
            db.executescript(
                "BEGIN;"
                f"CREATE TABLE v4 AS SELECT sequence, json_object({members}) AS doc FROM tx_summaries;"
                "DROP TABLE tx_summaries;"
                + ";".join(s for s in sqlite_module.MIGRATIONS[3].statements)
                + "; INSERT INTO tx_summaries (sequence, doc) SELECT sequence, doc FROM v4; DROP TABLE v4;"
                "PRAGMA user_version = 4; COMMIT;"
            )
        finally:
            db.close()
        store = SqliteStore(path)
        await store.open()
        try:
            assert store.schema_plan is not None and store.schema_plan.stored == 4
            assert await store.dump("tx_summaries") == expected
            assert await rebuild_differences(store) == []
        finally:
            await store.close()


async def columnar_answers(store: Store) -> list[Any]:
    """What the tables of migration 7 answer: their rows, report sums (per row and grouped), balances
    by prefix, a balance at a sequence, open rounds."""
    play = await store.report_sums(
        "report_play_days",
        day_from="2000-01-01",
        day_to="2999-12-31",
        equals={},
        group_by=("day", "currency", "game_id", "client_id"),
        members=("bets_minor", "bet_count", "wins_minor", "not_a_sum"),
        limit=10,
    )
    cash = await store.report_sums(
        "report_cash_days",
        day_from="2000-01-01",
        day_to="2999-12-31",
        equals={"currency": "EUR"},
        group_by=("currency",),
        members=("deposits_minor", "deposit_count"),
        limit=10,
    )
    open_rounds = await store.select("round_openings", {}, limit=10, doc_equals={"status": "open"})
    by_round = await store.select("client_rounds", {"round_id": "r1"}, limit=10)
    players_open = await store.select("client_rounds", {"player_id": "p1"}, limit=10, doc_equals={"status": "open"})
    return [
        *[await store.dump(table) for table in V7_COLUMNAR],
        play,
        cash,
        await store.accounts_by_prefix(["player:"], 10),
        [await store.history_at("player:p1:EUR", s) for s in (1, 3, 5, 99)],
        open_rounds,
        by_round,
        players_open,
    ]


class TestColumnarRowsMigration:
    """Migration 7: balances, balance history, round openings and report sums as one column per
    member (report sums integers, added column by column) instead of one JSON document."""

    async def test_a_version_6_ledger_migrates_answers_the_same_and_keeps_adding(self, tmp_path: Path) -> None:
        path = tmp_path / "ledger.db"
        edge, cashier = Principal("edge-1", "edge"), Principal("cashier", "cashier")

        def bet(n: int, round_id: str) -> Command:
            fields = {"id": f"b{n}", "player_id": "p1", "currency": "EUR", "amount_minor": 100, "round_id": round_id}
            return money_command("bet", {**fields, "game_id": "g"}, edge)

        def service_on(store: SqliteStore) -> LedgerService:
            return LedgerService(
                store, WriterLimits(), clock=lambda: datetime.now(UTC), metrics=LedgerMetrics(CollectorRegistry())
            )

        service = service_on(SqliteStore(path))
        await service.start()
        try:
            await service.submit(
                [Command("player_create", {"player_id": "p1", "currencies": ["EUR"]}, "admin", (ADMIN_SCOPE, "p1"))]
            )
            deposit = {"id": "d1", "player_id": "p1", "currency": "EUR", "amount_minor": 500}
            await service.submit([money_command("deposit", deposit, cashier)])
            win = {"id": "w1", "player_id": "p1", "currency": "EUR", "amount_minor": 50, "round_id": "r1"}
            await service.submit([bet(1, "r1"), bet(2, "r2"), money_command("win", win, edge), bet(3, "r3")])
            expected = await columnar_answers(service.store)
        finally:
            await service.stop()
        play, cash, _, _, open_rounds, by_round, players_open = expected[len(V7_COLUMNAR) :]
        assert play[0] and cash[0] and open_rounds[0]  # report rows and open rounds to compare
        assert by_round[0] and len(players_open[0]) == 3  # round r1 (a win does not close it), r2, r3
        db = sqlite3.connect(path)
        try:
            back_to_version_6(db)
            assert "doc" in [row[1] for row in db.execute("PRAGMA table_info(report_play_days)")]
        finally:
            db.close()
        service = service_on(SqliteStore(path))
        await service.start()
        try:
            store = service.store
            assert isinstance(store, SqliteStore) and store.schema_plan is not None
            assert (store.schema_plan.stored, store.schema_plan.target) == (6, LATEST)
            assert await columnar_answers(store) == expected
            assert await rebuild_differences(store) == []
            await service.submit([bet(4, "r3"), money_command("deposit", {**deposit, "id": "d2"}, cashier)])
            [((_, sums),), _] = await store.report_sums(
                "report_play_days",
                day_from="2000-01-01",
                day_to="2999-12-31",
                equals={},
                group_by=("currency",),
                members=("bets_minor", "bet_count", "wins_minor"),
                limit=10,
            )
            assert sums == {"bets_minor": 400, "bet_count": 4, "wins_minor": 50}
            assert await rebuild_differences(store) == []
        finally:
            await service.stop()
        db = sqlite3.connect(path)
        try:
            columns = {t: [row[1] for row in db.execute(f"PRAGMA table_info({t})")] for t in V7_COLUMNAR}
            plan_ = db.execute(
                "EXPLAIN QUERY PLAN SELECT sequence FROM round_openings WHERE status = 'open' AND sequence > 1 "
                "ORDER BY sequence"
            ).fetchall()
        finally:
            db.close()
        assert all("doc" not in names for names in columns.values()), columns
        assert columns["history"] == ["account", "sequence", "amount_minor", "balance_minor", "type", "id"]
        assert "round_openings_open" in str(plan_) and "TEMP B-TREE" not in str(plan_), plan_


class TestBetsAsColumns:
    """Migration 8: bets as one column per member; a member that may be absent or null (`via`,
    `round_client_id`) keeps the difference (JSON text 'null' against SQL NULL)."""

    async def test_a_version_7_ledger_migrates_to_rows_equal_to_a_rebuild_and_keeps_writing(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "ledger.db"
        edge, cashier = Principal("edge-1", "edge"), Principal("cashier", "cashier")

        def service_on(store: SqliteStore) -> LedgerService:
            return LedgerService(
                store, WriterLimits(), clock=lambda: datetime.now(UTC), metrics=LedgerMetrics(CollectorRegistry())
            )

        def bet(n: int, *, by: Principal = edge, **more: Any) -> Command:
            fields = {"id": f"b{n}", "player_id": "p1", "currency": "EUR", "amount_minor": 100, "round_id": "r1"}
            return money_command("bet", {**fields, "game_id": "g", **more}, by)

        rollback_first = {"id": "rb1", "player_id": "p1", "bet_id": "b9", "round_id": "r9"}  # a marker row
        service = service_on(SqliteStore(path))
        await service.start()
        try:
            await service.submit(
                [Command("player_create", {"player_id": "p1", "currencies": ["EUR"]}, "admin", (ADMIN_SCOPE, "p1"))]
            )
            await service.submit(
                [
                    money_command(
                        "deposit", {"id": "d1", "player_id": "p1", "currency": "EUR", "amount_minor": 500}, cashier
                    )
                ]
            )
            await service.submit(
                [
                    bet(1),
                    bet(2, via="edge-eu"),
                    money_command("rollback", rollback_first, edge),
                    bet(3, by=Principal("gs-1", "game_server")),  # no edge: `via` null
                ]
            )
            expected = await service.store.dump("bets")
        finally:
            await service.stop()
        kinds = {member for doc in expected.values() for member in doc}
        assert {"via", "round_client_id", "jackpot_contributions"} <= kinds
        assert any(doc.get("via", "") is None for doc in expected.values()), expected  # null, not absent
        assert any(doc["state"] == "marker" and "currency" not in doc for doc in expected.values()), expected
        db = sqlite3.connect(path)
        try:
            back_to_version_7(db)
            # rows as version 7 held them, among them members absent and members null
            docs = [orjson.loads(doc) for (doc,) in db.execute("SELECT doc FROM bets")]
        finally:
            db.close()
        assert any("via" not in d for d in docs) and any(d.get("via") == "edge-eu" for d in docs)
        service = service_on(SqliteStore(path))
        await service.start()
        try:
            store = service.store
            assert isinstance(store, SqliteStore) and store.schema_plan is not None
            assert (store.schema_plan.stored, store.schema_plan.target) == (7, LATEST)
            assert await store.dump("bets") == expected
            assert await rebuild_differences(store) == []
            [replayed] = await service.submit([bet(2, via="edge-eu")])  # read back from the columns
            assert isinstance(replayed, tuple) and replayed[0] == 200  # a replay of the stored bet
            await service.submit(
                [bet(4), money_command("rollback", {**rollback_first, "id": "rb2", "bet_id": "b1"}, edge)]
            )
            assert await rebuild_differences(store) == []
        finally:
            await service.stop()
        db = sqlite3.connect(path)
        try:
            columns = [row[1] for row in db.execute("PRAGMA table_info(bets)")]
            via = dict(db.execute("SELECT bet_id, via FROM bets").fetchall())
            plan_ = db.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM bets WHERE client_id = 'x' AND bet_id = 'y'"
            ).fetchall()
        finally:
            db.close()
        assert "doc" not in columns and columns[:2] == ["client_id", "bet_id"]
        assert via["b2"] == '"edge-eu"' and "sqlite_autoindex_bets_1" in str(plan_), (via, plan_)
