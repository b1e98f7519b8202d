"""No background task dies silently: the standby tailer and the auditor log, count and retry
(with backoff) every failure; one that keeps failing turns /readyz red until it recovers."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core_ledger.app import create_app
from core_ledger.app_keys import AUDITOR, SERVICE, STANDBY
from core_ledger.audit import Auditor
from core_ledger.reads import LedgerReads
from core_ledger.standby_tailer import StandbySettings
from core_ledger.store import Head, JournalRow, SqliteStore, StorageError
from core_ledger.store.base import Rows
from core_ledger.task_health import FAILING_AFTER
from tests.support.clock import FakeClock
from tests.support.ledger import TOKENS, Api, ledger_config
from tests.support.polling import wait_for


class FlakySqlite(SqliteStore):
    """Journal commits fail (nothing stored) while `failing` is set; `failures` counts them."""

    failing = False
    failures = 0

    async def commit(self, journal: Sequence[JournalRow], rows: Rows, head: Head) -> None:
        if journal and self.failing:
            self.failures += 1
            raise StorageError("commit failed: disk I/O error")
        await super().commit(journal, rows, head)


async def test_the_tailer_survives_apply_failures_and_readyz_shows_them(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    primary_app = create_app(ledger_config(tmp_path / "p"), clock=clock)
    primary_server = await aiohttp_server(primary_app)
    primary = Api(await aiohttp_client(primary_server))
    store = FlakySqlite(tmp_path / "s" / "ledger.db")
    store.failing = True
    settings = StandbySettings(
        str(primary_server.make_url("")).rstrip("/"), TOKENS["replica"], poll_interval_s=0.01, backoff_max_s=0.05
    )
    standby_app = create_app(ledger_config(tmp_path / "s"), clock=clock, store=store, standby=settings)
    standby = Api(await aiohttp_client(standby_app))
    await primary.player(deposit=100)

    await wait_for(lambda: store.failures >= FAILING_AFTER + 1, 10)  # it kept trying
    assert standby_app[STANDBY].running and standby_app[STANDBY].state == "failing"
    status, ready = await standby.get("", "/readyz")
    assert status == 503 and ready["tailer"] == "failing"
    _, metrics = await standby.get("admin_read", "/metrics")
    assert 'ledger_task_failing{task="standby"} 1.0' in metrics
    assert 'ledger_replica_errors_total{reason="apply"}' in metrics
    assert standby_app[SERVICE].head.sequence == 0 == (await store.head()).sequence

    store.failing = False  # the disk is back: it catches up and is ready again
    await wait_for(lambda: standby_app[SERVICE].head == primary_app[SERVICE].head, 10)
    status, ready = await standby.get("", "/readyz")
    assert status == 200 and ready["tailer"] == "tailing"
    _, metrics = await standby.get("admin_read", "/metrics")
    assert 'ledger_task_failing{task="standby"} 0.0' in metrics


class FlakyReads(LedgerReads):
    failing = True
    calls = 0

    async def verify(self, up_to_sequence: int, since: Head | None = None) -> dict[str, Any]:
        self.calls += 1
        if self.failing:
            raise StorageError("read failed: database is locked")
        return await super().verify(up_to_sequence, since)


async def test_the_auditor_survives_failures_and_readyz_shows_them(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    app = create_app(ledger_config(tmp_path / "l"), clock=clock)
    service = app[SERVICE]
    flaky = FlakyReads(app[AUDITOR].reads.store, clock=clock)
    app[AUDITOR] = Auditor(service, flaky, service.metrics, clock, interval_s=0.02)
    api = Api(await aiohttp_client(app))

    await wait_for(lambda: flaky.calls >= FAILING_AFTER + 1, 10)
    status, ready = await api.get("", "/readyz")
    assert status == 503 and ready["failing_tasks"] == ["audit"]
    _, metrics = await api.get("admin_read", "/metrics")
    assert 'ledger_task_failing{task="audit"} 1.0' in metrics and 'ledger_task_failures_total{task="audit"}' in metrics

    flaky.failing = False
    await wait_for(lambda: not app[AUDITOR].health.failing, 10)
    status, ready = await api.get("", "/readyz")
    assert status == 200 and "failing_tasks" not in ready
    _, metrics = await api.get("admin_read", "/metrics")
    assert "ledger_audit_chain_ok 1.0" in metrics and 'ledger_task_failing{task="audit"} 0.0' in metrics


async def test_periodic_audits_walk_what_was_journaled_since_and_the_whole_journal_every_nth(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    """A periodic audit costs what was written since the last one, not the journal's length; every
    `full_every`-th walks everything again and finds an old entry changed on disk."""
    app = create_app(ledger_config(tmp_path / "l"), clock=clock)
    api = Api(await aiohttp_client(app))
    auditor = app[AUDITOR]
    auditor.full_every = 3
    for i in range(3):
        await api.player(f"p{i}", deposit=100)
    head = app[SERVICE].head.sequence
    first = await auditor.audit()  # nothing verified yet: the whole journal
    assert first["ok"] and first["entries_checked"] == head == first["head_sequence"]
    await api.player("p9", deposit=100)
    second = await auditor.audit()
    assert second["ok"] and second["entries_checked"] == 2 and second["head_sequence"] == head + 2
    quiet = await auditor.audit()  # the third since the whole walk: the whole journal again
    assert quiet["ok"] and quiet["entries_checked"] == head + 2

    store = app[SERVICE].store
    db = sqlite3.connect(store.path)
    db.execute("DROP TRIGGER journal_no_update")
    db.execute("UPDATE journal SET entry = replace(entry, 'p0', 'px') WHERE sequence = 2")
    db_changes = db.total_changes
    db.commit()
    db.close()
    assert db_changes == 1
    for _ in range(auditor.full_every - 1):
        assert (await auditor.audit())["ok"]  # incremental: the old entry is not read
    whole = await auditor.audit()
    assert whole["ok"] is False and whole["first_bad_sequence"] == 2
    _, metrics = await api.get("admin_read", "/metrics")
    assert "ledger_audit_chain_ok 0.0" in metrics
    assert auditor.verified is None  # the next periodic audit walks everything again
