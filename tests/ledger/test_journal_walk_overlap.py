"""Whole-journal walks overlap their I/O with their CPU (core_ledger/journal_checks.py): a replay
folds the next pages while its last commit runs, and reads a page ahead; a verification reads the
next page while it checks this one. Neither leaves a read or a commit running when it stops."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from core_ledger import journal_checks
from core_ledger.domain import Command
from core_ledger.domain.state import TABLES
from core_ledger.journal_checks import replay_journal, verify_store
from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.store import MemoryStore, SqliteStore, StorageError
from core_ledger.store.base import Head, JournalRow, Rows
from core_ledger.writer import WriterLimits
from tests.support.clock import FakeClock
from tests.support.journal_commands import traffic

WAIT_S = 5.0


async def journaled(db: Path, commands: list[Command]) -> SqliteStore:
    """A SQLite ledger holding what the writer journaled for `commands`, open."""
    store = SqliteStore(db)
    service = LedgerService(store, WriterLimits(), clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry()))
    await service.start()
    try:
        for command in commands:
            await service.submit([command])
    finally:
        await service.stop()
    await store.open()
    return store


class CountingReads(SqliteStore):
    """Counts the journal pages read and wakes whoever waits for one more."""

    reads = 0
    read: asyncio.Event

    async def journal(self, after_sequence: int, limit: int) -> list[tuple[int, str]]:
        rows = await super().journal(after_sequence, limit)
        self.reads += 1
        self.read.set()
        return rows


class GatedCommits(MemoryStore):
    """Each commit waits until the source has read two more pages than when it began (a replay
    that waits for its commit before reading on never gets there)."""

    source: CountingReads
    commits_started = 0
    overlapped = 0

    async def commit(self, journal: Sequence[JournalRow], rows: Rows, head: Head) -> None:
        self.commits_started += 1
        wanted = self.source.reads + 2
        async with asyncio.timeout(WAIT_S):
            while self.source.reads < wanted and not self._last_page_read():
                self.source.read.clear()
                await self.source.read.wait()
        self.overlapped += self.source.reads >= wanted
        await super().commit(journal, rows, head)

    def _last_page_read(self) -> bool:
        return self.source.reads * journal_checks.JOURNAL_PAGE > self.source_entries

    source_entries = 0


async def test_a_replay_folds_the_next_pages_while_its_commit_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "ledger.db"
    await (await journaled(db, traffic())).close()
    monkeypatch.setattr(journal_checks, "JOURNAL_PAGE", 2)
    source, target = CountingReads(db), GatedCommits()
    source.read = asyncio.Event()
    target.source = source
    await source.open()
    await target.open()
    try:
        target.source_entries = (await source.head()).sequence
        head = await replay_journal(source, target, commit_entries=4)
        assert head == await source.head() == await target.head()
        assert target.overlapped >= 2  # commits that ran while later pages were read and folded
        for table in TABLES:
            assert await target.dump(table) == await source.dump(table), table
    finally:
        await source.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}


class FailingSecondCommit(MemoryStore):
    commits = 0

    async def commit(self, journal: Sequence[JournalRow], rows: Rows, head: Head) -> None:
        self.commits += 1
        if self.commits == 2:
            raise StorageError("disk full (test)")
        await super().commit(journal, rows, head)


async def test_a_failed_commit_stops_the_replay_with_its_error_and_leaves_nothing_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = await journaled(tmp_path / "ledger.db", traffic())
    monkeypatch.setattr(journal_checks, "JOURNAL_PAGE", 2)
    target = FailingSecondCommit()
    await target.open()
    try:
        with pytest.raises(StorageError, match="disk full"):
            await replay_journal(source, target, commit_entries=3)
        assert (await target.head()).sequence <= 4  # the first commit only (two pages of 2)
    finally:
        await source.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}


class TamperedRead(SqliteStore):
    """Serves the stored journal with one entry's amount changed (as a flipped byte on disk would)."""

    bad = 5

    async def journal(self, after_sequence: int, limit: int) -> list[tuple[int, str]]:
        rows = await super().journal(after_sequence, limit)
        return [
            (seq, text.replace('"amount_minor":', '"amount_minor":9', 1) if seq == self.bad else text)
            for seq, text in rows
        ]


async def test_a_verification_stopped_by_a_bad_entry_leaves_no_read_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "ledger.db"
    await (await journaled(db, traffic())).close()
    monkeypatch.setattr(journal_checks, "JOURNAL_PAGE", 2)
    store = TamperedRead(db)
    await store.open()
    try:
        report = await verify_store(store)
        assert not report["ok"] and report["first_bad_sequence"] == store.bad
        assert report["entries_checked"] == store.bad - 1
        store.bad = 0  # nothing tampered: the whole journal, page after page
        report = await verify_store(store)
        assert report["ok"] and report["entries_checked"] == (await store.head()).sequence
    finally:
        await store.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}
