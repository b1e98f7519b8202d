"""SQLite keeps journal entries deflated at rest (core_ledger/store/sqlite_entries.py); every reader
gets the canonical text back byte for byte, and plain-text rows (written before) read as they are."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from core_ledger.journal_checks import rebuild_differences, verify_store
from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.store import MemoryStore, SqliteStore
from core_ledger.store.sqlite_entries import DEFLATED_V1, DICTIONARY_V1, UNDECODABLE, entry_text, stored_entry
from core_ledger.writer import WriterLimits
from tests.support.clock import FakeClock
from tests.support.journal_commands import traffic

# The dictionary is part of what is stored: changing it would make every stored entry unreadable.
DICTIONARY_V1_SHA256 = "53007b775227cdcb86f6f260c254a35cb5c3b297880f1f90c5dc1d61d89129d2"


def test_the_dictionary_of_format_1_never_changes() -> None:
    assert hashlib.sha256(DICTIONARY_V1).hexdigest() == DICTIONARY_V1_SHA256


def test_an_entry_deflates_and_inflates_to_the_same_bytes() -> None:
    for text in ('{"a":1}', "", '{"name":"Zoë ☃ \\u0000"}', '{"x":"' + "y" * 70_000 + '"}', DICTIONARY_V1.decode()):
        stored = stored_entry(text)
        assert stored[:1] == DEFLATED_V1 and entry_text(stored) == text
    bet = DICTIONARY_V1.decode().split('closed",', 1)[1]
    assert len(stored_entry(bet)) < len(bet) // 4


def test_plain_text_reads_as_it_is_and_a_damaged_value_reads_as_undecodable() -> None:
    assert entry_text('{"sequence":1}') == '{"sequence":1}'
    good = stored_entry('{"sequence":1,"postings":[]}')
    for damaged in (b"", b"\x02" + good[1:], good[:-2], good + b"x", b"\x01\xff\xff\xff"):
        assert entry_text(damaged) == UNDECODABLE
    assert not UNDECODABLE.startswith(("{", "[", '"'))  # never parses as an entry


async def _journal_of_a_run(store) -> None:
    service = LedgerService(store, WriterLimits(), clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry()))
    await service.start()
    try:
        commands = traffic()
        for i in range(0, len(commands), 4):
            await service.submit(commands[i : i + 4])
    finally:
        await service.stop()


async def test_sqlite_stores_blobs_and_every_reader_sees_the_memory_stores_text(tmp_path: Path) -> None:
    memory, db = MemoryStore(), tmp_path / "ledger.db"
    await _journal_of_a_run(memory)
    await _journal_of_a_run(SqliteStore(db))
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT sequence, tx_id, entry FROM journal ORDER BY sequence").fetchall()
    assert stored and all(isinstance(entry, bytes) and entry[:1] == DEFLATED_V1 for _, _, entry in stored)
    expected = await memory.journal(0, 10_000)
    store = SqliteStore(db)
    await store.open()
    try:
        assert await store.journal(0, 10_000) == expected
        sequence, tx_id, _ = stored[-1]
        assert await store.journal_of(tx_id, 10) == [t for s, t in expected if s == sequence]
        loaded = await store.load({"entries": [(s,) for s, _ in expected]})
        assert loaded["entries"] == {(s,): orjson.loads(t) for s, t in expected}
        assert (await verify_store(store))["ok"]
    finally:
        await store.close()


async def test_a_journal_of_plain_text_rows_then_deflated_ones_reads_and_verifies(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    await _journal_of_a_run(SqliteStore(db))
    with sqlite3.connect(db) as conn:  # the first half as a store before this format wrote them
        conn.execute("DROP TRIGGER journal_no_update")
        rows = conn.execute("SELECT sequence, entry FROM journal").fetchall()
        half = rows[: len(rows) // 2]
        conn.executemany("UPDATE journal SET entry = ? WHERE sequence = ?", [(entry_text(e), s) for s, e in half])
        kinds = [k for (k,) in conn.execute("SELECT typeof(entry) FROM journal ORDER BY sequence")]
    assert kinds[: len(half)] == ["text"] * len(half) and set(kinds[len(half) :]) == {"blob"}
    store = SqliteStore(db)
    await store.open()
    try:
        assert [t for _, t in await store.journal(0, 10_000)] == [entry_text(e) for _, e in rows]
        assert (await verify_store(store))["ok"] and not await rebuild_differences(store)
    finally:
        await store.close()
