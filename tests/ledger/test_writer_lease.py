"""The service side of the active/passive pair (core_ledger/lease_keeper.py, `Failover.take_over` and
`step_down`), with a lease the test controls: a passive copy takes no write; once it holds the lease
it reads the head back, raises the epoch durably and writes; a failed heartbeat makes it passive at
once and it waits again; a take-over that fails is logged, counted and retried (the keeper never
dies). And the config: `writer_lease` is refused on SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from shared.config import ConfigError
from shared.errors import Unavailable

from core_ledger.config import parse
from core_ledger.lease_keeper import LeaseKeeper
from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.store import Head, JournalRow, MemoryStore, StorageError
from core_ledger.store.base import Rows
from core_ledger.writer import WriterLimits
from tests.support.journal_commands import cmd

TTL_S = 0.4
WAIT_S = 3.0


class ScriptedLease:
    """Granted when `free` is set; its heartbeat fails while `broken` is set."""

    def __init__(self) -> None:
        self.free = asyncio.Event()
        self.broken = False
        self.acquired = 0
        self.released = 0
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    async def acquire(self, *, poll_s: float = 0.5, timeout_s: float | None = None) -> bool:
        await self.free.wait()
        self._held = True
        self.acquired += 1
        return True

    async def heartbeat(self, timeout_s: float) -> None:
        if self.broken:
            raise StorageError("the writer lease's session is gone")

    async def release(self) -> None:
        self._held = False
        self.released += 1


class FailingOnce(MemoryStore):
    """A store whose first commit fails (the database unreachable during a take-over)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures_left = 1

    async def commit(self, journal: Sequence[JournalRow], rows: Rows, head: Head) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise StorageError("connection refused")
        await super().commit(journal, rows, head)


async def _until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not condition():
        assert loop.time() < deadline, f"not within {WAIT_S}s: {what}"
        await asyncio.sleep(0.01)


def _service(store: MemoryStore, registry: CollectorRegistry) -> LedgerService:
    return LedgerService(
        store,
        WriterLimits(),
        clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        metrics=LedgerMetrics(registry),
        passive=True,
    )


def _value(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, name
    return value


async def test_a_passive_copy_writes_only_while_it_holds_the_lease_and_steps_down_when_it_is_lost() -> None:
    store, registry, lease = MemoryStore(), CollectorRegistry(), ScriptedLease()
    await store.open()
    await store.commit([], {}, Head(0, "0" * 64, 4))  # what the other copy left: epoch 4
    service = _service(store, registry)
    await service.start()
    keeper = LeaseKeeper(lease, service.failover, service.metrics, ttl_s=TTL_S)
    keeper.start()
    try:
        assert service.role == "passive"
        with pytest.raises(Unavailable) as refused:
            await service.submit([cmd("player_create", "player:p1", player_id="p1", currencies=["EUR"])])
        assert refused.value.code == "not_primary"
        assert _value(registry, "ledger_writer_lease_enabled") == 1
        assert _value(registry, "ledger_writer_lease_held") == 0

        lease.free.set()
        await _until(lambda: service.role == "primary", "the take-over")
        assert service.epoch == 5 and (await store.head()).epoch == 5  # above the stored one, durably
        assert _value(registry, "ledger_writer_lease_held") == 1
        assert _value(registry, "ledger_writer_lease_takeovers_total") == 1
        [answer] = await service.submit([cmd("player_create", "player:p1", player_id="p1", currencies=["EUR"])])
        assert not isinstance(answer, Exception) and (await store.head()).sequence == 1

        lease.free.clear()
        lease.broken = True  # the lease's session is gone: stop writing at once, then wait again
        await _until(lambda: service.role == "passive", "the step-down")
        assert _value(registry, "ledger_writer_lease_held") == 0
        assert _value(registry, "ledger_writer_lease_losses_total") == 1
        assert lease.released >= 1
        with pytest.raises(Unavailable):
            await service.submit([cmd("player_create", "player:p2", player_id="p2", currencies=["EUR"])])

        lease.broken = False
        lease.free.set()  # granted again: a second take-over, at a higher epoch still
        await _until(lambda: service.role == "primary", "the second take-over")
        assert service.epoch == 6 and _value(registry, "ledger_writer_lease_takeovers_total") == 2
    finally:
        await keeper.stop()
        await service.stop()
    assert service.role == "passive"


async def test_a_take_over_that_fails_is_counted_and_retried() -> None:
    store, registry, lease = FailingOnce(), CollectorRegistry(), ScriptedLease()
    await store.open()
    service = _service(store, registry)
    await service.start()
    keeper = LeaseKeeper(lease, service.failover, service.metrics, ttl_s=TTL_S)
    lease.free.set()
    keeper.start()
    try:
        await _until(lambda: service.role == "primary", "the retried take-over")
        assert registry.get_sample_value("ledger_task_failures_total", {"task": "writer_lease"}) == 1
        assert lease.acquired == 2 and lease.released >= 1  # the lease was dropped, then taken again
        assert service.epoch == 2 and (await store.head()).epoch == 2  # raised once: the failed try left nothing
    finally:
        await keeper.stop()
        await service.stop()


def test_writer_lease_is_refused_on_sqlite(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='writer_lease needs backend = "postgres"'):
        parse({"ledger": {"writer_lease": True}}, tmp_path)


def test_writer_lease_on_postgres_is_read(tmp_path: Path) -> None:
    (tmp_path / "pg.dsn").write_text("postgresql://u:p@127.0.0.1:5432/db\n")
    config = parse(
        {
            "ledger": {
                "backend": "postgres",
                "postgres_dsn_file": "pg.dsn",
                "writer_lease": True,
                "writer_lease_ttl_s": 3.0,
            }
        },
        tmp_path,
    )
    assert config.writer_lease and config.writer_lease_ttl_s == 3.0
    with pytest.raises(ConfigError, match="writer_lease_ttl_s"):
        parse(
            {
                "ledger": {
                    "backend": "postgres",
                    "postgres_dsn_file": "pg.dsn",
                    "writer_lease": True,
                    "writer_lease_ttl_s": 0.1,
                }
            },
            tmp_path,
        )
