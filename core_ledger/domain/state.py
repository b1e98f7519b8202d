"""The derived state: tables of JSON documents keyed by tuples, folded from the journal by `evolve`.

The same `State` serves three uses: the writer's overlay/cache (rows loaded on demand; asking for a
row that was never loaded is a programming error), the in-memory backend and rebuild-from-journal
(`complete=True`: a row that is not there does not exist).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, overload

from core_ledger.domain.accounts import jackpot_account, player_account, system_account
from core_ledger.domain.commands import InvariantBroken
from core_ledger.domain.records import (
    AccountRow,
    BetRow,
    BonusRow,
    Entry,
    GameRow,
    HistoryRow,
    IdemRow,
    JackpotRow,
    PlayerRow,
    RoundRow,
)

# Account names are built in `accounts`; re-exported here, where readers found them before.
__all__ = [
    "ADDITIVE",
    "ENTRIES",
    "LATER_TABLES",
    "TABLES",
    "WRITE_ONLY",
    "Doc",
    "Key",
    "State",
    "idempotency_record",
    "jackpot_account",
    "player_account",
    "round_address",
    "system_account",
]

Key = tuple[Any, ...]
Doc = dict[str, Any]

# table -> its key columns. Every table is rebuildable from the journal.
TABLES: dict[str, tuple[str, ...]] = {
    "players": ("player_id",),
    "accounts": ("account",),
    # Rounds are scoped by the game-server client that bets in them, like ids: two clients may
    # both play a round "7" of a player. `rounds` holds the rounds of entries journaled before that
    # (one namespace for every client); they fold there still, and stay open to their own clients.
    "rounds": ("player_id", "round_id"),
    "client_rounds": ("player_id", "round_id", "client_id"),
    "idem": ("client_id", "id"),
    "bets": ("client_id", "bet_id"),
    "jackpots": ("jackpot_id",),
    "games": ("game_id",),
    "bonuses": ("player_id", "bonus_id"),
    "history": ("account", "sequence"),
    # Indexes for operators (schema migration 3): every entry that names an `external_ref`, by
    # reference then sequence; and every round by the sequence of the bet that opened it, with its
    # status, so open rounds are listed oldest first (interrupted rounds).
    "external_refs": ("external_ref", "sequence"),
    "round_openings": ("sequence",),
    # One row per journal entry: what operator queries filter on (see `summaries`).
    "tx_summaries": ("sequence",),
    # Finance reports (schema migration 5): sums in minor units per UTC day, kept by adding each
    # entry's deltas (see `reports` and `ADDITIVE`).
    "report_play_days": ("day", "currency", "game_id", "client_id"),
    "report_cash_days": ("day", "currency"),
}
# Tables added after the first schema: created by a later migration, absent from older backups.
LATER_TABLES = frozenset({"external_refs", "round_openings", "tx_summaries", "report_play_days", "report_cash_days"})
# Tables of integer sums: what a commit writes for them are DELTAS that the store adds to the stored
# row (one upsert per touched key per commit), not the row itself; the writer reads only the units
# it checks the report limits against (`ReportUnit`).
ADDITIVE = frozenset({"report_play_days", "report_cash_days"})
# The rows of report tables a writer holds come in units: one (table, day, client) each (client ""
# for a table without one, `report_cash_days`): the rows the report limits of a command's
# transactions are checked against, read whole, named by the command alone (`reports.report_units`).
ReportUnit = tuple[str, str, str]


def report_unit(table: str, key: Key) -> ReportUnit:
    """The unit of a row of an `ADDITIVE` table (its day is the first key column)."""
    columns = TABLES[table]
    return (table, key[0], key[columns.index("client_id")] if "client_id" in columns else "")


# Append-only tables the writer never reads back: not kept in its cache after a flush.
WRITE_ONLY = frozenset({"history", "external_refs", "round_openings", "tx_summaries"})
# Journal entries by (sequence,): read by the writer to replay or compare a stored answer; not a
# derived table (the journal itself), only cached for the batch that needs it.
ENTRIES: Final = "entries"


def idempotency_record(idem: IdemRow | None, bet: BetRow | None) -> IdemRow | None:
    """What binds an idempotency key, given its `idem` and `bets` rows: a committed bet writes no
    `idem` row (its `bets` row already holds the sequence: one row less per bet); a rollback's
    marker binds nothing."""
    if idem is not None:
        return idem
    if bet is not None and bet["state"] != "marker":
        return {"type": "bet", "sequence": bet["sequence"]}
    return None


# The result member that records which round an entry played in: the client scope, or None for a
# round of `rounds` (before scoping). Entries journaled before scoping have no such member.
ROUND_CLIENT: Final = "round_client_id"


RoundTable = Literal["rounds", "client_rounds"]


def round_address(round_client_id: str | None, player_id: str, round_id: str) -> tuple[RoundTable, Key]:
    """Where a round's row lives: (table, key)."""
    if round_client_id is None:
        return "rounds", (player_id, round_id)
    return "client_rounds", (player_id, round_id, round_client_id)


Row = (
    Doc
    | PlayerRow
    | AccountRow
    | RoundRow
    | BetRow
    | IdemRow
    | JackpotRow
    | GameRow
    | BonusRow
    | HistoryRow
    | Mapping[str, Any]
)


class State:
    def __init__(self, *, complete: bool) -> None:
        self.complete = complete
        self.tables: dict[str, dict[Key, Doc | None]] = {t: {} for t in (*TABLES, ENTRIES)}
        # The rows changed since the last `take_dirty`, by table, each as last put: tables in the
        # order of their first change, rows in the order of theirs (writes are deterministic).
        self.dirty: dict[str, dict[Key, Doc]] = {}
        # Sums of `ADDITIVE` tables added since the last `take_dirty` (what a commit adds).
        self.added: dict[tuple[str, Key], dict[str, int]] = {}
        # Report units (`report_unit`) whose rows are all held, kept current by `add`, each with its
        # number of rows: what the writer checks the report limits against. A complete state holds
        # every unit.
        self.report_units: dict[ReportUnit, int] = {}
        self.unread_report_units: set[ReportUnit] = set()  # too large to hold: nothing adds to them

    def known(self, table: str, key: Key) -> bool:
        return self.complete or key in self.tables[table]

    # Each table's rows have one shape (`records`): `peek` and `get` say which.
    @overload
    def peek(self, table: Literal["players"], key: Key) -> PlayerRow | None: ...
    @overload
    def peek(self, table: Literal["accounts"], key: Key) -> AccountRow | None: ...
    @overload
    def peek(self, table: RoundTable, key: Key) -> RoundRow | None: ...
    @overload
    def peek(self, table: Literal["bets"], key: Key) -> BetRow | None: ...
    @overload
    def peek(self, table: Literal["idem"], key: Key) -> IdemRow | None: ...
    @overload
    def peek(self, table: Literal["jackpots"], key: Key) -> JackpotRow | None: ...
    @overload
    def peek(self, table: Literal["games"], key: Key) -> GameRow | None: ...
    @overload
    def peek(self, table: Literal["bonuses"], key: Key) -> BonusRow | None: ...
    @overload
    def peek(self, table: Literal["entries"], key: Key) -> Entry | None: ...
    @overload
    def peek(self, table: str, key: Key) -> Mapping[str, Any] | None: ...

    def peek(self, table: str, key: Key) -> Any:
        """The row if it is loaded and exists, else None (no assertion: used to plan loads)."""
        return self.tables[table].get(key)

    @overload
    def get(self, table: Literal["players"], key: Key) -> PlayerRow | None: ...
    @overload
    def get(self, table: Literal["accounts"], key: Key) -> AccountRow | None: ...
    @overload
    def get(self, table: RoundTable, key: Key) -> RoundRow | None: ...
    @overload
    def get(self, table: Literal["bets"], key: Key) -> BetRow | None: ...
    @overload
    def get(self, table: Literal["idem"], key: Key) -> IdemRow | None: ...
    @overload
    def get(self, table: Literal["jackpots"], key: Key) -> JackpotRow | None: ...
    @overload
    def get(self, table: Literal["games"], key: Key) -> GameRow | None: ...
    @overload
    def get(self, table: Literal["bonuses"], key: Key) -> BonusRow | None: ...
    @overload
    def get(self, table: Literal["entries"], key: Key) -> Entry | None: ...
    @overload
    def get(self, table: str, key: Key) -> Mapping[str, Any] | None: ...

    def get(self, table: str, key: Key) -> Any:
        rows = self.tables[table]  # an unknown table raises KeyError, as ever
        if self.complete:  # a rebuild or the in-memory store: a row that is not there does not exist
            return rows.get(key)
        try:  # the overlay: a subscript, no method call (~17 gets a bet), and it must be loaded
            return rows[key]
        except KeyError:
            raise InvariantBroken(f"{table}{key} was not loaded before use") from None

    def fill(self, table: str, key: Key, doc: Doc | None) -> None:
        """Record what storage holds for a key (None: absent); not a change."""
        self.tables[table][key] = doc

    def put(self, table: str, key: Key, doc: Row) -> None:
        """Change a row. A row of a `WRITE_ONLY` table is only kept for the next commit, unless
        the state is complete (a rebuild: the tables are then the result)."""
        if doc is None:
            raise InvariantBroken(f"{table}{key} was changed without a value")
        # A row is stored as the JSON document it is (an annotation, not a `cast` call: ~8 puts a bet).
        row: Doc = doc  # type: ignore[assignment]  # every row shape of `records` is such a document
        if self.complete or table not in WRITE_ONLY:
            self.tables[table][key] = row
        changed = self.dirty.get(table)
        if changed is None:
            changed = self.dirty[table] = {}
        changed[key] = row

    def add(self, table: str, key: Key, sums: Mapping[str, int], names: tuple[str, ...]) -> None:
        """Add integer sums to a row of an `ADDITIVE` table (every member of `names`, 0 if not
        given). Only the deltas are kept for the next commit; a complete state (rebuild) also
        keeps the totals, which are then the table, and so does a writer for the units it holds."""
        pending = self.added.get((table, key))
        if pending is None:
            pending = self.added[(table, key)] = dict.fromkeys(names, 0)
        for name, value in sums.items():
            pending[name] += value
        unit = None if self.complete else report_unit(table, key)
        if unit is None or unit in self.report_units:
            total = self.tables[table].get(key)
            if total is None:
                total = self.tables[table][key] = dict.fromkeys(names, 0)
                if unit is not None:
                    self.report_units[unit] += 1
            for name, value in sums.items():
                total[name] = total.get(name, 0) + value

    def hold_report_unit(self, unit: ReportUnit, rows: Mapping[Key, Mapping[str, int]]) -> None:
        """Hold every stored row of a report unit (what storage holds: deltas not yet committed
        excluded): `add` keeps their totals, and counts the rows it opens, from now on."""
        held = self.tables[unit[0]]
        for key, sums in rows.items():
            held[key] = dict(sums)
        self.report_units[unit] = len(rows)

    def hold_unread_report_unit(self, unit: ReportUnit) -> None:
        """Hold a report unit too large to read: every draft adding to it is refused."""
        self.unread_report_units.add(unit)

    def report_unit_unread(self, unit: ReportUnit) -> bool:
        return unit in self.unread_report_units

    def release_report_units(self, before_day: str) -> None:
        """Stop holding the report units of days before `before_day`."""
        self.unread_report_units = {unit for unit in self.unread_report_units if unit[1] >= before_day}
        gone = {unit for unit in self.report_units if unit[1] < before_day}
        for table in {unit[0] for unit in gone}:
            held = self.tables[table]
            for key in [k for k in held if report_unit(table, k) in gone]:
                del held[key]
        for unit in gone:
            del self.report_units[unit]

    def report_total(self, table: str, key: Key) -> Mapping[str, int] | None:
        """The sums of a report row, pending additions included (None: no such row yet)."""
        if not self.complete and report_unit(table, key) not in self.report_units:  # nor unread
            raise InvariantBroken(f"the report rows of {report_unit(table, key)} were not held before use")
        return self.tables[table].get(key)

    def report_rows(self, unit: ReportUnit) -> int:
        """How many rows a held report unit has (a complete state: not counted, 0)."""
        return self.report_units.get(unit, 0)

    def remember(self, entry: Entry) -> None:
        """Keep a just-written entry for replays later in the same batch (not in a rebuild)."""
        if not self.complete:
            self.tables[ENTRIES][(entry["sequence"],)] = entry  # type: ignore[assignment]  # kept as the JSON read back

    def forget_entries(self, up_to_sequence: int) -> None:
        """Drop cached entries that storage now holds (later ones belong to commits in flight)."""
        cached = self.tables[ENTRIES]
        for key in [k for k in cached if k[0] <= up_to_sequence]:
            del cached[key]

    def take_dirty(self) -> dict[str, list[tuple[Key, Doc]]]:
        """The changed rows since the last call, by table, in the order they were first changed."""
        out = {table: list(rows.items()) for table, rows in self.dirty.items()}
        self.dirty = {}
        for (table, key), sums in self.added.items():
            out.setdefault(table, []).append((key, sums))
        self.added = {}
        return out

    def size(self) -> int:
        """Rows cached, report rows held aside (bounded per unit: `reports.REPORT_UNIT_ROWS_MAX`)."""
        return sum(len(rows) for table, rows in self.tables.items() if table not in ADDITIVE)

    def rows(self, table: str) -> dict[Key, Doc]:
        return {k: v for k, v in self.tables[table].items() if v is not None}
