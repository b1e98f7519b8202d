"""Derived rows the SQLite store holds in memory behind its journal, written many groups at a time.

Only the journal must be durable before a bet is answered: every derived table is folded from it.
So a commit writes its journal rows and head, and its derived rows join `HeldRows` (the latest
version of each key; for a table of sums, the deltas added up). Every `groups_max`-th commit, or
once `rows_max` rows are held, the commit also writes everything held and moves the watermark
(`meta.derived_sequence`) to its head, in the same transaction. A player's balance, history leaf
and round then cost one page write per flush instead of one per bet
(docs/decisions/derived-rows-flushed-behind-the-journal.md).

Only the store's writer thread changes a `HeldRows`, and only after a transaction ended: what it
holds is always committed. The writer's loads read it from the event loop (`lookup`, between two
reads of `flushes`, see `SqliteStore.load`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core_ledger.domain.state import ADDITIVE, Doc, Key
from core_ledger.store.base import Rows

GROUPS_MAX = 32  # commits whose derived rows one flush writes at most (2,000 bets or so under load)
# Rows held at most: a commit that would hold more writes them. It bounds the longest commit as much as
# memory: a flush of 8,000 rows took about 85 ms on a 2-core machine, and every request in flight
# waits for it (batch mode's p99 at 50,000 rows: 507 to 549 ms; at 8,000: 319 to 331, the commit
# before holding any: 286 to 295).
ROWS_MAX = 8_000
# ...and fewer when writing them is slow: a flush is bounded by the time it holds the writer, as
# measured on the last flushes. Under HTTP load a row costs two to three times what it costs alone
# (the event loop holds the GIL between the flush's statements), and at ten million entries more
# again (pages read from disk): 32 groups of rows then took 55 to 100 ms, and p99 doubled
# (docs/decisions/derived-rows-flushed-behind-the-journal.md).
FLUSH_SECONDS_TARGET = 0.025
ROWS_FLOOR = 500  # the time bound never asks for smaller flushes than this (unless `rows_max` does)
MEASURED_ROWS_MIN = 100  # a flush this small says little about the next one's cost per row


@dataclass(slots=True)
class HeldRows:
    groups_max: int = GROUPS_MAX
    rows_max: int = ROWS_MAX
    tables: dict[str, dict[Key, Doc]] = field(default_factory=dict)
    groups: int = 0  # commits whose rows are held
    base: int = 0  # the watermark while rows are held: the stored head when the first was
    head: int = 0  # the head of the last commit whose rows are held
    count: int = 0  # rows held
    flushes: int = 0  # moved forward before `tables` is emptied by a flush (see `SqliteStore.load`)
    seconds_per_row: float = 0.0  # what writing a held row took in the last flushes (0: not measured yet)

    def due(self, rows: Rows) -> bool:
        """Whether the commit of `rows` must write everything held (and its own rows)."""
        return self.groups + 1 >= self.groups_max or self.count + sum(map(len, rows.values())) >= self.rows_bound()

    def rows_bound(self) -> int:
        """Rows held at most now: `rows_max`, or fewer if at the measured cost per row a flush of
        that many would take longer than FLUSH_SECONDS_TARGET (never fewer than ROWS_FLOOR)."""
        if self.seconds_per_row <= 0:
            return self.rows_max
        return min(self.rows_max, max(ROWS_FLOOR, int(FLUSH_SECONDS_TARGET / self.seconds_per_row)))

    def measured(self, rows: int, seconds: float) -> None:
        """A flush wrote `rows` rows in `seconds`: the cost per row the next bound is taken from
        (the mean of this flush and those before, halved each time: one slow flush moves it, one
        fast one does not undo a slow disk)."""
        if rows < MEASURED_ROWS_MIN:
            return
        per_row = seconds / rows
        self.seconds_per_row = per_row if self.seconds_per_row <= 0 else (self.seconds_per_row + per_row) / 2

    def with_rows(self, rows: Rows) -> Rows:
        """What a flushing commit writes: everything held, merged with its own `rows`."""
        merged = {table: dict(items) for table, items in self.tables.items()}
        for table, items in rows.items():
            _merge(merged.setdefault(table, {}), table, items)
        return {table: list(items.items()) for table, items in merged.items() if items}

    def hold(self, rows: Rows, base: int, head: int) -> None:
        """Keep the rows of a group committed at `head` on a store whose watermark is `base`
        (called once its transaction committed)."""
        if not self.groups:
            self.base = base
        self.head = head
        for table, items in rows.items():
            held = self.tables.get(table)
            if held is None:
                held = self.tables[table] = {}
            before = len(held)
            _merge(held, table, items)
            self.count += len(held) - before
        self.groups += 1

    def clear(self) -> None:
        """Everything held was written (or is given up): `flushes` moves first, so that a load that
        read storage before the flush and `tables` after it sees the move and reads again."""
        self.flushes += 1
        self.tables = {}
        self.groups = self.count = 0

    def lookup(self, table: str, key: Key) -> tuple[bool, Doc | None]:
        """(held, row): the held version of a row, if one is held."""
        held = self.tables.get(table)
        if held is None or key not in held:
            return False, None
        return True, held[key]


def _merge(into: dict[Key, Doc], table: str, items: list[tuple[Key, Doc]]) -> None:
    if table not in ADDITIVE:
        into.update(items)
        return
    for key, deltas in items:  # sums: the deltas of both, added member by member
        before = into.get(key)
        into[key] = (
            deltas
            if before is None
            else {m: before.get(m, 0) + v for m, v in deltas.items()}
            | {m: v for m, v in before.items() if m not in deltas}
        )
