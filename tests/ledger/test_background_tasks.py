"""No background task dies silently: the standby tailer and the auditor log, count and retry
(with backoff) every failure; one that keeps failing turns /readyz red until it recovers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from core_ledger.app import create_app
from core_ledger.app_keys import AUDITOR, SERVICE, STANDBY
from core_ledger.audit import AUDIT_PACE, Auditor
from core_ledger.journal_checks import JOURNAL_PAGE
from core_ledger.pace import Pace
from core_ledger.reads import ON_DEMAND, LedgerReads
from core_ledger.standby_tailer import StandbySettings
from core_ledger.store import Head, JournalRow, SqliteStore, StorageError
from core_ledger.store.base import Rows
from core_ledger.task_health import FAILING_AFTER
from harness.journal_seed import SeedPlan, seed_commands, seed_store
from tests.support.clock import FakeClock
from tests.support.ledger import TOKENS, Api, ledger_config
from tests.support.polling import wait_for
from tests.support.tamper import rewrite_entry


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

    async def verify(self, up_to_sequence: int, since: Head | None = None, *, pace: Pace = ON_DEMAND) -> dict[str, Any]:
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
    await wait_for(lambda: auditor.verified is not None, 20)  # the start-up audit: done
    auditor.full_every = 3
    for i in range(3):
        await api.player(f"p{i}", deposit=100)
    head = app[SERVICE].head.sequence
    first = await auditor.audit()  # from the empty head the start-up audit verified: every entry
    assert first["ok"] and first["entries_checked"] == head == first["head_sequence"]
    await api.player("p9", deposit=100)
    second = await auditor.audit()
    assert second["ok"] and second["entries_checked"] == 2 and second["head_sequence"] == head + 2
    quiet = await auditor.audit()  # the third since the whole walk: the whole journal again
    assert quiet["ok"] and quiet["entries_checked"] == head + 2

    rewrite_entry(app[SERVICE].store.path, 2, lambda text: text.replace("p0", "px"))
    for _ in range(auditor.full_every - 1):
        assert (await auditor.audit())["ok"]  # incremental: the old entry is not read
    whole = await auditor.audit()
    assert whole["ok"] is False and whole["first_bad_sequence"] == 2
    _, metrics = await api.get("admin_read", "/metrics")
    assert "ledger_audit_chain_ok 0.0" in metrics
    assert auditor.verified is None  # the next periodic audit walks everything again


class PageRecordingSqlite(SqliteStore):
    """Records the `limit` of every journal page read."""

    pages: list[int]

    async def journal(self, after_sequence: int, limit: int) -> list[tuple[int, str]]:
        self.pages.append(limit)
        return await super().journal(after_sequence, limit)


async def test_a_periodic_audit_walks_in_small_pages_and_pauses_between_them(tmp_path: Path) -> None:
    """The first periodic audit after start-up walks the whole journal while the ledger serves: it
    must not hold the event loop for long (small pages) nor take most of it (pauses in proportion to
    the checking, AUDIT_PACE.loop_share); an on-demand audit takes small pages too, without pauses."""
    store = PageRecordingSqlite(tmp_path / "ledger.db")
    store.pages = []
    await store.open()
    try:
        plan = SeedPlan(250, 10, "EUR", 10_000, 100, ("slots-1",), "mega", ("slots-1",))
        await seed_store(store, seed_commands(plan))
        pauses: list[float] = []

        async def pause(seconds: float) -> None:
            pauses.append(seconds)

        pace = Pace(page=100, loop_share=0.1, sleep=pause)
        report = await LedgerReads(store, clock=FakeClock()).verify(250, pace=pace)
        assert report["ok"] and report["entries_checked"] == 250
        assert store.pages == [100, 100, 50]
        assert len(pauses) == 3 and all(p > 0 for p in pauses)
        store.pages.clear()
        assert (await LedgerReads(store, clock=FakeClock()).verify(250))["ok"]
        assert max(store.pages) <= ON_DEMAND.page < JOURNAL_PAGE
    finally:
        await store.close()
    assert AUDIT_PACE.loop_share <= 0.25 and AUDIT_PACE.page <= 200
    with pytest.raises(ValueError, match="loop_share"):
        Pace(loop_share=0)


async def test_the_auditor_walks_at_its_pace(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> None:
    """A periodic audit walks at AUDIT_PACE (a whole walk of a long journal goes to a child
    process instead: tests/ledger/test_audit_walk.py); an operator's audit at full speed."""
    app = create_app(ledger_config(tmp_path / "l"), clock=clock)
    api = Api(await aiohttp_client(app))
    await wait_for(lambda: app[AUDITOR].verified is not None, 20)  # the start-up audit: done
    for i in range(3):
        await api.player(f"p{i}", deposit=100)
    walks: list[Pace] = []
    reads: LedgerReads = app[AUDITOR].reads
    real = reads.verify

    async def recording(up_to: int, since: Head | None = None, *, pace: Pace = ON_DEMAND) -> dict[str, Any]:
        walks.append(pace)
        return await real(up_to, since, pace=pace)

    reads.verify = recording  # type: ignore[method-assign]  # a recording stand-in for this test
    assert (await app[AUDITOR].audit())["ok"]
    assert (await app[AUDITOR].verify())["ok"]
    assert walks == [AUDIT_PACE, ON_DEMAND]
