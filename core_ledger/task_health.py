"""Health of the ledger's long-running background tasks (the standby tailer, the auditor).

A task that fails logs the failure itself, reports it here and goes on after the delay this
returns (doubling from `base_delay_s` up to `max_delay_s`); one success resets the streak. Each
failure is counted (`ledger_task_failures_total{task}`); `failing_after` consecutive failures make
the task `failing` (`ledger_task_failing{task}` = 1), which turns the ledger's /readyz red.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from core_ledger.metrics import LedgerMetrics

log = structlog.get_logger("croupier.ledger")

FAILING_AFTER = 5  # consecutive failures before a task counts as failing


class TaskHealth:
    def __init__(
        self,
        task: str,
        metrics: LedgerMetrics,
        *,
        base_delay_s: float,
        max_delay_s: float,
        failing_after: int = FAILING_AFTER,
    ) -> None:
        self.task = task
        self.base_delay_s = base_delay_s
        self.max_delay_s = max(base_delay_s, max_delay_s)
        self.failing_after = failing_after
        self.consecutive_failures = 0
        self._failures = metrics.task_failures_total.labels(task)
        self._failing = metrics.task_failing.labels(task)
        self._failing.set(0)

    @property
    def failing(self) -> bool:
        return self.consecutive_failures >= self.failing_after

    def failed(self) -> float:
        """Count one failure; the delay before the task tries again."""
        self.consecutive_failures += 1
        self._failures.inc()
        self._failing.set(1 if self.failing else 0)
        return min(self.max_delay_s, self.base_delay_s * 2 ** min(self.consecutive_failures - 1, 30))

    def succeeded(self) -> None:
        if self.consecutive_failures:
            self.consecutive_failures = 0
            self._failing.set(0)

    async def _attempt(self, step: Callable[[], Awaitable[object]], event: str) -> float | None:
        """Run `step` once: None when it succeeded, else the backoff delay before the next try.
        A failure of any kind is logged as `event` and counted here: a background task must never
        stop the ledger, and a bug in it shows as a failing task (metric, alert, /readyz), never as
        an outage of money writes."""
        try:
            await step()
        except Exception as e:  # noqa: BLE001  logged and counted just below; retried with backoff
            delay = self.failed()
            log.error(event, task=self.task, error=repr(e), failures=self.consecutive_failures, retry_in_s=delay)
            return delay
        self.succeeded()
        return None

    async def until_done(self, step: Callable[[], Awaitable[object]], *, event: str) -> None:
        """Run `step` until it succeeds once, retried after the backoff delay (a one-off background
        job, such as filling the writer's key filter, that the ledger can serve without meanwhile)."""
        while True:
            delay = await self._attempt(step, event)
            if delay is None:
                return
            await asyncio.sleep(delay)

    async def repeat(
        self, step: Callable[[], Awaitable[object]], interval_s: float, *, event: str, wait_first: bool = False
    ) -> None:
        """Run `step` every `interval_s`, forever; after a failure, after the backoff delay instead
        (periodic tasks: audit, liabilities, scheduled backups)."""
        if wait_first:
            await asyncio.sleep(interval_s)
        while True:
            delay = await self._attempt(step, event)
            await asyncio.sleep(interval_s if delay is None else delay)
