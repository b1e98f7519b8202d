"""Whole-journal checks over a store, for the auditor, `croupier ledger verify`/`compare`/`rebuild`
and the tests: walk the chain and check it (`verify_store`), recompute every derived table from
the journal alone with the live `evolve`, and name the tables whose stored rows differ from that
rebuild (`rebuild_differences`). Each reads the journal page by page.

Two rebuilds: `replay_journal` applies the journal to an empty store page by page, as a standby
applies its primary's (rows it needs are loaded from that store, the cache is dropped beyond
`REBUILD_ROWS_CACHED`), so its memory is bounded whatever the journal's length: `croupier ledger
rebuild` uses it. `rebuild_state` folds everything into one in-memory `State` (its memory grows
with the derived tables: a million players' rows, every history row), for tests and small stores."""

from __future__ import annotations

from typing import Any

import orjson

from core_ledger.domain import ChainCheck, State, evolve
from core_ledger.domain.state import TABLES
from core_ledger.overlay import Overlay
from core_ledger.replica_apply import command_of
from core_ledger.store import Head, JournalRow, Store

JOURNAL_PAGE = 1000  # rows per query when streaming, verifying or rebuilding
REBUILD_ROWS_CACHED = 200_000  # rows a replay keeps in memory between pages (dropped beyond)


async def verify_store(store: Store, up_to_sequence: int | None = None, *, since: Head | None = None) -> dict[str, Any]:
    """Walk the journal (up to a sequence: a live journal keeps growing), page by page, checking
    sequence, links, balance and hashes. With `since` (a head verified before), only the entries
    after it, the first of them linked to its hash."""
    start = since or Head()
    check, after = ChainCheck(head_sequence=start.sequence, head_hash=start.hash), start.sequence
    while up_to_sequence is None or after < up_to_sequence:
        limit = JOURNAL_PAGE if up_to_sequence is None else min(JOURNAL_PAGE, up_to_sequence - after)
        rows = await store.journal(after, limit)
        if not rows or not check.feed(rows):
            break
        after = rows[-1][0]
    return check.report()


async def replay_journal(source: Store, target: Store, *, rows_cached: int = REBUILD_ROWS_CACHED) -> Head:
    """Apply `source`'s journal to the empty `target`, one commit per page, with the live `evolve`:
    `target`'s derived tables are then the rebuild. Memory: a page and at most about
    `rows_cached` rows, however long the journal. The head replayed."""
    overlay, head, after = Overlay(target), Head(), 0
    while True:
        rows = await source.journal(after, JOURNAL_PAGE)
        if not rows:
            return head
        entries = [orjson.loads(text) for _, text in rows]
        commands = [command_of(e) for e in entries]
        await overlay.load(commands)  # most rows of the page, a few queries
        for entry, command in zip(entries, commands, strict=True):
            # Rows named only once an earlier entry of the page is applied (a bonus granted, then
            # claimed): loaded now, from what this replay already wrote. No query when all are known.
            await overlay.load([command])
            evolve(overlay.rows, entry)
        last = entries[-1]
        head = Head(last["sequence"], last["hash"], last["epoch"])
        journal = [JournalRow(seq, e["transaction"]["id"], text) for (seq, text), e in zip(rows, entries, strict=True)]
        await target.commit(journal, overlay.rows.take_dirty(), head)
        overlay.rows.forget_entries(head.sequence)
        if overlay.rows.size() > rows_cached:
            overlay.restart()
        after = rows[-1][0]


async def rebuild_state(store: Store) -> State:
    """Every derived table, recomputed from the journal alone with the live `evolve`."""
    state, after = State(complete=True), 0
    while True:
        rows = await store.journal(after, JOURNAL_PAGE)
        if not rows:
            return state
        for _, text in rows:
            evolve(state, orjson.loads(text))
        after = rows[-1][0]


async def rebuild_differences(store: Store) -> list[str]:
    """Tables whose live rows differ from the rebuild (empty when the two are equal)."""
    state = await rebuild_state(store)
    return [t for t in TABLES if await store.dump(t) != state.rows(t)]
