"""Watches PostgreSQL replication from the ledger's side, on a timer: synchronous state, replication
lag and leader changes, published as `ledger_postgres_*` metrics (see core_ledger/metrics.py).

It runs only when the store is PostgreSQL (`PostgresWatch.for_store` gives None otherwise). Each
sample is one query on the server the ledger writes to (`PostgresStore.replication_view`; with a
multi-host DSN and `target_session_attrs=read-write`, whichever member is the leader). A different
server (host:port) or a new timeline since the last sample is a leader change: counted, and logged
as `postgres_leader_changed` with both. A sampling that fails (no leader reachable during a
failover, for instance) is logged as `postgres_watch_failed`, counted
(`ledger_task_failures_total{task="postgres_watch"}`) and retried with backoff; the gauges keep
their last values meanwhile.
"""

from __future__ import annotations

from typing import Any, Protocol

import structlog

from shared.tasks import OwnedTask

from core_ledger.metrics import LedgerMetrics
from core_ledger.store.base import Store
from core_ledger.task_health import TaskHealth

log = structlog.get_logger("croupier.ledger.postgres")

WATCH_INTERVAL_S = 5.0
TASK = "postgres_watch"


class ReplicationSource(Protocol):
    async def replication_view(self) -> Any: ...


class PostgresWatch:
    def __init__(self, store: ReplicationSource, metrics: LedgerMetrics, interval_s: float = WATCH_INTERVAL_S) -> None:
        self.store = store
        self.metrics = metrics
        self.interval_s = interval_s
        self.seen: tuple[str, int] | None = None  # (server, timeline) of the last sample
        self._task = OwnedTask("ledger-postgres-watch")
        self.health = TaskHealth(TASK, metrics, base_delay_s=min(1.0, interval_s), max_delay_s=interval_s)

    @classmethod
    def for_store(
        cls, store: Store, metrics: LedgerMetrics, interval_s: float = WATCH_INTERVAL_S
    ) -> PostgresWatch | None:
        """A watch when `store` is PostgreSQL; None for any other store."""
        return cls(store, metrics, interval_s) if hasattr(store, "replication_view") else None

    async def sample(self) -> None:
        view = await self.store.replication_view()
        m = self.metrics
        m.postgres_synchronous_expected.set(1 if view.synchronous_expected else 0)
        m.postgres_synchronous_replicas.set(view.synchronous_replicas)
        m.postgres_replicas.set(view.replicas)
        m.postgres_replication_lag_bytes.set(view.lag_bytes)
        m.postgres_replication_lag_seconds.set(view.lag_seconds)
        m.postgres_timeline.set(view.timeline)
        now = (view.server, view.timeline)
        if self.seen is not None and now != self.seen:
            m.postgres_leader_changes_total.inc()
            log.warning(
                "postgres_leader_changed",
                server_before=self.seen[0],
                timeline_before=self.seen[1],
                server=view.server,
                timeline=view.timeline,
                synchronous_replicas=view.synchronous_replicas,
            )
        if view.synchronous_expected and view.synchronous_replicas == 0 and self.seen is not None:
            log.warning("postgres_no_synchronous_replica", server=view.server, replicas=view.replicas)
        self.seen = now

    def start(self) -> None:
        self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        await self.health.repeat(self.sample, self.interval_s, event="postgres_watch_failed")
