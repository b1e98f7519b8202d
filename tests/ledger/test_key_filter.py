"""The writer's key filter (core_ledger/key_filter.py): a fresh bet on cached rows needs no store
read, and a key storage holds is never called absent: not after a restart, not after a commit whose
outcome was unknown, not on a standby promoted."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from core_ledger import key_filter, overlay
from core_ledger.domain import Command
from core_ledger.domain.state import Doc, Key
from core_ledger.key_filter import KeyFilter
from core_ledger.metrics import LedgerMetrics
from core_ledger.pace import Pace
from core_ledger.service import LedgerService
from core_ledger.store import MemoryStore, Store
from core_ledger.store.base import Head, JournalRow, Rows
from core_ledger.writer import Result, WriterLimits
from tests.support.clock import FakeClock
from tests.support.journal_commands import cmd, traffic


def test_every_key_added_may_be_held_across_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(key_filter, "CAPACITY_MIN", 64)  # many layers from few keys
    keys = KeyFilter(["bets"])
    added = [("c", f"bet-{i}") for i in range(3000)]
    keys.add_all("bets", added)
    assert keys.keys_added() == {"bets": 3000}
    assert all(keys.may_hold("bets", key) for key in added)
    # False positives: rare, not none asked. About 0.65% here (six layers, each up to 1 in 600), and
    # Python's hash differs per process: 30,000 keys asked keep 1.5% many deviations away.
    others = [("c", f"other-{i}") for i in range(30_000)]
    assert sum(keys.may_hold("bets", key) for key in others) < 450


def test_a_key_is_called_absent_only_in_a_filtered_table_and_when_made_of_text() -> None:
    keys = KeyFilter(["bets"])
    assert not keys.may_hold("bets", ("c", "b1"))
    assert keys.may_hold("accounts", ("player:p1:EUR",))  # not filtered: always looked up
    assert keys.may_hold("bets", ("c", 7))  # 7 and "7" find the same SQL row but hash apart


def bet(i: int) -> Command:
    return cmd(
        "bet", f"kb{i}", id=f"kb{i}", player_id="p1", currency="EUR", game_id="slots", amount_minor=10, round_id="r-key"
    )


class CountingStore(MemoryStore):
    """Counts `load` calls; `land_then_fail`: the next commit lands, then raises (outcome unknown)."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[dict[str, Sequence[Key]]] = []
        self.land_then_fail = False

    async def load(self, wanted: dict[str, Sequence[Key]]) -> dict[str, dict[Key, Doc]]:
        self.loads.append(dict(wanted))
        return await super().load(wanted)

    async def commit(self, journal: Sequence[JournalRow], rows: Rows, head: Head) -> None:
        await super().commit(journal, rows, head)
        if self.land_then_fail:
            self.land_then_fail = False
            raise OSError("the connection died after COMMIT was sent")


def service_on(
    store: Store, limits: WriterLimits | None = None, *, standby: bool = False, passive: bool = False
) -> LedgerService:
    return LedgerService(
        store,
        limits or WriterLimits(),
        clock=FakeClock(),
        metrics=LedgerMetrics(CollectorRegistry()),
        standby=standby,
        passive=passive,
    )


def status(result: Result) -> int | str:
    return result[0] if isinstance(result, tuple) else repr(result)


def replayed_at(result: Result) -> int | None:
    """The sequence of the entry a replay answers for; None when it is not a replay."""
    if isinstance(result, tuple) and result[0] == 200 and result[1].get("replayed") is True:
        return int(result[1]["transaction"]["sequence"])
    return None


def filter_filled(service: LedgerService) -> float:
    """`ledger_key_filter_filled` as the service exports it."""
    return service.metrics.key_filter_filled.collect()[0].samples[0].value


def booked_at(result: Result) -> int:
    assert isinstance(result, tuple) and result[0] == 201, result
    return int(result[1]["transaction"]["sequence"])


async def test_fresh_bets_on_cached_rows_read_nothing_from_the_store() -> None:
    store = CountingStore()
    service = service_on(store)
    await service.start()
    try:
        assert await service.keys_learned() and filter_filled(service) == 1
        for command in traffic()[:4]:  # the player, the game and a deposit: their rows are cached
            await service.submit([command])
        await service.submit([bet(0)])  # opens round r-key: its row is cached from now on
        store.loads.clear()
        results = await service.submit([bet(i) for i in range(1, 6)])
        assert [status(r) for r in results] == [201] * 5
        assert store.loads == []  # before the filter: idem, bets and rounds keys were asked for
    finally:
        await service.stop()


async def test_without_the_filter_the_same_bets_ask_the_store() -> None:
    store = CountingStore()
    service = service_on(store, WriterLimits(key_filter=False))
    await service.start()
    try:
        assert math.isnan(filter_filled(service))  # no filter: neither filling nor filled
        for command in traffic()[:4]:
            await service.submit([command])
        await service.submit([bet(0)])
        store.loads.clear()
        await service.submit([bet(i) for i in range(1, 6)])
        assert len(store.loads) == 1 and set(store.loads[0]) == {"idem", "bets"}
    finally:
        await service.stop()


async def test_a_bet_stored_before_a_restart_is_replayed_not_booked_again(storage: Callable[[], Store]) -> None:
    service = service_on(storage())
    await service.start()
    try:
        for command in traffic()[:4]:
            await service.submit([command])
        [first] = await service.submit([bet(1)])
        sequence = booked_at(first)
    finally:
        await service.stop()
    service = service_on(storage())  # a new process: its filter is filled from the file or schema
    await service.start()
    try:
        assert await service.keys_learned()  # on every backend: each lists its keys
        [again] = await service.submit([bet(1)])
        assert replayed_at(again) == sequence, again
        assert service.head.sequence == sequence
    finally:
        await service.stop()


async def test_a_commit_of_unknown_outcome_leaves_its_keys_looked_up() -> None:
    store = CountingStore()
    service = service_on(store)
    await service.start()
    try:
        assert await service.keys_learned()
        for command in traffic()[:4]:
            await service.submit([command])
        store.land_then_fail = True
        [lost] = await service.submit([bet(1)])
        assert status(lost) != 201  # answered 503: the client retries with the same id
        head = service.head.sequence
        [retried] = await service.submit([bet(1)])
        assert replayed_at(retried) == head, retried  # a replay of what landed
        assert service.head.sequence == head  # nothing booked twice
    finally:
        await service.stop()


async def test_a_promoted_standby_replays_what_it_applied() -> None:
    primary_store = MemoryStore()
    primary = service_on(primary_store)
    await primary.start()
    try:
        for command in traffic()[:4]:
            await primary.submit([command])
        sequence = booked_at((await primary.submit([bet(1)]))[0])
        journal = await primary_store.journal(0, 100)
    finally:
        await primary.stop()
    standby = service_on(MemoryStore(), standby=True)
    await standby.start()  # its filter is filled while its store is empty
    try:
        assert await standby.keys_learned()
        await standby.apply_replicated(journal)  # the applied rows' keys join the filter
        await standby.promote()
        [again] = await standby.submit([bet(1)])
        assert replayed_at(again) == sequence, again
    finally:
        await standby.stop()


class PagesFromBeforeTheWrites(MemoryStore):
    """Its key pages list what it held when the filter was sized (as a scan that had already passed
    those keys), and only once `release` is set: writes land while the filter is being filled.
    `page_failures`: how many page reads fail first."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.page_failures = 0
        self._listed: dict[str, list[Key]] = {}

    async def count_keys(self, table: str) -> int | None:
        self._listed[table] = sorted(await self.dump(table))
        return len(self._listed[table])

    async def key_page(self, table: str, after: Key | None, limit: int) -> list[Key]:
        await self.release.wait()
        if self.page_failures:
            self.page_failures -= 1
            raise OSError("disk I/O error")
        return [k for k in self._listed[table] if after is None or k > after][:limit]


async def test_keys_written_while_the_filter_fills_are_never_called_absent() -> None:
    store = PagesFromBeforeTheWrites()
    service = service_on(store)
    await service.start()
    try:
        for command in traffic()[:4]:
            await service.submit([command])
        sequence = booked_at((await service.submit([bet(1)]))[0])  # while the filter fills
        store.release.set()
        assert await asyncio.wait_for(service.keys_learned(), 5)
        service.writer._overlay.restart()  # bet 1's rows are then known from the filter and the store only
        [again] = await service.submit([bet(1)])
        assert replayed_at(again) == sequence, again
    finally:
        await service.stop()


async def test_a_failed_fill_is_counted_and_tried_again() -> None:
    store = PagesFromBeforeTheWrites()
    store.page_failures = 1
    registry = CollectorRegistry()
    service = LedgerService(store, WriterLimits(), clock=FakeClock(), metrics=LedgerMetrics(registry))
    with capture_logs() as logs:
        await service.start()
        try:
            assert registry.get_sample_value("ledger_key_filter_filled") == 0  # filling
            store.release.set()
            assert await asyncio.wait_for(service.keys_learned(), 5)  # retried after 1 s
            assert registry.get_sample_value("ledger_key_filter_filled") == 1
        finally:
            await service.stop()
    assert [e["error"] for e in logs if e["event"] == "ledger_key_filter_fill_failed"] == ["OSError('disk I/O error')"]
    assert registry.get_sample_value("ledger_task_failures_total", {"task": "key_filter"}) == 1
    assert registry.get_sample_value("ledger_task_failing", {"task": "key_filter"}) == 0


async def test_the_fill_pauses_after_every_page_to_keep_its_share_of_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()
    service = service_on(store)
    await service.start()
    try:
        for command in traffic():
            await service.submit([command])
    finally:
        await service.stop()
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(overlay, "KEY_FILL_PACE", Pace(page=3, loop_share=0.25, sleep=pause))
    counts = [await store.count_keys(table) or 0 for table in overlay.FILTERED]
    service = service_on(store)
    await service.start()
    try:
        assert await asyncio.wait_for(service.keys_learned(), 5)
    finally:
        await service.stop()
    assert sum(counts) > 6 and len(pauses) == sum(-(-n // 3) for n in counts), (counts, pauses)
    assert all(p > 0 for p in pauses)  # three times each page's own time: a quarter of the loop


async def test_copies_sharing_one_store_make_no_filter_and_replay_each_others_bets(
    storage: Callable[[], Store],
) -> None:
    """A writer-lease pair: two copies over one store, each writing only while it holds the lease.
    A filter made at one copy's start would miss what the other wrote later: neither makes one."""
    copies = [service_on(storage(), passive=True) for _ in range(2)]
    first, second = copies
    for copy in copies:
        await copy.start()
    try:
        assert not await second.keys_learned() and math.isnan(filter_filled(second))
        await first.failover.take_over()
        for command in traffic()[:4]:
            await first.submit([command])
        sequence = booked_at((await first.submit([bet(1)]))[0])
        first.failover.step_down("the lease was lost")
        await second.failover.take_over()
        [again] = await second.submit([bet(1)])
        assert replayed_at(again) == sequence, again
    finally:
        for copy in copies:
            await copy.stop()
