"""Hash-chain audits: on demand (POST /admin/v1/audit/verify) and periodically in the background.
Both publish `ledger_audit_chain_ok` and `ledger_audit_last_verified_timestamp_seconds`. A periodic
audit that fails (a read error, not a broken chain) is retried with backoff (`TaskHealth`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from shared.tasks import OwnedTask

from core_ledger.metrics import LedgerMetrics
from core_ledger.reads import LedgerReads
from core_ledger.service import LedgerService
from core_ledger.task_health import TaskHealth

log = structlog.get_logger("croupier.audit")

AUDIT_INTERVAL_S = 3600.0  # the stale-audit alert fires after 6 hours without one
AUDIT_RETRY_S = 5.0  # after a failed audit (not a broken chain: a read that failed), doubling up to the interval


class Auditor:
    def __init__(self, service: LedgerService, reads: LedgerReads, metrics: LedgerMetrics,
                 clock: Callable[[], datetime], interval_s: float = AUDIT_INTERVAL_S) -> None:
        self.service = service
        self.reads = reads
        self.metrics = metrics
        self._clock = clock
        self.interval_s = interval_s
        self._task = OwnedTask("ledger-audit")
        self.health = TaskHealth("audit", metrics, base_delay_s=min(AUDIT_RETRY_S, interval_s), max_delay_s=interval_s)

    async def verify(self) -> dict[str, Any]:
        """Verify the journal up to the current head and publish the outcome."""
        report = await self.reads.verify(self.service.head.sequence)
        self.metrics.audit_chain_ok.set(1 if report["ok"] else 0)
        self.metrics.audit_last_verified_timestamp_seconds.set(self._clock().timestamp())
        if not report["ok"]:
            log.error("audit_chain_broken", first_bad_sequence=report["first_bad_sequence"])
        return report

    def start(self) -> None:
        self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        await self.health.repeat(self.verify, self.interval_s, event="audit_failed")
