"""bench/ledger_scale.py's seeding: on SQLite it replaces the empty database the ledger made with a
bulk-loaded file (core_ledger/store/sqlite_bulk.py) that the ledger's own store then opens, with
the whole plan journaled, the chain verified, and CPU per entry reported."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from core_ledger.journal_checks import rebuild_differences, verify_store
from core_ledger.store import SqliteStore
from core_ledger.store.sqlite_bulk import SqliteBulkStore
from ledger_scale import parse_args, seed, seeding_store


async def test_seeding_replaces_the_empty_database_with_a_durable_bulk_loaded_one(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    made = SqliteStore(db)  # what the ledger's first start leaves: the schema, no entries
    await made.open()
    await made.close()
    opts = parse_args(["--sizes", "0,400", "--players", "20", "--dir", str(tmp_path / "run")])
    store = seeding_store(opts, db, "unused")
    assert isinstance(store, SqliteBulkStore)
    seeded = await seed(store, db, 400, 20, 100)
    assert seeded["seeded_entries"] == 400 and seeded["seed_cpu_us_per_entry"] > 0
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    live = SqliteStore(db)
    await live.open()
    try:
        report = await verify_store(live)
        assert report["ok"] and report["entries_checked"] == 400
        assert await rebuild_differences(live) == []
    finally:
        await live.close()
