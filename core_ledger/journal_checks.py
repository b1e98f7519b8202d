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

import time
from typing import Any

import orjson

from shared.gc_pause import CollectionsPaused

from core_ledger.domain import ChainCheck, State, fold
from core_ledger.domain.state import TABLES
from core_ledger.overlay import JOURNAL_PAGE, Overlay
from core_ledger.pace import Pace
from core_ledger.store import Head, JournalRow, Store

REBUILD_ROWS_CACHED = 200_000  # rows a replay keeps in memory between commits (dropped beyond)
# Entries per commit of a replay: a commit per page of 1,000 paid an fsync and rewrote the hot index
# pages (the system accounts' history, the summaries' indexes) a thousand times per million entries.
REPLAY_COMMIT_ENTRIES = 20_000
# Page cache of each connection to the scratch file a rebuild replays into (see `croupier ledger
# rebuild`): with the bulk store's default of 1 GiB a rebuild of 1M entries peaked at 1.5 GB RSS.
REBUILD_CACHE_MIB = 256


async def verify_store(
    store: Store, up_to_sequence: int | None = None, *, since: Head | None = None, pace: Pace | None = None
) -> dict[str, Any]:
    """Walk the journal (up to a sequence: a live journal keeps growing; else up to the stored
    head), page by page, checking sequence, links, balance and hashes, and that the walk reaches
    that sequence: a journal whose last entries are gone is not ok (`first_bad_sequence`: the first
    one missing). With `since` (a head verified before), only the entries after it, the first of
    them linked to its hash. With `pace`, in its pages and with its pauses (a serving ledger);
    without, in pages of JOURNAL_PAGE at full speed (offline tools)."""
    start = since or Head()
    check, after = ChainCheck(head_sequence=start.sequence, head_hash=start.hash), start.sequence
    page = JOURNAL_PAGE if pace is None else pace.page
    while up_to_sequence is None or after < up_to_sequence:
        limit = page if up_to_sequence is None else min(page, up_to_sequence - after)
        rows = await store.journal(after, limit)
        started = time.perf_counter()
        if not rows or not check.feed(rows):
            break
        after = rows[-1][0]
        if pace is not None:
            await pace.after_page(time.perf_counter() - started)
    if check.ok:  # every entry there chained: the journal must also reach the head it should have
        end = up_to_sequence if up_to_sequence is not None else (await store.head()).sequence
        if check.head_sequence != end:  # cut short (rows deleted), or rows beyond the stored head
            check.first_bad_sequence = check.head_sequence + 1
    return check.report()


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
    overlay, head, after = Overlay(target), Head(), 0
    journal: list[JournalRow] = []
    while True:
        rows = await source.journal(after, JOURNAL_PAGE)
        if rows:
            entries = await overlay.fold_page(rows)
            last = entries[-1]
            head = Head(last["sequence"], last["hash"], last["epoch"])
            journal += [
                JournalRow(seq, e["transaction"]["id"], text) for (seq, text), e in zip(rows, entries, strict=True)
            ]
            after = rows[-1][0]
        if journal and (len(journal) >= commit_entries or not rows):
            # Rows changed since the last commit stay in the overlay until this one: what a load
            # above found there was ahead of the target, never behind it.
            await target.commit(journal, overlay.rows.take_dirty(), head)
            journal = []
            overlay.rows.forget_entries(head.sequence)
            if overlay.rows.size() > rows_cached:
                overlay.restart()
            gc_points.collect()
        if not rows:
            return head


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
