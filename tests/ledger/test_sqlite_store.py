"""The SQLite ledger store on its connection threads: each operation is one hop, and every
connection runs with the durability pragmas (WAL, synchronous=FULL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from shared.sqlite_thread import SqliteThread

from core_ledger.domain.commands import InvariantBroken
from core_ledger.domain.journal import GENESIS_HASH
from core_ledger.domain.state import TABLES
from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.store import Head, JournalRow, MemoryStore, SqliteStore, StorageError
from core_ledger.store.held_rows import HeldRows
from core_ledger.store.sqlite import (
    BUSY_TIMEOUT_MS,
    COLUMNAR,
    MIGRATIONS,
    PAGE_SIZE_NEW,
    ROWS_PER_STATEMENT,
    WAL_AUTOCHECKPOINT_BYTES,
    _commit_sync,
    _connect,
)
from core_ledger.writer import WriterLimits
from tests.support.clock import FakeClock
from tests.support.journal_commands import traffic

SYNCHRONOUS_FULL = 2


def connections(store: SqliteStore) -> dict[str, SqliteThread]:
    return {"writer": store._w, "loader": store._l, "reader": store._r}


async def test_every_connection_runs_with_the_durability_pragmas(sqlite_store: SqliteStore) -> None:
    def pragmas(db: sqlite3.Connection) -> tuple[Any, ...]:
        return tuple(
            db.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "synchronous", "busy_timeout", "wal_autocheckpoint", "page_size")
        )

    for name, conn in connections(sqlite_store).items():
        assert await conn.run(pragmas) == (
            "wal",
            SYNCHRONOUS_FULL,
            BUSY_TIMEOUT_MS,
            WAL_AUTOCHECKPOINT_BYTES // PAGE_SIZE_NEW,
            PAGE_SIZE_NEW,
        ), name


async def test_a_database_made_with_4_kib_pages_keeps_them_and_checkpoints_by_bytes(tmp_path: Path) -> None:
    """A database created before pages were 1 KiB opens as it is (SQLite cannot change the page
    size of a WAL database in place), and its autocheckpoint is the same bytes in its own pages."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.execute("PRAGMA page_size=4096")
        old.execute("PRAGMA journal_mode=WAL")
        old.execute("CREATE TABLE t (x)")
    old.close()
    s = SqliteStore(path)
    await s.open()
    try:

        def sizes(db: sqlite3.Connection) -> tuple[int, int]:
            return db.execute("PRAGMA page_size").fetchone()[0], db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]

        assert await s._w.run(sizes) == (4096, WAL_AUTOCHECKPOINT_BYTES // 4096)
    finally:
        await s.close()


async def test_a_group_commit_and_a_batch_of_loads_are_one_hop_each(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops: list[str] = []
    for name, conn in connections(sqlite_store).items():
        original = conn.run

        async def counted(fn: Any, *args: Any, _name: str = name, _run: Any = original, **kw: Any) -> Any:
            hops.append(_name)
            return await _run(fn, *args, **kw)

        monkeypatch.setattr(conn, "run", counted)
        original_here = conn.run_here

        async def counted_here(fn: Any, *args: Any, _name: str = name, _run: Any = original_here, **kw: Any) -> Any:
            hops.append(f"{_name} here")
            return await _run(fn, *args, **kw)

        monkeypatch.setattr(conn, "run_here", counted_here)
    journal = [JournalRow(i, f"tx{i}", f'{{"sequence":{i}}}') for i in (1, 2, 3)]
    await sqlite_store.commit(
        journal,
        {"players": [(("p1",), {"a": 1}), (("p2",), {"a": 2})], "idem": [(("c", "k"), {"x": 1})]},
        Head(3, GENESIS_HASH, 1),
    )
    # On the event loop's own thread (its derived rows held): see test_held_rows.py.
    assert hops == ["writer here"], "journal, derived rows and head: one unit of work"
    hops.clear()
    found = await sqlite_store.load({"players": [("p1",), ("p2",)], "idem": [("c", "k")], "entries": [(2,)]})
    assert found["players"] == {("p1",): {"a": 1}, ("p2",): {"a": 2}} and found["entries"] == {(2,): {"sequence": 2}}
    assert hops == ["loader"], "every table of a batch's loads: one unit of work"
    hops.clear()
    assert (await sqlite_store.get("idem", ("c", "k"))) == ({"x": 1}, 3)
    assert hops == ["writer", "reader"], "the derived rows held behind the journal are written first"
    hops.clear()
    assert (await sqlite_store.get("idem", ("c", "k"))) == ({"x": 1}, 3)
    assert hops == ["reader"]


async def test_a_closed_store_refuses_work_with_a_storage_error(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "ledger.db")
    await s.open()
    await s.close()
    with pytest.raises(StorageError, match="not open"):
        await s.head()


def test_a_row_written_again_unchanged_is_left_alone(tmp_path: Path) -> None:
    """A commit that hands the store a row equal to the stored one (a round's opening, rewritten by
    each of its bets) changes nothing of it: no page dirtied, no index entry rewritten. A changed
    row is still written."""
    db = _connect(tmp_path / "ledger.db")
    try:
        for statement in (s for migration in MIGRATIONS for s in migration.statements):
            db.execute(statement)
        opening = {
            "player_id": "p1",
            "round_id": "r1",
            "client_id": "gs",
            "game_id": "g",
            "currency": "EUR",
            "opened_at": None,
            "status": "open",
        }
        player = {"currencies": ["EUR"], "frozen": False, "bonus_ids": []}
        rows = {"round_openings": [((1,), opening)], "players": [(("p1",), player)]}
        _commit_sync(db, [], rows, Head(), HeldRows(groups_max=1))
        before = db.total_changes
        _commit_sync(db, [], rows, Head(), HeldRows(groups_max=1))
        # The three head rows of `meta` and the watermark (every commit writes its rows here), nothing else.
        assert db.total_changes - before == 4
        before = db.total_changes
        _commit_sync(
            db, [], {"round_openings": [((1,), {**opening, "status": "closed"})]}, Head(), HeldRows(groups_max=1)
        )
        assert db.total_changes - before == 5
        [(status,)] = db.execute("SELECT status FROM round_openings WHERE sequence = 1").fetchall()
        assert status == "closed"
    finally:
        db.close()


def test_a_commit_writes_its_rows_in_a_few_multi_row_statements_each_row_as_an_upsert(tmp_path: Path) -> None:
    """Rows go in statements of ROWS_PER_STATEMENT rows (the sqlite3 module lets go of the GIL at
    every step): 149 rows in 5 statements, not 149. Each row still lands as its own upsert would:
    stored, replaced, or (a table of sums) added to the stored row."""
    assert ROWS_PER_STATEMENT == (64, 16, 4, 1)
    db = _connect(tmp_path / "ledger.db")
    try:
        for statement in (s for migration in MIGRATIONS for s in migration.statements):
            db.execute(statement)
        accounts = [((f"player:p{i}:EUR",), {"balance_minor": i, "version": 1}) for i in range(149)]
        days = [
            ((f"2026-11-{1 + i % 30:02d}", f"C{i // 30}"), {"deposits_minor": i, "deposit_count": 1}) for i in range(85)
        ]
        inserts: list[str] = []
        db.set_trace_callback(lambda sql: inserts.append(sql) if sql.startswith("INSERT INTO") else None)
        _commit_sync(db, [], {"accounts": accounts, "report_cash_days": days}, Head(), HeldRows(groups_max=1))
        by_table = {
            t: sum(sql.startswith(f"INSERT INTO {t} ") for sql in inserts) for t in ("accounts", "report_cash_days")
        }
        assert by_table == {"accounts": 5, "report_cash_days": 4}  # 64+64+16+4+1 and 64+16+4+1
        changed = [(key, {"balance_minor": 1000 + i, "version": 2}) for i, (key, _) in enumerate(accounts[::2])]
        _commit_sync(db, [], {"accounts": changed, "report_cash_days": days}, Head(), HeldRows(groups_max=1))
        stored = dict(db.execute("SELECT account, balance_minor FROM accounts").fetchall())
        assert len(stored) == 149
        assert all(stored[f"player:p{i}:EUR"] == (1000 + i // 2 if i % 2 == 0 else i) for i in range(149))
        sums = {
            (d, c): (m, n)
            for d, c, m, n in db.execute("SELECT day, currency, deposits_minor, deposit_count FROM report_cash_days")
        }
        assert sums == {key: (2 * doc["deposits_minor"], 2) for key, doc in days}  # the deltas added twice
    finally:
        db.close()


async def test_a_round_row_keeps_an_absent_member_absent_and_its_list_a_list(sqlite_store: SqliteStore) -> None:
    """Rounds are stored as columns (schema migration 7): a row folded before `opened_at` was kept
    comes back without it (not with null), one with it comes back with it, notes as a list."""
    note = {"id": "b1", "type": "bet", "sequence": 1, "amount_minor": 100}
    old = {
        "game_id": "g",
        "currency": "EUR",
        "status": "open",
        "bets_minor": 100,
        "wins_minor": 0,
        "win_count": 0,
        "opened_sequence": 1,
        "transactions": [note],
    }
    new = {**old, "transactions": [note, {**note, "id": "b2", "sequence": 2}], "opened_at": "2026-01-01T00:00:00Z"}
    await sqlite_store.commit(
        [], {"rounds": [(("p1", "r0"), old)], "client_rounds": [(("p1", "r1", "gs"), new)]}, Head()
    )
    assert await sqlite_store.dump("rounds") == {("p1", "r0"): old}
    assert await sqlite_store.dump("client_rounds") == {("p1", "r1", "gs"): new}
    assert await sqlite_store.load({"rounds": [("p1", "r0")], "client_rounds": [("p1", "r1", "gs")]}) == {
        "rounds": {("p1", "r0"): old},
        "client_rounds": {("p1", "r1", "gs"): new},
    }
    rows, _ = await sqlite_store.select("client_rounds", {"round_id": "r1"}, limit=5, doc_equals={"status": "open"})
    assert rows == [(("p1", "r1", "gs"), new)]


async def test_the_columns_keep_every_member_the_domain_writes(tmp_path: Path) -> None:
    """Every kind of command (accepted and refused) on SQLite and on the memory store (which keeps
    documents as they are): every table holds the same rows on both. A member the domain writes
    that a columnar table lacks (`COLUMNAR`, from the row types) would be lost here, not elsewhere."""
    dumps = []
    for store in (SqliteStore(tmp_path / "ledger.db"), MemoryStore()):
        service = LedgerService(store, WriterLimits(), clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry()))
        await service.start()
        try:
            for command in traffic():
                await service.submit([command])
            dumps.append({table: await store.dump(table) for table in TABLES})
        finally:
            await service.stop()
    sqlite_rows, memory_rows = dumps
    assert all(memory_rows[table] for table in COLUMNAR if table != "rounds")  # rows to compare (no pre-scoping rounds)
    for table in TABLES:
        assert sqlite_rows[table] == memory_rows[table], table


async def test_a_member_a_columnar_table_has_no_column_for_is_refused_not_lost(sqlite_store: SqliteStore) -> None:
    head = await sqlite_store.head()
    with pytest.raises(InvariantBroken, match=r"history has no column for the members \['via'\]"):
        await sqlite_store.commit(
            [],
            {
                "history": [
                    (("player:p1:EUR", 1), {"amount_minor": 1, "balance_minor": 1, "type": "x", "id": None, "via": "e"})
                ]
            },
            head,
        )
    assert await sqlite_store.dump("history") == {}
