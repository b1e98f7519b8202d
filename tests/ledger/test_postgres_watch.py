"""The ledger's view of PostgreSQL replication (`PostgresWatch`): gauges from one query on the server
it writes to, a leader change counted and logged when the server or the timeline moves, a failing
sample counted as a failing task (never a dead one), and no watch at all on SQLite."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from core_ledger.metrics import LedgerMetrics
from core_ledger.postgres_watch import PostgresWatch
from core_ledger.store import SqliteStore
from core_ledger.store.postgres import ReplicationView
from tests.support.local_postgres import PgServer, postgres_store

VIEW = ReplicationView(
    server="127.0.0.1:5001",
    timeline=1,
    synchronous_expected=True,
    synchronous_replicas=1,
    replicas=2,
    lag_bytes=4096,
    lag_seconds=0.25,
)
FAILING_POLLS_MAX = 200


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


class Views:
    """A replication source that answers the views it is given, one per sample, or raises."""

    def __init__(self, *views: ReplicationView | Exception) -> None:
        self.views = list(views)

    async def replication_view(self) -> ReplicationView:
        view = self.views.pop(0)
        if isinstance(view, Exception):
            raise view
        return view


async def test_gauges_and_leader_changes_from_the_views() -> None:
    registry = CollectorRegistry()
    watch = PostgresWatch(
        Views(
            VIEW, replace(VIEW, lag_bytes=0), replace(VIEW, server="127.0.0.1:5002", timeline=2, synchronous_replicas=0)
        ),
        LedgerMetrics(registry),
    )
    await watch.sample()
    assert _value(registry, "ledger_postgres_synchronous_expected") == 1
    assert _value(registry, "ledger_postgres_synchronous_replicas") == 1
    assert _value(registry, "ledger_postgres_replicas") == 2
    assert _value(registry, "ledger_postgres_replication_lag_bytes") == 4096
    assert _value(registry, "ledger_postgres_replication_lag_seconds") == 0.25
    await watch.sample()  # same server and timeline: no change
    assert _value(registry, "ledger_postgres_leader_changes_total") == 0
    with capture_logs() as logs:
        await watch.sample()
    assert _value(registry, "ledger_postgres_leader_changes_total") == 1
    assert _value(registry, "ledger_postgres_timeline") == 2
    changed = [e for e in logs if e["event"] == "postgres_leader_changed"]
    assert changed and changed[0]["server_before"] == "127.0.0.1:5001" and changed[0]["server"] == "127.0.0.1:5002"
    assert any(e["event"] == "postgres_no_synchronous_replica" for e in logs)


async def test_a_failing_sample_is_counted_and_retried_never_a_dead_task() -> None:
    registry = CollectorRegistry()
    errors = [ConnectionError("no leader")] * 6
    watch = PostgresWatch(Views(*errors, VIEW, VIEW, VIEW), LedgerMetrics(registry), interval_s=0.01)
    watch.health.base_delay_s = watch.health.max_delay_s = 0.01
    watch.start()
    try:
        for _ in range(FAILING_POLLS_MAX):
            if registry.get_sample_value("ledger_postgres_replicas") == 2:
                break
            await asyncio.sleep(0.01)
    finally:
        await watch.stop()
    assert _value(registry, "ledger_task_failures_total", task="postgres_watch") == 6
    assert _value(registry, "ledger_task_failing", task="postgres_watch") == 0  # recovered
    assert _value(registry, "ledger_postgres_replicas") == 2


async def test_the_view_of_a_single_server_and_no_watch_on_sqlite(pg_server: PgServer, tmp_path: Path) -> None:
    store = postgres_store(pg_server)
    await store.open()
    try:
        view = await store.replication_view()
    finally:
        await store.close()
    assert view.server == f"127.0.0.1:{pg_server.port}" and view.timeline == 1
    assert (view.synchronous_expected, view.synchronous_replicas, view.replicas, view.lag_bytes) == (False, 0, 0, 0)
    metrics = LedgerMetrics(CollectorRegistry())
    assert isinstance(PostgresWatch.for_store(store, metrics), PostgresWatch)
    assert PostgresWatch.for_store(SqliteStore(tmp_path / "ledger.db"), metrics) is None


@pytest.mark.parametrize("name", ["ledger_postgres_synchronous_expected", "ledger_postgres_leader_changes_total"])
def test_the_metrics_exist_on_every_ledger(name: str) -> None:
    """Exported (as 0) on SQLite too, so an alert on them evaluates everywhere."""
    registry = CollectorRegistry()
    LedgerMetrics(registry)
    assert registry.get_sample_value(name) == 0
