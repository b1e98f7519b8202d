"""The overlay: what one ledger copy's single mutator (the writer on a primary, the replica apply
on a standby) holds ahead of storage, and the heads it stands on.

`rows` is a cache of derived rows only that mutator changes, so load-then-write is serializable;
`head` is the head of the last judged (or applied) entry, which may be ahead of `committed`, the
head of the last durably committed one (what readers see); `commits` is a waitable copy of the
committed sequence (journal long polls wait on it). `load` brings the rows commands need in from
the store; `reload` restarts everything from what the store holds.

Planning which rows a command needs (`rows_needed`) is pure: when it raises, that is a bug, not an
outage, so `load` raises `PlanningFailed` (naming the command) rather than the error a failing
store read raises, and the writer halts on it as it does on a judging bug.

`absent` (core_ledger/key_filter.py), once `learn_keys` filled it, tells which keys of the tables
rows are created in (`FILTERED`) storage certainly does not hold: `load` records those as absent
without asking the store, so a group of fresh bets on cached players needs no store read at all.
The filter is made (`begin_learning`) before the first write and filled in the background while
the ledger serves: until then every key is looked up. It stays a superset of the stored keys
because every row a group writes goes through `take_dirty` (which adds its key) before its commit,
from the moment the filter is made; a commit that fails or whose outcome is unknown leaves extra
keys in it, which only cost a lookup. A copy whose store another copy writes (`passive`) never
makes one.
"""

from __future__ import annotations

import time
from datetime import date, timedelta

import orjson
import structlog

from core_ledger.domain import (
    PASSES_MAX,
    PLANNED_FROM,
    Command,
    InvariantBroken,
    State,
    entry_command,
    fold,
    rows_needed,
)
from core_ledger.domain.reports import SUMS_OF, report_units
from core_ledger.domain.state import TABLES, Doc, Key
from core_ledger.key_filter import KeyFilter
from core_ledger.pace import Pace
from core_ledger.store import Head, Store
from core_ledger.watermark import Watermark

log = structlog.get_logger("croupier.ledger")

# The tables a fresh command looks up keys in that are almost always absent: its idempotency rows
# and the rounds it may open (scoped and unscoped). `rounds` gets no new key now, but a bet asks
# for the unscoped round of its id, which is absent but on stores journaled before scoping.
FILTERED = ("idem", "bets", "client_rounds", "rounds")
# The key filter is filled in pages of keys (a page: ~12 ms of the loop), taking at most a quarter of
# the loop meanwhile: flat out, filling 10M keys held the loop for a minute and the serving ledger's
# bets went through at a fraction of their rate (docs/decisions/writer-key-filter.md).
KEY_FILL_PACE = Pace(page=4_000, loop_share=0.25)
# The rows of one report unit the writer reads at most. Only a bet opens a row in a unit that holds
# `REPORT_UNIT_ROWS_MAX` (10,000) no more, so only wins on many rounds of earlier days, or rows
# written before that bound was kept, pass this: every draft adding to such a unit is refused.
REPORT_UNIT_READ_MAX = 100_000
JOURNAL_PAGE = 1000  # journal rows per query when folding the journal's tail (and in journal_checks)


class PlanningFailed(Exception):
    """`rows_needed` raised for `command`: a bug in the pure planning step (never a store failure)."""

    def __init__(self, command: Command, error: BaseException) -> None:
        super().__init__(repr(error))
        self.command = command
        self.error = error


class Overlay:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.rows = State(complete=False)
        self.head = Head()  # of the last judged entry (the overlay's view)
        self.committed = Head()  # of the last durably committed entry (what readers see)
        self.commits = Watermark()  # the committed head sequence (journal long polls wait on it)
        self.keys: KeyFilter | None = None  # fed every key written since `begin_learning`
        self.absent: KeyFilter | None = None  # `keys` once filled: None, every key not cached is looked up

    async def begin_learning(self) -> bool:
        """Start feeding a new key filter with every key written from now on (`take_dirty`), sized
        for the keys the store holds; `learn_keys` then fills it with those. Call it before any
        write. False, and no filter, when the backend cannot list its keys."""
        self.absent = self.keys = None
        counts = {table: await self.store.count_keys(table) for table in FILTERED}
        if any(count is None for count in counts.values()):
            log.info("ledger_key_filter_unsupported", store=type(self.store).__name__)
            return False
        self.keys = KeyFilter(FILTERED)
        for table, count in counts.items():
            self.keys.expect(table, count or 0)
        return True

    async def learn_keys(self, pace: Pace | None = None) -> None:
        """Add every key the store holds in `FILTERED` tables to the filter `begin_learning` made,
        a page at a time at `pace` (`KEY_FILL_PACE` by default; writes go on meanwhile: their keys
        are added by `take_dirty`), then trust it (`absent`). Raises what the store raises;
        calling it again is harmless."""
        keys = self.keys
        if keys is None:
            return
        pace = pace or KEY_FILL_PACE
        started, added = time.perf_counter(), 0
        for table in FILTERED:
            after: Key | None = None
            while True:
                page_started = time.perf_counter()
                page = await self.store.key_page(table, after, pace.page)
                if not page:
                    break
                keys.add_all(table, page)  # on the event loop, as `take_dirty`: one thread sets bits
                added += len(page)
                after = page[-1]
                await pace.after_page(time.perf_counter() - page_started)
        if self.keys is keys:
            self.absent = keys
        log.info(
            "ledger_key_filter_filled",
            keys=added,
            bytes=keys.size_bytes(),
            seconds=round(time.perf_counter() - started, 3),
        )

    def take_dirty(self) -> dict[str, list[tuple[Key, Doc]]]:
        """The rows changed since the last call (`State.take_dirty`), their keys added to the key
        filter first: storage may hold them from the moment their commit starts."""
        dirty = self.rows.take_dirty()
        if self.keys is not None:
            for table in FILTERED:
                written = dirty.get(table)
                if written:
                    self.keys.add_all(table, [key for key, _ in written])
        return dirty

    def restart(self) -> None:
        """Drop every cached row (they are loaded again lazily); the heads stay."""
        self.rows = State(complete=False)

    async def reload(self) -> Head:
        """An empty overlay and both heads from what the store holds. On SQLite a read queues
        behind a commit still running on the writer connection, so it sees its outcome. The
        rows are dropped first: if reading the head fails, the heads stay as they were. Derived
        rows the store lost behind its journal (a crash, a failed write) are folded again first."""
        self.restart()
        await self.catch_up()
        stored = await self.store.head()
        self.head = self.committed = stored
        self.commits.advance(stored.sequence)
        return stored

    async def catch_up(self) -> int:
        """Fold the journal entries the store's derived rows are behind (`Store.derived_sequence`)
        into them, up to the stored head, in one write; how many. Their rows pass through this
        overlay, which is empty again after."""
        after, head = await self.store.derived_sequence(), await self.store.head()
        if after >= head.sequence:
            return 0
        started, first = time.perf_counter(), after
        while after < head.sequence:
            rows = await self.store.journal(after, min(JOURNAL_PAGE, head.sequence - after))
            if not rows:
                raise InvariantBroken(f"the journal ends at {after}, before its stored head {head.sequence}")
            await self.fold_page(rows)
            after = rows[-1][0]
        await self.store.write_derived(self.rows.take_dirty(), head.sequence)
        self.restart()
        log.warning(
            "ledger_derived_caught_up",
            from_sequence=first,
            head_sequence=head.sequence,
            duration_s=round(time.perf_counter() - started, 3),
        )
        return head.sequence - first

    async def fold_page(self, rows: list[tuple[int, str]]) -> list[dict]:
        """Fold a page of journal rows (sequence, text) into the cached rows, in order, loading what
        each entry needs first; the entries."""
        entries = [orjson.loads(text) for _, text in rows]
        commands = [entry_command(e) for e in entries]
        await self.load(commands)  # most rows of the page, a few queries
        for entry, command in zip(entries, commands, strict=True):
            # Rows named only once an earlier entry of the page is folded (a bonus granted, then
            # claimed): loaded now, from what was folded already. No query when all are known.
            await self.load([command])
            fold(self.rows, entry)
        return entries

    async def hold_report_units(self, commands: list[Command], day: str) -> None:
        """Hold the report units the commands' transactions may add to on `day`, the day of the
        group about to be judged (`domain.report_units`: the report limits are checked against
        them), each read whole once; let units of days before the day before go. A unit is read
        with no group that added to it in flight: at most one group is, judged before this one,
        and the units it added to are held."""
        rows = self.rows
        if rows.complete:
            return
        wanted = {unit for cmd in commands for unit in report_units(cmd, day)}
        wanted -= rows.report_units.keys() | rows.unread_report_units
        if not wanted:
            return
        rows.release_report_units((date.fromisoformat(day) - timedelta(days=1)).isoformat())
        for unit in sorted(wanted):
            table, unit_day, client = unit
            found, _ = await self.store.report_sums(
                table,
                day_from=unit_day,
                day_to=unit_day,
                equals={"client_id": client} if "client_id" in TABLES[table] else {},
                group_by=TABLES[table],
                members=SUMS_OF[table],
                limit=REPORT_UNIT_READ_MAX + 1,
            )
            if len(found) > REPORT_UNIT_READ_MAX:  # what adds to it is refused (`check_report_limits`)
                log.warning("ledger_report_unit_unread", table=table, day=unit_day, client=client)
                rows.hold_unread_report_unit(unit)
            else:
                rows.hold_report_unit(unit, dict(found))

    async def load(self, commands: list[Command]) -> None:
        """Bring every row the commands need into the overlay, a few IN-queries per pass. A command
        is planned again only if a row it may plan from was just found (`PLANNED_FROM`)."""
        cache, pending = self.rows, commands
        if cache.complete:  # every row is known: nothing to load
            return
        cached = cache.tables  # `known` inlined: this runs for every row of every command
        absent = self.absent
        for _ in range(PASSES_MAX):
            missing: dict[str, dict[tuple, None]] = {}
            watched: list[tuple[Command, list[tuple[str, tuple]]]] = []
            for cmd in pending:
                try:
                    needed = rows_needed(cache, cmd)
                except Exception as e:  # pure: a bug, which every retry would hit again
                    raise PlanningFailed(cmd, e) from e
                # One pass over the rows: most are cached (a group's players, games, house
                # accounts), so what is collected per command is only what is not.
                watch: list[tuple[str, tuple]] | None = None
                for table, key in needed:
                    if key not in cached[table]:
                        if absent is not None and not absent.may_hold(table, key):
                            cached[table][key] = None  # what the store would have answered
                            continue
                        keys = missing.get(table)
                        if keys is None:
                            keys = missing[table] = {}
                        keys[key] = None
                        if table in PLANNED_FROM:
                            if watch is None:
                                watch = []
                                watched.append((cmd, watch))
                            watch.append((table, key))
            if not missing:
                return
            found = await self.store.load({table: list(keys) for table, keys in missing.items()})
            for table, keys in missing.items():
                rows, loaded = found.get(table, {}), cached[table]
                for key in keys:  # `fill` inlined: what storage holds, None for a row it does not
                    loaded[key] = rows.get(key)
            pending = [cmd for cmd, keys in watched if any(cache.peek(t, k) is not None for t, k in keys)]
