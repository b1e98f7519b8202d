"""Copies the SQLite write-ahead log into the database file on a timer, off the writer's commits.

SQLite checkpoints a WAL database from inside a commit by default: once the WAL holds enough
frames, the committing connection copies them into the database file and fsyncs it before the
commit returns. On a large database the frames are pages at random places, and such a commit held
every bet waiting on it for a third of a second (docs/decisions/sqlite-checkpoints-off-the-commit-path.md).

`WalCheckpointer.for_store` gives a checkpointer when the store is SQLite (None otherwise). While it
runs, the store checkpoints on a connection of its own (`SqliteStore.background_checkpoints`) and the
writer's own autocheckpoint is only a backstop at a larger WAL, should this task fall behind or
fail. Every `interval_s` it runs PASSIVE checkpoints, which block neither the writer nor any
reader, and then one on the writer's connection that lets the WAL start over:

SQLite starts the WAL over at the beginning of a write transaction only when every frame in it is
already in the database. A checkpoint beside a writer that commits every few milliseconds never
gets there (commits land while it copies), so the WAL grew until the writer's backstop copied,
inside a commit, everything committed since the last checkpoint: 75 to 95 ms at 10M entries, every
3 s under load, which was that size's p99. So each round makes CHECKPOINTER_PASSES passes on the
checkpointer's connection (the first copies what the WAL gathered since the last round, the next
the little committed while the one before ran), then one on the writer's connection between two
of its commits (`SqliteStore.checkpoint_wal_between_commits`): it copies what came during the last
pass, about a commit's worth (~11 ms at 10M entries, mostly the fsync), and the next commit starts
the WAL over (docs/decisions/sqlite-wal-starts-over.md).

Each round is timed (`ledger_wal_checkpoint_duration_seconds`), and the writer's part of it too
(`ledger_wal_checkpoint_writer_seconds`: commits wait for it); a failure is logged as
`wal_checkpoint_failed`, counted (`ledger_task_failures_total{task="wal_checkpoint"}`) and retried
with backoff, and the backstop keeps the WAL bounded meanwhile (`ledger_db_bytes{file="wal"}`).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Protocol

import structlog

from shared.sqlite_thread import SqliteThreadClosed
from shared.tasks import OwnedTask

from core_ledger.metrics import LedgerMetrics
from core_ledger.store.base import StorageError, Store
from core_ledger.store.sqlite import SqliteStore, WalCheckpoint
from core_ledger.task_health import TaskHealth

log = structlog.get_logger("croupier.ledger.wal")

TASK = "wal_checkpoint"
WAL_CHECKPOINT_INTERVAL_S = 0.5  # the default of `wal_checkpoint_interval_s` (the decision above says why)
# Passes beside the writer before the writer's own: with one, the writer's pass copied what was
# committed during a whole pass (~35 ms at 10M entries); with two, about one commit's worth (~11 ms).
CHECKPOINTER_PASSES = 2


class CheckpointingStore(Protocol):
    async def background_checkpoints(self, on: bool) -> None: ...
    async def checkpoint_wal(self) -> WalCheckpoint: ...
    async def checkpoint_wal_between_commits(self) -> WalCheckpoint: ...


class WalCheckpointer:
    def __init__(self, store: CheckpointingStore, metrics: LedgerMetrics, interval_s: float) -> None:
        self.store = store
        self.metrics = metrics
        self.interval_s = interval_s
        self.last: WalCheckpoint | None = None
        self._task = OwnedTask("ledger-wal-checkpoints")
        self.health = TaskHealth(TASK, metrics, base_delay_s=interval_s, max_delay_s=max(interval_s, 30.0))

    @classmethod
    def for_store(cls, store: Store, metrics: LedgerMetrics, interval_s: float) -> WalCheckpointer | None:
        """A checkpointer when `store` checkpoints a WAL (SQLite) and `interval_s` > 0; else None
        (the writer then checkpoints inside its commits)."""
        if interval_s <= 0 or not isinstance(store, SqliteStore):
            return None
        return cls(store, metrics, interval_s)

    async def checkpoint(self) -> None:
        started = time.perf_counter()
        for _ in range(CHECKPOINTER_PASSES):
            beside = await self.store.checkpoint_wal()
        self.last = beside
        if not beside.busy and beside.wal_frames > 0:  # busy: another checkpoint (the backstop) ran
            writer_started = time.perf_counter()
            self.last = await self.store.checkpoint_wal_between_commits()
            self.metrics.wal_checkpoint_writer_seconds.observe(time.perf_counter() - writer_started)
        self.metrics.wal_checkpoint_duration_seconds.observe(time.perf_counter() - started)

    def start(self) -> None:
        self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()
        try:
            await self.store.background_checkpoints(False)
        except (StorageError, sqlite3.Error, SqliteThreadClosed) as e:
            # The store failing or closing: nothing to hand back to, and shutdown goes on (a bug
            # of any other kind is raised). Logged and counted as the task's failure.
            self.health.failed()
            log.error("wal_checkpoint_failed", task=TASK, error=repr(e), during="hand_back")

    async def _run(self) -> None:
        await self.health.until_done(self._take_over, event="wal_checkpoint_failed")
        await self.health.repeat(self.checkpoint, self.interval_s, event="wal_checkpoint_failed")

    async def _take_over(self) -> None:
        await self.store.background_checkpoints(True)
