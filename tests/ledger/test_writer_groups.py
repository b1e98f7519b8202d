"""How the writer forms groups: it takes a group only once a pipeline slot is free, so the jobs
that arrive while a commit runs all join the next group (not a first one taken alone while the
rest queue behind it); with `pipeline_depth = 2` the next group is judged while one commits. The
store sets the depth: 1 where its commit runs in this interpreter, 2 on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from core_ledger.domain import Command
from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.store import MemoryStore, Store
from core_ledger.store.base import Head, JournalRow, Rows
from core_ledger.store.postgres import PostgresStore
from core_ledger.writer import Result, WriterLimits
from tests.support.clock import FakeClock
from tests.support.journal_commands import cmd, traffic


def bet(i: int) -> Command:
    return cmd(
        "bet", f"gb{i}", id=f"gb{i}", player_id="p1", currency="EUR", game_id="slots", amount_minor=10, round_id="rg"
    )


def status(result: Result) -> int | str:
    return result[0] if isinstance(result, tuple) else repr(result)


class SlowCommits:
    """Wraps a store's commits: each takes `pause_s` more; the number of journal rows of every
    commit, in order; "commit" appended to `events` as each starts."""

    def __init__(self, store: Store, events: list[str] | None = None) -> None:
        self.events = [] if events is None else events
        self.pause_s = 0.0
        self.group_sizes: list[int] = []
        self.committing = asyncio.Event()
        self._commit = store.commit
        setattr(store, "commit", self.commit)  # noqa: B010 (this store's commits, whatever its backend)

    async def commit(self, journal: Sequence[JournalRow], rows: Rows, head: Head) -> None:
        self.events.append("commit")
        self.committing.set()
        await asyncio.sleep(self.pause_s)
        self.group_sizes.append(len(journal))
        await self._commit(journal, rows, head)


async def groups_of_bets_arriving_during_a_commit(
    limits: WriterLimits, store: Store | None = None
) -> tuple[list[int], list[Result]]:
    """One bet commits slowly; five more arrive one by one while it does. The group sizes, and
    each bet's result (on a memory store unless one is given)."""
    store = store or MemoryStore()
    commits = SlowCommits(store)
    service = LedgerService(store, limits, clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry()))
    await service.start()
    try:
        for command in traffic()[:4]:
            await service.submit([command])
        commits.pause_s, commits.group_sizes = 0.3, []
        commits.committing.clear()
        first = asyncio.create_task(service.submit([bet(0)]))
        await asyncio.wait_for(commits.committing.wait(), 5)
        later = []
        for i in range(1, 6):
            later.append(asyncio.create_task(service.submit([bet(i)])))
            await asyncio.sleep(0.02)  # each its own request, arriving while the first commits
        results = await asyncio.wait_for(asyncio.gather(first, *later), 10)
    finally:
        await service.stop()
    return commits.group_sizes, [result for [result] in results]


async def test_bets_arriving_during_a_commit_form_one_group() -> None:
    sizes, results = await groups_of_bets_arriving_during_a_commit(WriterLimits())
    assert [status(r) for r in results] == [201] * 6
    assert sizes == [1, 5]  # not [1, 1, 4]: the second group is taken once the first committed


async def test_a_second_pipeline_slot_judges_the_next_group_during_a_commit() -> None:
    sizes, results = await groups_of_bets_arriving_during_a_commit(WriterLimits(pipeline_depth=2))
    assert [status(r) for r in results] == [201] * 6
    assert sizes[0] == 1 and sum(sizes) == 6 and len(sizes) >= 3  # judged while the first committed


async def test_the_store_sets_how_many_groups_are_in_flight(storage: Callable[[], Store]) -> None:
    """PostgreSQL commits in the server, so the writer judges the next group meanwhile; SQLite's
    commit needs this interpreter (and the memory store is the reference), so the next group waits."""
    store = storage()
    sizes, results = await groups_of_bets_arriving_during_a_commit(WriterLimits(), store)
    assert [status(r) for r in results] == [201] * 6
    if isinstance(store, PostgresStore):
        assert sizes[0] == 1 and sum(sizes) == 6 and len(sizes) >= 3, sizes  # judged during the commit
    else:
        assert sizes == [1, 5]


async def test_limits_that_set_a_depth_override_the_stores(storage: Callable[[], Store]) -> None:
    store = storage()
    sizes, results = await groups_of_bets_arriving_during_a_commit(WriterLimits(pipeline_depth=1), store)
    assert [status(r) for r in results] == [201] * 6
    assert sizes == [1, 5]


async def test_at_depth_two_a_commit_is_sent_before_the_next_group_is_judged() -> None:
    """Judging may await nothing (every row cached, or known absent from the key filter); the
    previous group's commit must still go out first, or the two would run one after the other."""
    events: list[str] = []

    def clock() -> datetime:  # the writer reads the clock once per group it judges
        events.append("judge")
        return datetime(2026, 1, 1, tzinfo=UTC)

    store = MemoryStore()
    commits = SlowCommits(store, events)
    limits = WriterLimits(commit_batch_max=1, pipeline_depth=2)
    service = LedgerService(store, limits, clock=clock, metrics=LedgerMetrics(CollectorRegistry()))
    await service.start()
    try:
        assert await service.keys_learned()
        for command in [*traffic()[:4], bet(0)]:  # the player, the game, a deposit, the round: cached
            await service.submit([command])
        commits.pause_s = 0.05
        events.clear()
        results = await asyncio.wait_for(asyncio.gather(*(service.submit([bet(i)]) for i in (1, 2, 3))), 10)
    finally:
        await service.stop()
    assert [status(r) for [r] in results] == [201] * 3
    assert events == ["judge", "commit"] * 3


async def test_a_jackpot_created_and_paid_out_in_one_group_commits_as_one_by_one() -> None:
    """A group is planned before any of it applies: the payout found no jackpot to learn its
    currency from, named no wallet, and the writer halted on a row it had not loaded. Sent one by
    one, both commit; in one group (on a cold cache, as after a restart) they must too."""
    store = MemoryStore()
    warm = LedgerService(store, WriterLimits(), clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry()))
    await warm.start()
    try:
        for command in [*traffic()[:3], bet(0)]:  # p1 funded, and a bet of p1 in round "rg"
            assert status((await warm.submit([command]))[0]) in (200, 201)
    finally:
        await warm.stop()
    service = LedgerService(store, WriterLimits(), clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry()))
    await service.start()
    try:
        results = await service.submit(
            [
                cmd(
                    "jackpot_create",
                    "jackpot:j2",
                    jackpot_id="j2",
                    currency="EUR",
                    seed_minor=500,
                    contribution_ppm=0,
                    game_ids=["other"],
                ),
                cmd("jackpot_payout", "jp2", id="jp2", jackpot_id="j2", player_id="p1", round_id="rg"),
            ]
        )
        assert [status(r) for r in results] == [201, 201]
        assert service.halted is None
    finally:
        await service.stop()


async def test_the_write_queue_is_bounded_in_commands_not_in_requests() -> None:
    """`queue_depth_max` bounded jobs, and a batch is one job of up to 256 actions: with a bound of
    4, 1,024 actions waited for a slow disk before the first 503, and the queue gauge said 4."""
    from shared.errors import Unavailable

    from tests.support.clock import FakeClock
    from tests.support.journal_commands import cmd

    store = MemoryStore()
    service = LedgerService(
        store, WriterLimits(queue_depth_max=300), clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry())
    )
    await service.start()
    gate, taken = asyncio.Event(), asyncio.Event()
    real_commit = store.commit

    async def slow_commit(*args: Any, **kwargs: Any) -> Any:  # a slow disk: the writer stays busy
        taken.set()
        await gate.wait()
        return await real_commit(*args, **kwargs)

    store.commit = slow_commit  # type: ignore[method-assign]  # the disk, slowed for this test
    first = asyncio.ensure_future(
        service.submit([cmd("player_create", "player:p1", player_id="p1", currencies=["EUR"])])
    )
    await asyncio.wait_for(taken.wait(), 5)  # the writer took it and waits on the commit
    batches: list[asyncio.Future[Any]] = []
    try:
        for b in range(4):
            batch = [
                cmd("deposit", f"d{b}-{i}", id=f"d{b}-{i}", amount_minor=1, player_id="p1", currency="EUR")
                for i in range(100)
            ]
            batches.append(asyncio.ensure_future(service.submit(batch)))
            await asyncio.sleep(0)  # it queues, or is refused
        refused = [f for f in batches if f.done() and isinstance(f.exception(), Unavailable)]
        assert len(refused) == 1 and service.queue_depth == 300, (len(refused), service.queue_depth)
    finally:
        gate.set()
        store.commit = real_commit  # type: ignore[method-assign]  # restored
        await asyncio.gather(first, *batches, return_exceptions=True)
        await service.stop()
    assert service.queue_depth == 0
