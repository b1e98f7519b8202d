"""A serving ledger's backups: taken on demand (POST /admin/v1/backups) or on a schedule
(`backup_interval_s`), one at a time, into `backup_dir`, keeping the newest `backup_keep`.

Each attempt is counted (`ledger_backups_total{outcome}`) and logged; a success moves
`ledger_backup_last_success_timestamp_seconds`, which starts at the newest finished backup found
in `backup_dir` (0 when there is none yet, so the staleness alert fires). A scheduled backup that
fails is retried with backoff (`TaskHealth`, task "backup"); the format is core_ledger.backup_format's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from shared.errors import Conflict, CroupierError
from shared.tasks import OwnedTask

from core_ledger.backup_format import last_backup_time, prune, write_backup
from core_ledger.config import LedgerConfig
from core_ledger.metrics import LedgerMetrics
from core_ledger.store import Store
from core_ledger.task_health import TaskHealth

log = structlog.get_logger("croupier.backup")

BACKUP_RETRY_S = 30.0  # after a failed scheduled backup, doubling up to the interval


class BackupNotConfigured(Conflict):
    code = "backup_not_configured"


class BackupFailed(CroupierError):
    """The backup could not be written or did not verify (500: not retryable as such)."""

    code = "backup_failed"


class Backups:
    def __init__(
        self, store: Store, config: LedgerConfig, metrics: LedgerMetrics, clock: Callable[[], datetime]
    ) -> None:
        self.store = store
        self.directory = config.backup_dir
        self.data_dir = config.data_dir
        self.backend = config.backend
        self.keep = config.backup_keep
        self.interval_s = config.backup_interval_s
        self.metrics = metrics.backup
        self._clock = clock
        self._lock = asyncio.Lock()  # one backup at a time (route and schedule alike)
        self._task = OwnedTask("ledger-backup")
        retry = min(BACKUP_RETRY_S, self.interval_s) if self.interval_s else BACKUP_RETRY_S
        self.health = TaskHealth("backup", metrics, base_delay_s=retry, max_delay_s=max(retry, self.interval_s))
        if self.directory is not None:
            self.metrics.last_success_timestamp_seconds.set(self._newest_found(self.directory))

    @staticmethod
    def _newest_found(directory: Path) -> float:
        """When the newest finished backup in `directory` was taken; 0 when there is none or the
        directory cannot be read (the staleness alert fires; the ledger still starts)."""
        try:
            return last_backup_time(directory) or 0
        except OSError as e:
            log.error("backup_dir_unreadable", backup_dir=str(directory), error=repr(e))
            return 0

    async def take(self, *, trigger: str) -> dict[str, Any]:
        directory = self.directory
        if directory is None:
            raise BackupNotConfigured("no backup_dir is configured: set ledger.backup_dir (off the data disk)")
        if directory.resolve().is_relative_to(self.data_dir.resolve()):
            raise BackupNotConfigured(f"backup_dir {directory} is inside data_dir: put backups off the data disk")
        started = time.monotonic()
        async with self._lock:
            try:
                manifest = await write_backup(self.store, directory, backend=self.backend, clock=self._clock)
            except Exception as e:  # any failure is counted, logged and answered 500 backup_failed
                self.metrics.backups_total.labels("failed").inc()
                log.error("backup_failed", trigger=trigger, backup_dir=str(directory), error=repr(e))
                raise BackupFailed(f"the backup failed: {e}") from e
            try:
                removed = prune(directory, self.keep)
            except OSError as e:  # the backup itself is done and verified; old ones stay one round longer
                log.error("backup_prune_failed", backup_dir=str(directory), error=repr(e))
                removed = []
        self.metrics.backups_total.labels("ok").inc()
        self.metrics.last_success_timestamp_seconds.set(datetime.fromisoformat(manifest["created_at"]).timestamp())
        log.info(
            "backup_written",
            trigger=trigger,
            path=manifest["path"],
            head_sequence=manifest["head_sequence"],
            head_hash=manifest["head_hash"],
            epoch=manifest["epoch"],
            duration_s=round(time.monotonic() - started, 3),
            pruned=[str(p) for p in removed],
        )
        return manifest

    def start(self) -> None:
        if self.interval_s and self.directory is not None:
            self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        await self.health.repeat(
            partial(self.take, trigger="schedule"), self.interval_s, event="backup_schedule_failed", wait_first=True
        )
