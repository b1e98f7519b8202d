"""Health of the edge's background tasks: every failure is logged and counted, and a task that
keeps failing turns /readyz red until it succeeds again.

Long-lived loops (reconciler, sync dialers, anti-entropy, push loops, store compaction) catch
their own failures per round and report them here instead of dying: `failed` after a round that
raised, `ok` after one that did its work.
"""

from __future__ import annotations

import structlog

from edge.metrics import EdgeMetrics

log = structlog.get_logger("croupier.edge.health")


class TaskHealth:
    def __init__(self, metrics: EdgeMetrics, unready_after: int, tasks: tuple[str, ...] = ()) -> None:
        self._metrics = metrics
        self._unready_after = unready_after
        self._consecutive: dict[str, int] = {}
        for task in tasks:  # series that exist from the start: a first failure is an increase
            metrics.background_failures_total.labels(task)
            metrics.background_task_failing.labels(task).set(0)

    def failed(self, task: str, error: BaseException) -> None:
        n = self._consecutive[task] = self._consecutive.get(task, 0) + 1
        self._metrics.background_failures_total.labels(task).inc()
        self._metrics.background_task_failing.labels(task).set(int(n >= self._unready_after))
        log.error("background task failed", task=task, consecutive=n, error=repr(error), exc_info=error)

    def ok(self, task: str) -> None:
        if self._consecutive.pop(task, 0):
            self._metrics.background_task_failing.labels(task).set(0)

    def failing(self) -> list[str]:
        """Tasks that failed `unready_after` times in a row."""
        return sorted(t for t, n in self._consecutive.items() if n >= self._unready_after)
