"""Whole-journal checks over a store, for the auditor, `croupier ledger verify`/`compare`/`rebuild`
and the tests: walk the chain and check it (`verify_store`), recompute every derived table from
the journal alone with the live fold (`fold`), and name the tables whose stored rows differ from that
rebuild (`rebuild_differences`). Each reads the journal page by page.

Two rebuilds: `replay_journal` applies the journal to an empty store page by page, as a standby
applies its primary's (rows it needs are loaded from that store, the cache is dropped beyond
`REBUILD_ROWS_CACHED`), so its memory is bounded whatever the journal's length: `croupier ledger
rebuild` uses it. `rebuild_state` folds everything into one in-memory `State` (its memory grows
with the derived tables: a million players' rows, every history row), for tests and small stores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from shared.gc_pause import CollectionsPaused

from core_ledger.domain import ChainCheck, State, fold
from core_ledger.domain.state import TABLES
from core_ledger.overlay import Overlay
from core_ledger.replica_apply import command_of
from core_ledger.store import Head, JournalRow, Store

JOURNAL_PAGE = 1000  # rows per query when streaming, verifying or rebuilding
REBUILD_ROWS_CACHED = 200_000  # rows a replay keeps in memory between commits (dropped beyond)
# Entries per commit of a replay: a commit per page of 1,000 paid an fsync and rewrote the hot index
# pages (the system accounts' history, the summaries' indexes) a thousand times per million entries.
REPLAY_COMMIT_ENTRIES = 20_000
# Page cache of each connection to the scratch file a rebuild replays into (see `croupier ledger
# rebuild`): with the bulk store's default of 1 GiB a rebuild of 1M entries peaked at 1.5 GB RSS.
REBUILD_CACHE_MIB = 256


@dataclass(frozen=True)
class Pace:
    """How a walk shares the event loop of a serving ledger: pages of `page` entries (checking
    one holds the loop: ~5 ms for 100 entries here, against ~50 ms for 1000), and after each page a
    pause so that checking takes at most `loop_share` of the walk's time. A walk of a million
    entries takes about a minute of CPU: run flat out on the loop at start-up, it halved the
    bets a loaded ledger took while it ran (see docs/decisions/paced-chain-audits.md)."""

    page: int = 100
    loop_share: float = 1.0  # 1: no pause (yield between pages only)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def __post_init__(self) -> None:
        if self.page < 1 or not 0 < self.loop_share <= 1:
            raise ValueError("a pace needs page >= 1 and 0 < loop_share <= 1")

    async def after_page(self, checking_s: float) -> None:
        await self.sleep(checking_s * (1 - self.loop_share) / self.loop_share)


async def verify_store(
    store: Store, up_to_sequence: int | None = None, *, since: Head | None = None, pace: Pace | None = None
) -> dict[str, Any]:
    """Walk the journal (up to a sequence: a live journal keeps growing), page by page, checking
    sequence, links, balance and hashes. With `since` (a head verified before), only the entries
    after it, the first of them linked to its hash. With `pace`, in its pages and with its pauses
    (a serving ledger); without, in pages of JOURNAL_PAGE at full speed (offline tools)."""
    start = since or Head()
    check = ChainCheck(head_sequence=start.sequence, head_hash=start.hash)
    page = JOURNAL_PAGE if pace is None else pace.page

    def read_after(after: int) -> asyncio.Future[list[tuple[int, str]]] | None:
        if up_to_sequence is not None and after >= up_to_sequence:
            return None
        limit = page if up_to_sequence is None else min(page, up_to_sequence - after)
        return asyncio.ensure_future(store.journal(after, limit))

    reading = read_after(start.sequence)
    try:
        while reading is not None:
            rows = await reading
            # The next page is read (in the store's thread or server) while this one is checked.
            reading = read_after(rows[-1][0]) if rows else None
            started = time.perf_counter()
            if not rows or not check.feed(rows):
                break
            if pace is not None:
                await pace.after_page(time.perf_counter() - started)
    finally:
        await _abandon(reading)
    return check.report()


async def _abandon(reading: asyncio.Future[Any] | None) -> None:
    """A read ahead that is no longer wanted (the walk stopped, or failed): cancelled and waited
    for, so that it neither outlives the walk nor leaves an exception nobody retrieves."""
    if reading is not None:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)


async def replay_journal(
    source: Store, target: Store, *, rows_cached: int = REBUILD_ROWS_CACHED, commit_entries: int = REPLAY_COMMIT_ENTRIES
) -> Head:
    """Apply `source`'s journal to the empty `target`, page by page, with the live fold (`fold`), one
    commit per `commit_entries` entries or so: `target`'s derived tables are then the rebuild.
    Memory: `commit_entries` entries and at most about `rows_cached` rows, however long the
    journal. The head replayed."""
    with CollectionsPaused() as gc_points:  # one collection per commit (see shared/gc_pause.py)
        return await _replay(source, target, rows_cached, commit_entries, gc_points)


async def _replay(
    source: Store, target: Store, rows_cached: int, commit_entries: int, gc_points: CollectionsPaused
) -> Head:
    overlay, head, stored = Overlay(target), Head(), Head()
    journal: list[JournalRow] = []
    reading: asyncio.Future[list[tuple[int, str]]] | None = asyncio.ensure_future(source.journal(0, JOURNAL_PAGE))
    # At most one commit in flight, folded past while it runs (in the target's thread or server).
    committing: asyncio.Future[None] | None = None
    try:
        while True:
            assert reading is not None  # set again below until the journal ends
            rows = await reading
            # The next page is read while this one is folded.
            reading = asyncio.ensure_future(source.journal(rows[-1][0], JOURNAL_PAGE)) if rows else None
            if rows:
                head = await _fold_page(overlay, rows, journal)
            if journal and (len(journal) >= commit_entries or not rows):
                if committing is not None:
                    await committing  # commits in order, one in flight
                    overlay.rows.forget_entries(stored.sequence)  # entries the target now holds
                committing = asyncio.ensure_future(target.commit(journal, overlay.rows.take_dirty(), head))
                stored, journal = head, []
                if overlay.rows.size() > rows_cached:
                    # Dropped only once the target holds every row: a row loaded again must be
                    # the last one written, never one still in flight.
                    await committing
                    overlay.restart()
                gc_points.collect()
            if not rows:
                if committing is not None:
                    await committing
                return head
    finally:
        await _abandon(reading)
        if committing is not None and not committing.done():
            # The replay failed while a commit ran: waited for, never left running; the
            # failure that stopped the replay is the one raised.
            await asyncio.gather(committing, return_exceptions=True)


async def _fold_page(overlay: Overlay, rows: list[tuple[int, str]], journal: list[JournalRow]) -> Head:
    """Apply one page of the source's journal to the overlay, appended to `journal`; its last head."""
    entries = [orjson.loads(text) for _, text in rows]
    commands = [command_of(e) for e in entries]
    await overlay.load(commands)  # most rows of the page, a few queries
    for entry, command in zip(entries, commands, strict=True):
        # Rows named only once an earlier entry of the page is applied (a bonus granted,
        # then claimed): loaded now, from what this replay already holds. No query when all
        # are known.
        await overlay.load([command])
        fold(overlay.rows, entry)
    journal += [JournalRow(seq, e["transaction"]["id"], text) for (seq, text), e in zip(rows, entries, strict=True)]
    last = entries[-1]
    return Head(last["sequence"], last["hash"], last["epoch"])


async def rebuild_state(store: Store) -> State:
    """Every derived table, recomputed from the journal alone with the live fold (`fold`)."""
    state, after = State(complete=True), 0
    while True:
        rows = await store.journal(after, JOURNAL_PAGE)
        if not rows:
            return state
        for _, text in rows:
            fold(state, orjson.loads(text))
        after = rows[-1][0]


async def rebuild_differences(store: Store) -> list[str]:
    """Tables whose live rows differ from the rebuild (empty when the two are equal)."""
    state = await rebuild_state(store)
    return [t for t in TABLES if await store.dump(t) != state.rows(t)]
