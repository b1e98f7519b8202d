"""Derived rows held behind the journal (core_ledger/store/held_rows.py): a SQLite commit makes its
journal durable and keeps its derived rows in memory, written by every 32nd commit, an idle writer,
a read, a backup or a close. Nothing acknowledged may be lost or counted twice by that: a crash
image, a failed write and another copy's fold all end with derived tables equal to a rebuild from
the journal, and every read sees every commit answered before it."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from core_ledger.app import store_for
from core_ledger.journal_checks import rebuild_differences
from core_ledger.metrics import LedgerMetrics
from core_ledger.overlay import Overlay
from core_ledger.service import LedgerService
from core_ledger.store import Head, JournalRow, SqliteStore, StorageError
from core_ledger.store import sqlite as sqlite_module
from core_ledger.store.held_rows import FLUSH_SECONDS_TARGET, MEASURED_ROWS_MIN, ROWS_FLOOR, ROWS_MAX, HeldRows
from core_ledger.store.sqlite import HERE_JOURNAL_ROWS_MAX
from core_ledger.writer import WriterLimits
from tests.support.clock import FakeClock
from tests.support.journal_commands import traffic
from tests.support.ledger import ledger_config
from tests.support.polling import wait_for

NEVER_IDLE_S = 3600.0  # the writer's idle flush kept out of the way, so rows stay held


def service_on(store: SqliteStore, idle_flush_s: float = NEVER_IDLE_S) -> LedgerService:
    return LedgerService(
        store,
        WriterLimits(derived_idle_flush_s=idle_flush_s),
        clock=FakeClock(),
        metrics=LedgerMetrics(CollectorRegistry()),
    )


def stored_meta(path: Path) -> dict[str, int]:
    """What the file itself says, read past the store: its head and its derived rows' watermark."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT key, value FROM meta WHERE key IN ('head_sequence', 'derived_sequence')").fetchall()
    return {str(k): int(v) for k, v in rows}


def crash_image(source: Path, target: Path) -> None:
    """The files a power cut would leave: the database and its WAL as they are, nothing in memory."""
    target.mkdir(parents=True)
    for suffix in ("", "-wal"):
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{target / source.name}{suffix}")


async def test_a_crash_while_rows_are_held_is_folded_from_the_journal_when_the_ledger_starts(tmp_path: Path) -> None:
    path = tmp_path / "a" / "ledger.db"
    service = service_on(SqliteStore(path))
    await service.start()
    try:
        for command in traffic():
            await service.submit([command])
        assert service.store.holds_derived()
        meta = stored_meta(path)
        assert meta["derived_sequence"] < meta["head_sequence"] == service.head.sequence  # held, not written
        crash_image(path, tmp_path / "b")
    finally:
        await service.stop()

    copy = tmp_path / "b" / "ledger.db"
    stale = SqliteStore(copy)
    await stale.open()
    try:
        assert stale.stale
        with pytest.raises(StorageError, match="behind the journal"):  # never a read of rows behind the head
            await stale.get("accounts", ("player:p1:EUR",))
        with pytest.raises(StorageError, match="behind the journal"):  # nor a commit on top of them
            await stale.commit([], {}, await stale.head())
    finally:
        await stale.close()

    restarted = service_on(SqliteStore(copy))
    await restarted.start()  # folds the entries after the watermark into the derived tables
    try:
        assert stored_meta(copy)["derived_sequence"] == restarted.head.sequence == meta["head_sequence"]
        assert await rebuild_differences(restarted.store) == []
        [again] = await restarted.submit([traffic()[6]])  # a bet answered before the crash: replayed
        assert isinstance(again, tuple) and again[0] == 200, again
    finally:
        await restarted.stop()


async def test_every_read_sees_what_was_answered_before_it_and_names_the_watermark_as_its_head(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "ledger.db")
    service = service_on(store)
    await service.start()
    try:
        for command in traffic()[:6]:
            await service.submit([command])
        assert store.holds_derived()
        held = service.metrics.derived_rows_held.collect()[0].samples[0].value
        assert held == store.derived_rows_held() > 0
        bound = service.metrics.derived_rows_bound.collect()[0].samples[0].value
        assert bound == store.derived_rows_bound() == ROWS_MAX  # no flush timed yet: the configured bound
        balance, head = await store.get("accounts", ("player:p1:EUR",))
        assert balance is not None and balance["balance_minor"] == 5000 - 100 - 101
        assert head == service.head.sequence and not store.holds_derived()
        assert service.metrics.derived_rows_held.collect()[0].samples[0].value == 0
        await service.submit([traffic()[6]])  # held again: a page of history reads it too
        rows, head = await store.select("history", {"account": "player:p1:EUR"}, limit=10)
        assert [doc["balance_minor"] for _, doc in rows][-1] == 5000 - 100 - 101 - 102
        assert head == service.head.sequence
    finally:
        await service.stop()


async def test_the_writers_loads_read_held_rows_over_what_storage_holds(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    store = SqliteStore(path)
    await store.open()
    try:
        await store.commit([JournalRow(1, "t1", '{"sequence":1}')], {"players": [(("p1",), {"v": 1})]}, Head(1))
        await store.flush_derived()
        await store.commit([JournalRow(2, "t2", '{"sequence":2}')], {"players": [(("p1",), {"v": 2})]}, Head(2))
        with sqlite3.connect(path) as db:  # storage still has the first version
            assert db.execute("SELECT doc FROM players").fetchall() == [('{"v":1}',)]
        found = await store.load({"players": [("p1",), ("p2",)]})
        assert found["players"] == {("p1",): {"v": 2}}
    finally:
        await store.close()  # writes what it holds
    assert stored_meta(path) == {"head_sequence": 2, "derived_sequence": 2}


async def test_a_load_that_a_flush_overtook_reads_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A load reads storage, then the held rows: a flush that ran between the two had emptied the
    held rows after storage was read, and the load would have missed the rows it wrote."""
    store = SqliteStore(tmp_path / "ledger.db")
    await store.open()
    try:
        await store.commit([JournalRow(1, "t1", '{"sequence":1}')], {"players": [(("p1",), {"v": 1})]}, Head(1))
        original, reads = sqlite_module._load_sync, 0

        def load_then_flush(db: sqlite3.Connection, wanted: Any) -> Any:
            nonlocal reads
            found = original(db, wanted)
            reads += 1
            if reads == 1:  # a flush lands right after this read of storage
                with sqlite3.connect(store.path) as other:
                    other.execute("INSERT INTO players (player_id, doc) VALUES ('p1', '{\"v\":1}')")
                store._held.clear()  # what the flush does once it wrote them
            return found

        monkeypatch.setattr(sqlite_module, "_load_sync", load_then_flush)
        found = await store.load({"players": [("p1",)]})
        assert reads == 2 and found["players"] == {("p1",): {"v": 1}}
    finally:
        store._held.clear()
        await store.close()


async def test_a_failed_commit_gives_up_held_rows_and_the_writer_folds_them_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(tmp_path / "ledger.db")
    service = service_on(store)
    await service.start()
    try:
        for command in traffic()[:8]:
            await service.submit([command])
        assert store.holds_derived()
        original = sqlite_module.stored_entry

        def failing(text: str) -> Any:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(sqlite_module, "stored_entry", failing)
        [refused] = await service.submit([traffic()[8]])
        assert getattr(refused, "code", None) == "storage_unavailable"
        assert store.stale and not store.holds_derived()  # what it held is given up, not trusted
        monkeypatch.setattr(sqlite_module, "stored_entry", original)
        for command in traffic()[8:]:  # the next group settles first: the journal's tail is folded again
            await service.submit([command])
        assert not store.stale
        assert await rebuild_differences(store) == []
    finally:
        await service.stop()


async def test_rows_another_copy_folded_are_never_written_again_by_the_copy_that_held_them(tmp_path: Path) -> None:
    """Two stores on one file (a copy that took over): the second folds the journal's tail itself.
    The first one's held rows must not land on top: its sums (report rows) would count twice."""
    path = tmp_path / "ledger.db"
    first = SqliteStore(path)
    service = service_on(first)
    await service.start()
    try:
        for command in traffic():
            await service.submit([command])
        assert first.holds_derived()
        second = SqliteStore(path)
        await second.open()
        try:
            assert second.stale
            assert await Overlay(second).catch_up() > 0
            assert not second.stale and await rebuild_differences(second) == []
        finally:
            await second.close()
        with pytest.raises(StorageError, match="another copy"):
            await first.flush_derived()
        assert not first.holds_derived()
        assert await rebuild_differences(first) == []  # the fold of the other copy, nothing added twice
    finally:
        await service.stop()


async def test_an_idle_writer_writes_the_rows_its_store_holds(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    store = SqliteStore(path)
    service = service_on(store, idle_flush_s=0.05)
    await service.start()
    try:
        for command in traffic()[:5]:
            await service.submit([command])
        await wait_for(lambda: not store.holds_derived(), timeout_s=5)
        assert stored_meta(path)["derived_sequence"] == service.head.sequence == 5
    finally:
        await service.stop()


async def test_commits_that_hold_their_rows_run_on_the_event_loop_and_flushes_in_the_writers_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit that only adds journal rows is run by the event loop's thread itself (no hop); one
    that writes everything held goes to the writer's thread, so the loop serves meanwhile."""
    ran: list[tuple[str, bool]] = []  # (thread, whether the commit flushed)
    original = sqlite_module._commit_sync

    def recording(db: sqlite3.Connection, journal: Any, rows: Any, head: Head, held: HeldRows) -> None:
        ran.append((threading.current_thread().name, held.due(rows)))
        original(db, journal, rows, head, held)

    monkeypatch.setattr(sqlite_module, "_commit_sync", recording)
    store = SqliteStore(tmp_path / "ledger.db", held_groups_max=4)
    await store.open()
    try:
        for sequence in range(1, 10):
            row = JournalRow(sequence, f"tx{sequence}", f'{{"sequence":{sequence}}}')
            await store.commit([row], {"players": [((f"p{sequence}",), {"n": sequence})]}, Head(sequence, "00" * 32, 1))
        big = [JournalRow(s, f"tx{s}", f'{{"sequence":{s}}}') for s in range(10, 10 + HERE_JOURNAL_ROWS_MAX + 1)]
        await store.commit(big, {}, Head(big[-1].sequence, "00" * 32, 1))  # a batch's group: the thread's
        assert (await store.dump("players"))[("p9",)] == {"n": 9}
    finally:
        await store.close()
    loop_thread, writer_thread = threading.current_thread().name, "ledger-sqlite-writer"
    held, flushed = (loop_thread, False), (writer_thread, True)
    assert ran == [held] * 3 + [flushed] + [held] * 3 + [flushed, held, (writer_thread, False)]


def test_held_rows_keep_the_latest_version_and_add_up_sums() -> None:
    held = HeldRows(groups_max=3)
    sums = {"deposits_minor": 5, "deposit_count": 1}
    group = {"players": [(("p1",), {"v": 1})], "report_cash_days": [(("2026-12-02", "EUR"), sums)]}
    assert not held.due(group)
    held.hold(group, base=0, head=1)
    held.hold({"players": [(("p1",), {"v": 2})], "report_cash_days": [(("2026-12-02", "EUR"), sums)]}, base=1, head=2)
    assert held.base == 0 and held.head == 2 and held.count == 2 and held.groups == 2
    assert held.lookup("players", ("p1",)) == (True, {"v": 2}) and held.lookup("players", ("p2",)) == (False, None)
    assert held.due({})  # the third commit writes them
    assert held.with_rows({"report_cash_days": [(("2026-12-02", "EUR"), {"deposits_minor": 1})]}) == {
        "players": [(("p1",), {"v": 2})],
        "report_cash_days": [(("2026-12-02", "EUR"), {"deposits_minor": 11, "deposit_count": 2})],
    }
    assert HeldRows(rows_max=3).due({"history": [((str(i), i), {}) for i in range(3)]})


def test_the_configured_bounds_reach_the_sqlite_store(tmp_path: Path) -> None:
    config = replace(ledger_config(tmp_path), derived_flush_groups=1, derived_flush_rows=500)
    store = store_for(config)
    assert isinstance(store, SqliteStore)
    assert (store._held.groups_max, store._held.rows_max) == (1, 500)
    assert store._held.due({})  # 1 group: every commit writes its own rows


def test_a_flush_is_bounded_by_the_time_the_last_flushes_took_per_row() -> None:
    held = HeldRows(rows_max=8_000)
    assert held.rows_bound() == 8_000  # nothing measured: the configured bound
    held.measured(MEASURED_ROWS_MIN - 1, 10.0)  # too few rows to say anything
    assert held.rows_bound() == 8_000
    held.measured(1_000, 1_000 * 10e-6)  # 10 us a row: 2,500 rows fit in the 25 ms target
    assert held.rows_bound() == int(FLUSH_SECONDS_TARGET / 10e-6) == 2_500
    assert held.due({"history": [((str(i), i), {}) for i in range(2_500)]})
    assert not held.due({"history": [((str(i), i), {}) for i in range(2_499)]})
    held.measured(1_000, 1_000 * 2e-6)  # a fast flush moves it half way back, no more
    assert held.seconds_per_row == pytest.approx(6e-6) and held.rows_bound() == 4_166
    held.measured(100, 100 * 1.0)  # a stalled disk: never below the floor, whatever it measured
    assert held.rows_bound() == ROWS_FLOOR
    assert HeldRows(rows_max=300, seconds_per_row=1.0).rows_bound() == 300  # the configured bound wins below it
    held.clear()  # what is measured outlives the rows written
    assert held.rows_bound() == ROWS_FLOOR


async def test_a_slow_flush_makes_the_next_one_come_sooner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store times each flush and holds fewer rows after a slow one: the commit that writes
    them is what every waiting bet waits for."""
    original = sqlite_module._write_derived
    slow_s = [0.0]

    def timed(db: sqlite3.Connection, rows: Any) -> None:
        original(db, rows)
        time.sleep(slow_s[0])  # as a loaded machine or a disk that reads pages would take

    monkeypatch.setattr(sqlite_module, "_write_derived", timed)
    store = SqliteStore(tmp_path / "ledger.db", held_groups_max=1000, held_rows_max=4 * ROWS_FLOOR)
    await store.open()
    flushes_at: list[int] = []
    per_commit = ROWS_FLOOR // 2
    try:
        sequence = 0
        for slow in (0.0, 0.3):
            slow_s[0] = slow
            for _ in range(12):
                sequence += 1
                rows = {"players": [((f"p{sequence}-{i}",), {"n": i}) for i in range(per_commit)]}
                flushes = store._held.flushes
                await store.commit([JournalRow(sequence, f"tx{sequence}", "{}")], rows, Head(sequence, "00" * 32, 1))
                if store._held.flushes != flushes:
                    flushes_at.append(sequence)
        assert store.derived_rows_bound() == ROWS_FLOOR  # what `ledger_derived_rows_bound` shows
        assert len(await store.dump("players")) == per_commit * sequence  # held or flushed, every row is there
    finally:
        await store.close()
    # Nothing measured yet: the configured 4 * ROWS_FLOOR rows, the 8th commit. Once a flush took
    # 0.3 s for 2,000 rows, the floor: every 2nd commit.
    assert flushes_at[0] == 8, flushes_at
    assert [b - a for a, b in zip(flushes_at[-4:-1], flushes_at[-3:], strict=True)] == [2, 2, 2], flushes_at
