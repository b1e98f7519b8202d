"""Bulk loading (core_ledger/store/sqlite_bulk.py) for the seeder and `croupier ledger rebuild`: the
file it makes equals one written by the live store, with the same indexes and WAL; it never opens an
existing file; and a rebuild that dies while loading its scratch file leaves the live database as
it was (the next rebuild clears the leftover and succeeds)."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from core_ledger.domain import TABLES
from core_ledger.journal_checks import rebuild_differences, replay_journal
from core_ledger.store import SqliteStore, StorageError
from core_ledger.store.sqlite_bulk import SqliteBulkStore
from harness.journal_seed import seed_commands, seed_store
from tests.support.ledger_cli import CLI_TIMEOUT_S
from tests.support.seeding import assert_rebuilt_cleanly, small_plan

MOMENT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PLAN = small_plan(301, 13)


def schema_of(db: Path) -> dict[str, object]:
    with closing(sqlite3.connect(db)) as conn:
        return {
            "objects": sorted(conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall()),
            "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
            "user_version": conn.execute("PRAGMA user_version").fetchone()[0],
            "page_size": conn.execute("PRAGMA page_size").fetchone()[0],
        }


def contents_of(db: Path) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        return sorted(conn.iterdump())  # rows and schema; objects in any order (checked by `schema_of`)


async def seeded(store: SqliteStore) -> None:
    await store.open()
    try:
        await seed_store(store, seed_commands(PLAN), group_entries=50, clock=lambda: MOMENT)
        if isinstance(store, SqliteBulkStore):
            await store.finish()
    finally:
        await store.close()


async def test_a_bulk_loaded_file_equals_one_the_live_store_wrote_with_its_indexes_and_wal(tmp_path: Path) -> None:
    live, bulk = SqliteStore(tmp_path / "live.db"), SqliteBulkStore(tmp_path / "bulk.db")
    await seeded(live)
    await seeded(bulk)
    assert schema_of(bulk.path) == schema_of(live.path)
    assert schema_of(bulk.path)["journal_mode"] == "wal"
    assert any(kind == "index" and sql for kind, _, sql in schema_of(bulk.path)["objects"])  # type: ignore[attr-defined]  # a list of sqlite_master rows
    assert contents_of(bulk.path) == contents_of(live.path)
    reopened = SqliteStore(bulk.path)
    await reopened.open()
    try:
        assert (await reopened.head()).sequence == PLAN.size
        assert await rebuild_differences(reopened) == []
    finally:
        await reopened.close()
    assert not (tmp_path / "bulk.db-wal").exists() or (tmp_path / "bulk.db-wal").stat().st_size == 0


async def test_a_bulk_load_never_opens_a_file_that_exists(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    await seeded(SqliteStore(db))
    before = contents_of(db)
    with pytest.raises(StorageError, match="exists"):
        await SqliteBulkStore(db).open()
    assert contents_of(db) == before
    with pytest.raises(StorageError, match="not being bulk-loaded"):
        await SqliteBulkStore(tmp_path / "other.db").finish()


async def test_a_replay_pauses_the_collector_and_gives_it_back(tmp_path: Path) -> None:
    source, target = SqliteStore(tmp_path / "live.db"), SqliteBulkStore(tmp_path / "scratch.db")
    await seeded(source)
    await source.open()
    await target.open()
    try:
        assert gc.isenabled()
        head = await replay_journal(source, target, commit_entries=40)
        assert gc.isenabled()  # back on after the fold
        await target.finish()
        assert head == await source.head()
    finally:
        await target.close()
        await source.close()
    rebuilt = SqliteStore(target.path)
    await source.open()
    await rebuilt.open()
    try:
        for table in TABLES:
            assert await rebuilt.dump(table) == await source.dump(table), table
    finally:
        await rebuilt.close()
        await source.close()


def rebuild_dying_after_first_scratch_commit(db: Path) -> subprocess.CompletedProcess[str]:
    dying = (
        "import os\n"
        "from core_ledger.store.sqlite_bulk import SqliteBulkStore\n"
        "async def commit(self, *args):\n"
        "    await super(SqliteBulkStore, self).commit(*args)\n"
        "    os._exit(9)\n"  # a crash: no cleanup, no finally
        "SqliteBulkStore.commit = commit\n"
        "from croupier.cli import main\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", dying, "ledger", "rebuild", str(db)],
        capture_output=True,
        check=False,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


async def test_a_rebuild_that_dies_while_loading_leaves_the_live_database_untouched(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    await seeded(SqliteStore(db))
    with closing(sqlite3.connect(db)) as conn:  # damage a derived table: what a rebuild would repair
        conn.execute("DELETE FROM history")
        conn.commit()
    before = contents_of(db)
    died = await asyncio.to_thread(rebuild_dying_after_first_scratch_commit, db)
    assert died.returncode == 9, died.stderr
    assert (tmp_path / "ledger.db.rebuild").exists()  # the crash left its scratch file
    assert contents_of(db) == before  # and nothing of it reached the live database
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", "from croupier.cli import main; main()", "ledger", "rebuild", str(db)],
        capture_output=True,
        check=False,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["rows"]["history"] > 0
    await assert_rebuilt_cleanly(tmp_path, db)
