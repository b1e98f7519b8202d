"""Copies the SQLite write-ahead log into the database file on a timer, off the writer's commits.

SQLite checkpoints a WAL database from inside a commit by default: once the WAL holds enough
frames, the committing connection copies them into the database file and fsyncs it before the
commit returns. On a large database the frames are pages at random places, and such a commit held
every bet waiting on it for a third of a second (docs/decisions/sqlite-checkpoints-off-the-commit-path.md).

`WalCheckpointer.for_store` gives a checkpointer when the store is SQLite (None otherwise). While it
runs, the store checkpoints on a connection of its own (`SqliteStore.background_checkpoints`) and the
writer's own autocheckpoint is only a backstop at a larger WAL, should this task fall behind or
fail. Every `interval_s` it runs one PASSIVE checkpoint, which blocks neither the writer nor any
reader. Each is timed (`ledger_wal_checkpoint_duration_seconds`); a failure is logged as
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


class CheckpointingStore(Protocol):
    async def background_checkpoints(self, on: bool) -> None: ...
    async def checkpoint_wal(self) -> WalCheckpoint: ...


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
        self.last = await self.store.checkpoint_wal()
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
