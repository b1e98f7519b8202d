"""WAL checkpoints off the commit path: the SQLite store copies its WAL into the database file on a
connection of its own, the writer's autocheckpoint is only a backstop meanwhile, and the background
task times every checkpoint and survives failures (counted, retried)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from shared.sqlite_thread import SqliteThread

from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.store import MemoryStore, SqliteStore, StorageError
from core_ledger.store.sqlite import PAGE_SIZE_NEW, WAL_AUTOCHECKPOINT_BYTES, WAL_BACKSTOP_BYTES, WalCheckpoint
from core_ledger.wal_checkpoints import TASK, WalCheckpointer
from core_ledger.writer import WriterLimits
from tests.support.clock import FakeClock
from tests.support.journal_commands import traffic

BOUND_S = 10.0  # every wait below is far shorter; a failure shows within this
FAST_S = 0.02  # the task's interval in these tests


def autocheckpoint_pages(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


def head_in_database_file_alone(path: Path, scratch: Path) -> int:
    """The head sequence the database file holds without its WAL (a copy of the file alone)."""
    shutil.copyfile(path, scratch)
    db = sqlite3.connect(scratch)
    try:
        rows = db.execute("SELECT value FROM meta WHERE key = 'head_sequence'").fetchall()
    except sqlite3.OperationalError:  # no meta table yet: even the schema is still in the WAL
        return 0
    finally:
        db.close()
    return int(rows[0][0]) if rows else 0


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while not predicate():
        assert time.monotonic() < deadline, f"not within {BOUND_S} s: {what}"
        await asyncio.sleep(FAST_S)


def samples(metrics_registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = metrics_registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_background_checkpoints_make_the_writers_autocheckpoint_a_backstop_and_hand_it_back(
    sqlite_store: SqliteStore,
) -> None:
    assert await sqlite_store._w.run(autocheckpoint_pages) == WAL_AUTOCHECKPOINT_BYTES // PAGE_SIZE_NEW
    with pytest.raises(StorageError, match="background checkpoints are off"):
        await sqlite_store.checkpoint_wal()
    await sqlite_store.background_checkpoints(True)
    await sqlite_store.background_checkpoints(True)  # idempotent: still one connection
    assert await sqlite_store._w.run(autocheckpoint_pages) == WAL_BACKSTOP_BYTES // PAGE_SIZE_NEW
    assert isinstance(await sqlite_store.checkpoint_wal(), WalCheckpoint)
    await sqlite_store.background_checkpoints(False)
    assert await sqlite_store._w.run(autocheckpoint_pages) == WAL_AUTOCHECKPOINT_BYTES // PAGE_SIZE_NEW
    with pytest.raises(StorageError):
        await sqlite_store.checkpoint_wal()


async def test_a_checkpointer_connection_that_fails_leaves_the_backstop_and_a_retry_takes_over(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect = sqlite_store._connect

    async def refused(name: str) -> SqliteThread:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(sqlite_store, "_connect", refused)
    with pytest.raises(sqlite3.OperationalError):
        await sqlite_store.background_checkpoints(True)
    assert sqlite_store._checkpointer is None
    assert (
        await sqlite_store._w.run(autocheckpoint_pages) == WAL_BACKSTOP_BYTES // PAGE_SIZE_NEW
    )  # the WAL stays bounded
    monkeypatch.setattr(sqlite_store, "_connect", connect)
    await sqlite_store.background_checkpoints(True)
    assert not (await sqlite_store.checkpoint_wal()).busy


async def test_a_checkpoint_puts_every_committed_entry_into_the_database_file(tmp_path: Path) -> None:
    """Committed bets sit in the WAL until a checkpoint: the database file alone does not hold them
    before one, and holds all of them after."""
    store = SqliteStore(tmp_path / "ledger.db")
    await store.open()
    service = LedgerService(store, WriterLimits(), clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry()))
    await service.start()
    try:
        await store.background_checkpoints(True)
        for command in traffic():
            await service.submit([command])
        head = service.head.sequence
        assert head > 0
        assert head_in_database_file_alone(store.path, tmp_path / "before.db") < head
        done = await store.checkpoint_wal()
        assert not done.busy
        assert done.wal_frames > 0 and done.checkpointed_frames == done.wal_frames
        assert head_in_database_file_alone(store.path, tmp_path / "after.db") == head
    finally:
        await service.stop()


async def test_a_round_lets_the_wal_start_over_though_commits_land_while_it_copies(tmp_path: Path) -> None:
    """SQLite starts the WAL over only when all of it is in the database. Passes beside the writer
    that each leave a commit behind (as under load) never get there; the writer's own pass, between
    two commits, copies what they left, and the next commit writes the WAL from its start again."""
    store = SqliteStore(tmp_path / "ledger.db")
    await store.open()
    registry = CollectorRegistry()
    service = LedgerService(store, WriterLimits(), clock=FakeClock(), metrics=LedgerMetrics(registry))
    await service.start()
    commands = iter(traffic())
    try:
        await store.background_checkpoints(True)
        for command in [next(commands) for _ in range(5)]:
            await service.submit([command])
        beside = store.checkpoint_wal

        async def a_commit_lands_meanwhile() -> WalCheckpoint:
            """A pass that cannot copy the last commit: a reader still reads the snapshot before it
            (the pass stops at the oldest snapshot read), as a commit landing while it copies."""
            reader = sqlite3.connect(store.path, isolation_level=None)
            try:
                reader.execute("BEGIN")
                reader.execute("SELECT count(*) FROM journal").fetchall()
                await service.submit([next(commands)])
                return await beside()
            finally:
                reader.close()

        store.checkpoint_wal = a_commit_lands_meanwhile  # type: ignore[method-assign]  # as under load
        checkpointer = WalCheckpointer(store, service.metrics, FAST_S)  # rounds by hand, not on its timer
        await checkpointer.checkpoint()
        last = checkpointer.last
        assert last is not None and not last.busy
        assert last.checkpointed_frames == last.wal_frames > 0  # the writer's pass left nothing behind
        assert samples(registry, "ledger_wal_checkpoint_writer_seconds_count") == 1
        await service.submit([next(commands)])
        assert 0 < (await beside()).wal_frames < last.wal_frames  # this commit's frames only: started over
    finally:
        await service.stop()


async def test_the_task_checkpoints_on_its_timer_and_hands_checkpoints_back_when_stopped(
    sqlite_store: SqliteStore,
) -> None:
    registry = CollectorRegistry()
    checkpointer = WalCheckpointer.for_store(sqlite_store, LedgerMetrics(registry), FAST_S)
    assert checkpointer is not None
    checkpointer.start()
    try:
        await wait_for(
            lambda: samples(registry, "ledger_wal_checkpoint_duration_seconds_count") >= 3,
            "three timed checkpoints",
        )
        assert await sqlite_store._w.run(autocheckpoint_pages) == WAL_BACKSTOP_BYTES // PAGE_SIZE_NEW
        assert checkpointer.last is not None and not checkpointer.last.busy
    finally:
        await checkpointer.stop()
    assert sqlite_store._checkpointer is None
    assert await sqlite_store._w.run(autocheckpoint_pages) == WAL_AUTOCHECKPOINT_BYTES // PAGE_SIZE_NEW
    assert samples(registry, "ledger_task_failures_total", task=TASK) == 0


class FailingStore:
    """Takes the checkpoints over, then fails every one (a full disk, an I/O error)."""

    def __init__(self) -> None:
        self.on: list[bool] = []
        self.attempts = 0

    async def background_checkpoints(self, on: bool) -> None:
        self.on.append(on)

    async def checkpoint_wal(self) -> WalCheckpoint:
        self.attempts += 1
        raise StorageError("disk I/O error")

    async def checkpoint_wal_between_commits(self) -> WalCheckpoint:
        raise AssertionError("no pass beside the writer succeeded: the writer's pass is not reached")


async def test_a_failing_checkpoint_is_counted_and_retried_never_the_end_of_the_task() -> None:
    registry = CollectorRegistry()
    failing = FailingStore()
    checkpointer = WalCheckpointer(failing, LedgerMetrics(registry), FAST_S)
    checkpointer.health.base_delay_s = checkpointer.health.max_delay_s = FAST_S  # retry quickly here
    checkpointer.start()
    try:
        await wait_for(lambda: failing.attempts >= 3, "three attempts")
        assert samples(registry, "ledger_task_failures_total", task=TASK) >= 2
        assert checkpointer._task.running
    finally:
        await checkpointer.stop()
    assert failing.on == [True, False]  # handed back on stop: the writer's autocheckpoint returns
    assert samples(registry, "ledger_wal_checkpoint_duration_seconds_count") == 0


async def test_only_a_sqlite_store_with_a_positive_interval_gets_a_checkpointer(sqlite_store: SqliteStore) -> None:
    metrics = LedgerMetrics(CollectorRegistry())
    assert WalCheckpointer.for_store(MemoryStore(), metrics, 0.5) is None
    assert WalCheckpointer.for_store(sqlite_store, metrics, 0) is None  # 0: the writer checkpoints in its commits
    assert WalCheckpointer.for_store(sqlite_store, metrics, 0.5) is not None


class ClosingStore(FailingStore):
    """Checkpoints well, then closes under the task: handing the checkpoints back fails."""

    async def checkpoint_wal(self) -> WalCheckpoint:
        return WalCheckpoint(busy=False, wal_frames=0, checkpointed_frames=0)

    async def background_checkpoints(self, on: bool) -> None:
        self.on.append(on)
        if not on:
            raise StorageError("the store is not open")


async def test_a_store_closing_under_the_task_does_not_stop_the_shutdown_and_is_counted() -> None:
    registry = CollectorRegistry()
    closing = ClosingStore()
    checkpointer = WalCheckpointer(closing, LedgerMetrics(registry), FAST_S)
    checkpointer.start()
    await wait_for(lambda: closing.on == [True], "the take-over")
    assert samples(registry, "ledger_task_failures_total", task=TASK) == 0
    await checkpointer.stop()  # does not raise
    assert closing.on == [True, False]
    assert samples(registry, "ledger_task_failures_total", task=TASK) == 1
