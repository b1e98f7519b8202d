"""The storage interface every backend implements (memory, SQLite; PostgreSQL can follow).

Narrow on purpose: the writer loads rows by key and commits a batch (journal rows + derived-row
upserts + the new head) atomically; readers get committed state only. Backends translate their
driver errors into `StorageError` where the transaction ends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import Unavailable
from shared.migrations import Plan

from core_ledger.domain.commands import require
from core_ledger.domain.journal import GENESIS_HASH
from core_ledger.domain.state import ADDITIVE, TABLES, Doc, Key

Rows = dict[str, list[tuple[Key, Doc]]]
SummaryPage = tuple[list[tuple[int, Doc]], int]  # transaction index rows by sequence, and the head
KEYS_PER_QUERY_MAX = 400  # bound on the IN-list of one load query
# Members of the transaction index (`tx_summaries`) a query may filter on by equality.
SUMMARY_FILTERS = ("player_id", "game_id", "round_id", "type", "client_id", "via", "outcome", "currency")
# Every member of a transaction index row (`domain/summaries.py`); the SQLite backend stores each as
# a column of its own (schema migration 6), not as one JSON document.
SUMMARY_MEMBERS = (
    "id",
    "type",
    "outcome",
    "client_id",
    "via",
    "committed_at",
    "player_id",
    "game_id",
    "round_id",
    "currency",
)
# The members the SQL backends index, each with the sequence, so a page filtered on one of them is
# one index range in journal order: the selective ones (a player, a round) and `type` (rare types,
# such as the `player_create` entries players are listed by). The other filters (game, client, edge,
# outcome, currency) are checked on the rows of that range, or in journal order when none of these
# is given; and `committed_at` is indexed for time ranges (`sequence_at`, `from`/`until`). Every
# indexed member costs each entry an index entry, most of them a page written at random: see
# docs/decisions/operator-index-columns.md.
SUMMARY_INDEXED = ("player_id", "round_id", "type")
# Since SQLite's schema migration 9 a page filtered on a player or a round is answered from B-trees
# every bet writes anyway, plus a small partial index of the entries those cannot find (see
# docs/decisions/operator-index-from-history-and-rounds.md):
# - a committed entry of these types always posts to its player's own account, so `history`
#   (account, sequence) finds it: `domain/money.py` transfers their amount to or from
#   `player_account(player_id, currency)`, and the contract makes that amount positive
#   (`PositiveMinor` in shared/contract/requests.py). Not a win: its amount may be 0, and a zero
#   posting is dropped (`domain/decide.py`), leaving no history row;
SUMMARY_POSTING_TYPES = ("bet", "deposit", "withdrawal")
# - a committed entry of these types is always noted (with its sequence) in the `transactions` of
#   the round row it played in, whose `round_id` is the entry's (`domain/folds.py`: `bet`, `win`).
SUMMARY_NOTED_TYPES = ("bet", "win")


def summary_unless(types: Sequence[str], member: Callable[[str], str]) -> str:
    """The SQL condition of the transaction index rows that are NOT committed entries of `types`
    (`member(name)`: the SQL of a member): the rows a partial index keeps (a query that is to use
    that index repeats the condition word for word)."""
    listed = ", ".join(f"'{t}'" for t in types)
    return f"({member('outcome')} <> 'committed' OR {member('type')} NOT IN ({listed}))"


def count_keys_query(table: str) -> str:
    """The query of `Store.count_keys`: how many rows a derived table holds."""
    require(table in TABLES, f"{table} is a derived table")  # only such a name reaches the SQL
    return f"SELECT count(*) FROM {table}"


def key_page_query(table: str, after: Key | None, limit: int, mark: Callable[[int], str]) -> tuple[str, list[Any]]:
    """The query of `Store.key_page` and its parameters (`mark(i)`: the placeholder of the i-th): at
    most `limit` keys of a derived table after the key `after`, in key order. A row-value range on
    the primary key, so the range and the `ORDER BY` compare alike (byte by byte: SQLite's BINARY,
    PostgreSQL's `COLLATE "C"` key columns)."""
    require(table in TABLES, f"{table} is a derived table")  # only such a name reaches the SQL
    names = ", ".join(TABLES[table])
    params: list[Any] = [*(after or ())]
    where = f"WHERE ({names}) > ({', '.join(mark(i) for i in range(1, len(params) + 1))}) " if after else ""
    params.append(limit)
    return f"SELECT {names} FROM {table} {where}ORDER BY {names} LIMIT {mark(len(params))}", params


# Schema migration 10 on every backend: the writer holds one client's report rows of a day at a time
# (`Overlay.hold_report_units`); the primary key leads with the day, then currency and game, so that
# read scanned the whole day.
REPORT_BY_CLIENT = "CREATE INDEX IF NOT EXISTS report_play_days_by_client ON report_play_days (client_id, day)"


def report_filter(
    table: str,
    day_from: str,
    day_to: str,
    equals: dict[str, str],
    group_by: Sequence[str],
    members: Sequence[str],
    mark: Callable[[int], str],
) -> tuple[list[str], list[Any]]:
    """The WHERE clauses and parameters of a report query (day range, key columns equal; `mark(i)`
    is the placeholder of the i-th parameter), after checking every name it lets into SQL: key
    columns of a report table, and members that are identifiers."""
    require(table in ADDITIVE, f"{table} is a report table")
    columns = TABLES[table]
    require(bool(group_by) and set(group_by) <= set(columns), f"{group_by} are key columns of {table}")
    require(all(m.isidentifier() for m in members), "report members are identifiers")
    params: list[Any] = [day_from, day_to]
    clauses = [f"day >= {mark(1)}", f"day <= {mark(2)}"]
    for name, value in equals.items():
        require(name in columns, f"{name} is a key column of {table}")
        params.append(value)
        clauses.append(f"{name} = {mark(len(params))}")
    return clauses, params


def summary_filter(
    equals: dict[str, str],
    after_sequence: int,
    time_from: str | None,
    time_until: str | None,
    member: Callable[[str], str],
    mark: Callable[[int], str],
) -> tuple[list[str], list[Any]]:
    """The WHERE clauses and parameters of a transaction index page (after a sequence, members
    equal, committed in [time_from, time_until)); `member(name)` is the SQL of a member, `mark(i)`
    the placeholder of the i-th parameter. Only filter names reach the SQL."""
    params: list[Any] = [after_sequence]
    clauses = [f"sequence > {mark(1)}"]
    for name, value in equals.items():
        require(name in SUMMARY_FILTERS, f"{name} is a transaction index filter")
        params.append(value)
        clauses.append(f"{member(name)} = {mark(len(params))}")
    for bound, op in ((time_from, ">="), (time_until, "<")):
        if bound is not None:
            params.append(bound)
            clauses.append(f"{member('committed_at')} {op} {mark(len(params))}")
    return clauses, params


class StorageError(Unavailable):
    """The backend failed; nothing of the failed commit is visible. An operating error, not a bug:
    wherever one reaches a caller (a read, a promotion) it is answered 503 `storage_unavailable`,
    never 500 `internal_error`."""

    code = "storage_unavailable"


# The fence a restore holds on its target until it has written all of it: above every epoch (they
# have at most 18 digits, so no claim or proof sets it). A ledger refuses to start on a store that
# still holds it: a restore that stopped midway leaves a valid but shorter journal that must never
# serve as the whole.
UNFINISHED_RESTORE_FENCE = 2**62


@dataclass(frozen=True)
class Head:
    sequence: int = 0
    hash: str = GENESIS_HASH
    epoch: int = 1


@dataclass(frozen=True)
class JournalRow:
    sequence: int
    tx_id: str | None
    text: str  # canonical JSON of the whole entry, hash included


class Store(ABC):
    schema_plan: Plan | None = None  # the schema version `open` found and what it ran (None: unversioned)
    # Groups the writer keeps in flight on this store (judged, not yet answered): at 2 the next
    # group is judged while the previous one commits. That pays only where a commit leaves the
    # interpreter free: see docs/decisions/pipeline-depth-by-backend.md.
    pipeline_depth: int = 1

    def child_location(self) -> dict[str, str] | None:
        """Where another process opens this same store (the audit's whole walks run in one:
        core_ledger/audit_walk.py); None when no other process can (a store in memory)."""
        return None

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def head(self) -> Head: ...

    @abstractmethod
    async def load(self, wanted: dict[str, Sequence[Key]]) -> dict[str, dict[Key, Doc]]:
        """Existing rows among the wanted keys of each table (writer side; absent keys are missing).
        The pseudo-table `ENTRIES` ("entries") returns parsed journal entries keyed by (sequence,)."""

    async def count_keys(self, table: str) -> int | None:
        """How many rows a derived table holds; None when this backend cannot list its keys
        (`key_page`). The writer's key filter is sized and filled with these two
        (core_ledger/key_filter.py)."""
        return None

    async def key_page(self, table: str, after: Key | None, limit: int) -> list[Key]:
        """At most `limit` keys of a derived table in key order, after the key `after` (None: from
        the first), each page read on its own (pages are not one snapshot). Called only on a
        backend whose `count_keys` gives a count: one that cannot list its keys never gets here."""
        raise NotImplementedError(f"{type(self).__name__} cannot list the keys of {table}")

    @abstractmethod
    async def commit(self, journal: Sequence[JournalRow], rows: Rows, head: Head) -> None:
        """Append journal rows, upsert derived rows and store the head, in one durable transaction.
        A backend may hold the derived rows and write them with a later commit (SQLite:
        store/held_rows.py); every read of derived tables shows them all the same."""

    # Derived rows behind the journal. Only the journal must be durable when a commit returns; a
    # backend that holds derived rows in memory says so here. The defaults are a backend that
    # writes them with every commit.

    def holds_derived(self) -> bool:
        """Whether derived rows of committed groups are held in memory, waiting for a flush."""
        return False

    def derived_rows_held(self) -> int:
        """How many derived rows are held in memory (a metric)."""
        return 0

    def derived_rows_bound(self) -> int:
        """How many derived rows may be held before a commit writes them (a metric; 0: none held)."""
        return 0

    async def flush_derived(self) -> None:
        """Write the derived rows held in memory, if any."""
        return None

    async def derived_sequence(self) -> int:
        """The journal sequence the derived rows reflect (stored, or held in memory). Below the
        head only after a crash or a failed write lost what was held: then the entries after it
        must be folded into them (`write_derived`) before they are read or committed to again."""
        return (await self.head()).sequence

    async def write_derived(self, rows: Rows, sequence: int) -> None:
        """Store derived rows folded from the journal up to `sequence`, the stored head."""
        raise NotImplementedError(f"{type(self).__name__} never holds derived rows behind its journal")

    @abstractmethod
    async def get(self, table: str, key: Key) -> tuple[Doc | None, int]:
        """A committed row and the journal head sequence, read in one consistent snapshot."""

    @abstractmethod
    async def select(
        self,
        table: str,
        equals: dict[str, Any],
        *,
        limit: int,
        doc_equals: dict[str, Any] | None = None,
        doc_positive: tuple[str, ...] = (),
        after: Any = None,
    ) -> tuple[list[tuple[Key, Doc]], int]:
        """Committed rows whose key columns equal `equals` (whose docs match `doc_equals`, and whose
        integer members `doc_positive` are above 0), ordered by key, with the last key column
        greater than `after` when given; and the journal head sequence, read in the same snapshot."""

    @abstractmethod
    async def journal(self, after_sequence: int, limit: int) -> list[tuple[int, str]]:
        """Committed journal rows (sequence, text) after a sequence, in order."""

    @abstractmethod
    async def journal_of(self, tx_id: str, limit: int) -> list[str]:
        """Texts of the committed entries whose transaction id is `tx_id`, in order."""

    @abstractmethod
    async def dump(self, table: str) -> dict[Key, Doc]:
        """Every row of a derived table (audits and rebuild checks)."""

    @abstractmethod
    async def replace_derived(self, tables: dict[str, dict[Key, Doc]]) -> None:
        """Replace every derived table with the given rows (rebuild from the journal)."""

    @abstractmethod
    async def fence(self, epoch: int) -> None:
        """Durably record that a ledger of a higher `epoch` exists: this copy must never take a
        write again (fencing). The stored value only grows; the head is left alone."""

    @abstractmethod
    async def fenced_by(self) -> int:
        """The highest epoch `fence` recorded; 0 when this copy was never fenced (or was unfenced)."""

    @abstractmethod
    async def unfence(self, epoch: int) -> int:
        """Clear a recorded fence of at most `epoch` (an operator lifted it, journaled by the caller
        first); a higher fence recorded meanwhile stays. Returns the fence that remains (0: none)."""

    @abstractmethod
    async def backup(self, path: Path) -> Head:
        """Write an online, consistent copy of the store to `path`; the head that copy holds."""

    # Anchored audit and the event stream (core_ledger/checkpoints.py, core_ledger/consumers.py):
    # side tables of this copy, not journaled and not derived from the journal.

    @abstractmethod
    async def add_checkpoint(self, checkpoint: dict[str, Any]) -> bool:
        """Store a signed checkpoint under its `sequence`; False (nothing changed) when one is stored there."""

    @abstractmethod
    async def checkpoints(self, after_sequence: int, limit: int) -> list[dict[str, Any]]:
        """Stored checkpoints after a sequence, in sequence order."""

    @abstractmethod
    async def latest_checkpoint(self) -> dict[str, Any] | None:
        """The stored checkpoint of the highest sequence; None when there is none."""

    @abstractmethod
    async def put_consumer(self, name: str, doc: dict[str, Any], *, cursor: int | None) -> tuple[dict[str, Any], int]:
        """Create or update an event consumer's settings; `cursor` (a sequence) sets its cursor, None
        keeps it (0 for a new consumer). Returns the stored settings and cursor."""

    @abstractmethod
    async def advance_consumer(self, name: str, sequence: int) -> int | None:
        """Move a consumer's cursor forward to `sequence` (never back); its cursor after, None when
        there is no such consumer."""

    @abstractmethod
    async def consumers(self) -> dict[str, tuple[dict[str, Any], int]]:
        """Every consumer: its settings and cursor, by name."""

    @abstractmethod
    async def delete_consumer(self, name: str) -> bool:
        """Forget a consumer; False when there was none."""

    # Operator queries (core_ledger/queries.py): keyset pages of committed rows, each read in one
    # snapshot with the journal head, and point-in-time reads for disputes.

    @abstractmethod
    async def page(
        self,
        table: str,
        *,
        after: Key | None,
        limit: int,
        key_prefix: str | None = None,
        doc_equals: dict[str, Any] | None = None,
    ) -> tuple[list[tuple[Key, Doc]], int]:
        """Committed rows of a derived table ordered by their whole key, after the key `after` (None:
        from the start), whose first key column starts with `key_prefix` and whose docs match
        `doc_equals`; at most `limit`, and the journal head sequence of the same snapshot."""

    @abstractmethod
    async def summaries(
        self,
        equals: dict[str, str],
        *,
        after_sequence: int,
        limit: int,
        time_from: str | None = None,
        time_until: str | None = None,
    ) -> SummaryPage:
        """Rows of the transaction index (`tx_summaries`) whose members equal `equals` (names from
        `SUMMARY_FILTERS`), committed at or after `time_from` and before `time_until` (RFC 3339 UTC
        text as the journal writes it), after a sequence, in sequence order; and the head sequence.
        The derived rows must be as the folds write them: a backend may find a player's or a round's
        rows through `history` and the rounds' notes (see `SUMMARY_POSTING_TYPES`)."""

    # Finance reports (core_ledger/reports.py): rows of the report sums and the balances of the
    # system accounts, each read in one snapshot with the journal head.

    @abstractmethod
    async def report_sums(
        self,
        table: str,
        *,
        day_from: str,
        day_to: str,
        equals: dict[str, str],
        group_by: Sequence[str],
        members: Sequence[str],
        limit: int,
    ) -> tuple[list[tuple[Key, dict[str, int]]], int]:
        """Sums of `members` over the rows of a report table (`state.ADDITIVE`) whose `day` is
        within [day_from, day_to] (inclusive, YYYY-MM-DD) and whose key columns equal `equals`:
        one per distinct value of the `group_by` key columns, in their order, at most `limit`;
        and the journal head sequence of the same snapshot. Sums are exact integers, past 64 bits
        too (each row is within ±2^61, many of them are not)."""

    @abstractmethod
    async def accounts_by_prefix(self, prefixes: Sequence[str], limit: int) -> tuple[dict[str, Doc], int]:
        """The `accounts` rows whose name starts with one of `prefixes` (at most `limit` per prefix),
        by name; and the journal head sequence of the same snapshot."""

    @abstractmethod
    async def history_at(self, account: str, sequence: int) -> Doc | None:
        """An account's last `history` row at or before `sequence` (its `sequence` added); None when
        it had none by then."""

    @abstractmethod
    async def sequence_at(self, moment: str) -> int:
        """The sequence of the latest entry committed at or before `moment` (RFC 3339 UTC text as the
        journal writes it; ties: the highest sequence); 0 when there is none."""
