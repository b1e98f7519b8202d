"""SQLite backend: WAL with synchronous=FULL, one writer connection, one connection for the
writer's loads, one for every other read, each owned by its own thread (`shared.sqlite_thread`);
a backup copies through a connection of its own (aiosqlite's `Connection.backup`).

Every operation is ONE unit of work in its connection's thread: a group commit (journal rows,
derived rows, head) or a batch's loads cost one thread hop, not one per statement, and no
statement stays open between operations (each read sees every commit that returned before it).
A commit whose derived rows are held runs on the event loop's thread instead, while the writer's
thread is idle (`SqliteThread.run_here`; docs/decisions/sqlite-commits-on-the-event-loop.md).
A commit extends the stored head or changes nothing: its rows must run without a gap up to the
new head, and the stored head must be the one they start from (as on PostgreSQL).

Derived tables are (key columns..., doc JSON), but for those in `COLUMNAR` (the transaction index,
balances, history, rounds, round openings, report sums, bets): one column per member of their documents,
rebuilt into a document by `json_object` when read. The
journal is protected by triggers against UPDATE and DELETE; its rows hold the canonical entry text
that the chain hashes, deflated at rest (`sqlite_entries`: every reader gets the exact text back).
The schema version is `PRAGMA user_version`, moved forward by `MIGRATIONS` at open (see
`shared.migrations`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, get_args, get_type_hints

import aiosqlite
import orjson
import structlog

from shared import sqlite_migrate
from shared.migrations import Migration, Plan, SchemaVersionError
from shared.sqlite_thread import SqliteThread, SqliteThreadClosed, write_transaction

from core_ledger.domain.commands import InvariantBroken, require
from core_ledger.domain.records import (
    ACCOUNT_MEMBERS,
    BET_MEMBERS,
    BET_NESTED,
    BET_OPTIONAL,
    HISTORY_MEMBERS,
    ROUND_MEMBERS,
    ROUND_NESTED,
    ROUND_OPENING_MEMBERS,
    ROUND_OPTIONAL,
    BetRow,
)
from core_ledger.domain.reports import SUMS_OF
from core_ledger.domain.state import ADDITIVE, ENTRIES, LATER_TABLES, TABLES, Doc, Key
from core_ledger.store.base import (
    KEYS_PER_QUERY_MAX,
    REPORT_BY_CLIENT,
    SUMMARY_FILTERS,
    SUMMARY_INDEXED,
    SUMMARY_MEMBERS,
    Head,
    JournalRow,
    Rows,
    StorageError,
    Store,
    SummaryPage,
    count_keys_query,
    key_page_query,
    report_filter,
)
from core_ledger.store.held_rows import GROUPS_MAX, ROWS_MAX, HeldRows
from core_ledger.store.sqlite_entries import entry_text, stored_entry
from core_ledger.store.sqlite_summaries import UNNOTED, UNPOSTED, summaries_sync

log = structlog.get_logger("croupier.store")

BUSY_TIMEOUT_MS = 5000
# The page size of a NEW database (SQLite fixes it when the file is created; an existing database
# keeps its own, 4096 before this). A WAL commit writes every page it touched whole, and a bet
# touches a few pages at random (its player's account, round and history index entry): with 1 KiB
# pages each such touch writes a quarter of the bytes (bench/ledger_writer.py: 12.2 -> 6.9 KiB
# written per bet). See docs/decisions/sqlite-page-size.md.
PAGE_SIZE_NEW = 1024
# WAL bytes before a commit also checkpoints them into the database (as pages: SQLite counts
# frames). The hot pages (balances, index roots) are rewritten by every commit but copied once per
# checkpoint: at 16 MiB a bet cost 16% fewer bytes written and 14% less CPU in the writer alone (no
# HTTP) than at SQLite's default of 1000 pages.
WAL_AUTOCHECKPOINT_BYTES = 16 * 1024 * 1024
# While a background checkpointer copies the WAL into the database (`background_checkpoints`), the
# writer's own autocheckpoint waits for this much: only a backstop, should the checkpointer fall
# behind. Inside a commit, a checkpoint of random pages on a large database held every bet for a
# third of a second (docs/decisions/sqlite-checkpoints-off-the-commit-path.md).
WAL_BACKSTOP_BYTES = 4 * WAL_AUTOCHECKPOINT_BYTES
# Before the journal mode: setting WAL writes the header of a new file, which fixes its page size.
PRAGMAS = (
    f"PRAGMA page_size={PAGE_SIZE_NEW}",
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
)
SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS journal (sequence INTEGER PRIMARY KEY, tx_id TEXT, entry TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS journal_tx_id ON journal (tx_id)",
    "CREATE TRIGGER IF NOT EXISTS journal_no_update BEFORE UPDATE ON journal "
    "BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS journal_no_delete BEFORE DELETE ON journal "
    "BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END",
    *[
        f"CREATE TABLE IF NOT EXISTS {t} ({', '.join(cols)}, doc TEXT NOT NULL, PRIMARY KEY ({', '.join(cols)}))"
        for t, cols in TABLES.items()
        if t not in LATER_TABLES
    ],
    "CREATE INDEX IF NOT EXISTS rounds_by_round ON rounds (round_id)",
    "CREATE INDEX IF NOT EXISTS client_rounds_by_round ON client_rounds (round_id)",
    "CREATE INDEX IF NOT EXISTS idem_by_id ON idem (id)",
]
# Derived tables stored as one column per document member instead of one JSON document: table ->
# members. Only tables whose rows always hold every member, or whose optional members are never null
# when present (`OPTIONAL`: a column cannot tell an absent member from a null one). The transaction
# index (one row per journal entry, schema migration 6): a JSON document repeats every member's name
# in every row, and its indexes were json_extract expressions evaluated at each insert. Balances,
# balance history, rounds, round openings and report sums (schema migration 7): rows written by
# every bet, smaller as columns; the round openings' status index is a column, and report sums are
# added column by column (see docs/decisions/sqlite-derived-rows-as-columns.md). Bets (schema
# migration 8): one row per bet, the largest derived row when it was a document
# (docs/decisions/sqlite-bets-as-columns.md).
COLUMNAR: dict[str, tuple[str, ...]] = {
    "tx_summaries": SUMMARY_MEMBERS,
    "accounts": ACCOUNT_MEMBERS,
    "history": HISTORY_MEMBERS,
    "round_openings": ROUND_OPENING_MEMBERS,
    "rounds": ROUND_MEMBERS,
    "client_rounds": ROUND_MEMBERS,
    "bets": BET_MEMBERS,
    **{table: SUMS_OF[table] for table in ADDITIVE},
}
_MEMBER_SETS = {table: frozenset(members) for table, members in COLUMNAR.items()}


def _nullable(row: type, members: frozenset[str]) -> frozenset[str]:
    """Those of a row type's optional `members` whose value may be null when present."""
    hints = get_type_hints(row, include_extras=True)
    return frozenset(m for m in members if type(None) in get_args(get_args(hints[m])[0]))


# Members of a columnar table that a row may lack (absent when its column is NULL), and members
# stored as JSON text: those holding a list or an object, and optional members that may be null
# when present (a null is the text 'null', an absent member SQL NULL).
OPTIONAL: dict[str, frozenset[str]] = {
    "rounds": ROUND_OPTIONAL,
    "client_rounds": ROUND_OPTIONAL,
    "bets": BET_OPTIONAL,
}
NESTED: dict[str, frozenset[str]] = {
    "rounds": ROUND_NESTED,
    "client_rounds": ROUND_NESTED,
    "bets": BET_NESTED | _nullable(BetRow, BET_OPTIONAL),
}
_SUMMARY_COLUMNS = ", ".join(SUMMARY_MEMBERS)  # untyped: each value is stored as it came (text or NULL)


def _columns_v7(table: str) -> str:
    """The column definitions of a table made columnar by migration 7: its key (a single `sequence`
    is the rowid: no separate key index), then one column per member (report sums: integers that
    start at 0; others untyped, stored as they came)."""
    keys, members = TABLES[table], COLUMNAR[table]
    typed = " INTEGER NOT NULL DEFAULT 0" if table in ADDITIVE else ""
    columns = [m + typed for m in members]
    if keys == ("sequence",):
        return ", ".join(["sequence INTEGER PRIMARY KEY", *columns])
    return ", ".join([*keys, *columns, f"PRIMARY KEY ({', '.join(keys)})"])


def _to_columns_v7(table: str) -> tuple[str, ...]:
    """Migration 7 of one table: a columnar copy of it (its rows in rowid order), then swapped in."""
    keys, members = TABLES[table], COLUMNAR[table]
    return (
        f"CREATE TABLE {table}_v7 ({_columns_v7(table)})",
        f"INSERT INTO {table}_v7 ({', '.join([*keys, *members])}) SELECT {', '.join(keys)}, "
        + ", ".join(
            f"coalesce(json_extract(doc, '$.{m}'), 0)" if table in ADDITIVE else f"json_extract(doc, '$.{m}')"
            for m in members
        )
        + f" FROM {table} ORDER BY rowid",
        f"DROP TABLE {table}",  # and its indexes
        f"ALTER TABLE {table}_v7 RENAME TO {table}",
    )


def _to_columns_v8(table: str) -> tuple[str, ...]:
    """Migration 8 of one table: a columnar copy of it (its rows in rowid order), then swapped in.
    A member stored as JSON text is copied as the member's JSON (`->`: 'null' for a null member,
    NULL for an absent one)."""
    keys, members, nested = TABLES[table], COLUMNAR[table], NESTED.get(table, frozenset())
    return (
        f"CREATE TABLE {table}_v8 ({_columns_v7(table)})",
        f"INSERT INTO {table}_v8 ({', '.join([*keys, *members])}) SELECT {', '.join(keys)}, "
        + ", ".join(f"doc -> '$.{m}'" if m in nested else f"json_extract(doc, '$.{m}')" for m in members)
        + f" FROM {table} ORDER BY rowid",
        f"DROP TABLE {table}",  # and its primary-key index
        f"ALTER TABLE {table}_v8 RENAME TO {table}",
    )


# Numbered schema migrations, 1..N; never edit or drop one that was released, append a new one.
MIGRATIONS = (
    Migration(1, "meta, the append-only journal, the derived tables and their indexes", tuple(SCHEMA)),
    Migration(
        2,
        "signed checkpoints of the chain head and event consumers' cursors",
        (
            "CREATE TABLE IF NOT EXISTS checkpoints (sequence INTEGER PRIMARY KEY, doc TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS event_consumers (name TEXT PRIMARY KEY, acked_sequence INTEGER NOT NULL, "
            "doc TEXT NOT NULL) WITHOUT ROWID",
        ),
    ),
    Migration(
        3,
        "indexes of external references and of rounds by age (derived, rebuilt from the journal)",
        (
            "CREATE TABLE IF NOT EXISTS external_refs (external_ref, sequence, doc TEXT NOT NULL, "
            "PRIMARY KEY (external_ref, sequence))",
            "CREATE TABLE IF NOT EXISTS round_openings (sequence, doc TEXT NOT NULL, PRIMARY KEY (sequence))",
            "CREATE INDEX IF NOT EXISTS round_openings_open ON round_openings "
            "(json_extract(doc, '$.status'), sequence)",
        ),
    ),
    Migration(
        4,
        "the transaction index of operator queries: one summary row per journal entry",
        (
            "CREATE TABLE IF NOT EXISTS tx_summaries (sequence INTEGER PRIMARY KEY, doc TEXT NOT NULL)",
            *[
                f"CREATE INDEX IF NOT EXISTS tx_summaries_by_{name} ON tx_summaries "
                f"(json_extract(doc, '$.{name}'), sequence)"
                for name in (*SUMMARY_FILTERS, "committed_at")
            ],
        ),
    ),
    Migration(
        5,
        "finance report sums per day (derived, rebuilt from the journal)",
        (
            "CREATE TABLE IF NOT EXISTS report_play_days (day, currency, game_id, client_id, doc TEXT NOT NULL, "
            "PRIMARY KEY (day, currency, game_id, client_id))",
            "CREATE TABLE IF NOT EXISTS report_cash_days (day, currency, doc TEXT NOT NULL, "
            "PRIMARY KEY (day, currency))",
        ),
    ),
    Migration(
        6,
        "the transaction index as columns, indexed on player, round, type and time only",
        (
            f"CREATE TABLE tx_summaries_v6 (sequence INTEGER PRIMARY KEY, {_SUMMARY_COLUMNS})",
            f"INSERT INTO tx_summaries_v6 (sequence, {_SUMMARY_COLUMNS}) SELECT sequence, "
            + ", ".join(f"json_extract(doc, '$.{m}')" for m in SUMMARY_MEMBERS)
            + " FROM tx_summaries ORDER BY sequence",
            "DROP TABLE tx_summaries",  # and its nine expression indexes
            "ALTER TABLE tx_summaries_v6 RENAME TO tx_summaries",
            # The rowid is the sequence: each index orders by (member, sequence) without storing it twice.
            *[
                f"CREATE INDEX tx_summaries_by_{name} ON tx_summaries ({name})"
                for name in (*SUMMARY_INDEXED, "committed_at")
            ],
        ),
    ),
    Migration(
        7,
        "balances, balance history, rounds, round openings and report sums as columns (report sums as integers)",
        (
            *[
                s
                for table in ("accounts", "history", "round_openings", "rounds", "client_rounds", *sorted(ADDITIVE))
                for s in _to_columns_v7(table)
            ],
            # The rowid is the sequence: this index orders rounds by (status, sequence).
            "CREATE INDEX round_openings_open ON round_openings (status)",
            "CREATE INDEX rounds_by_round ON rounds (round_id)",
            "CREATE INDEX client_rounds_by_round ON client_rounds (round_id)",
        ),
    ),
    Migration(8, "bets as columns", _to_columns_v8("bets")),
    Migration(
        9,
        "the transaction index by player and by round from the balance history and the rounds, "
        "and partial indexes of the entries those do not find",
        (
            "DROP INDEX IF EXISTS tx_summaries_by_player_id",
            "DROP INDEX IF EXISTS tx_summaries_by_round_id",
            f"CREATE INDEX tx_summaries_unposted_by_player_id ON tx_summaries (player_id) WHERE {UNPOSTED}",
            f"CREATE INDEX tx_summaries_unnoted_by_round_id ON tx_summaries (round_id) WHERE {UNNOTED}",
        ),
    ),
    Migration(
        10,
        "finance report rows by client and day (the writer reads one client's rows of a day)",
        (REPORT_BY_CLIENT,),
    ),
)
MIGRATE_COMMAND = "croupier ledger migrate --config <ledger.toml>"
# Each connection's own page cache, MiB (SQLite's default: 2). A bulk seeder takes a bigger one:
# its inserts land all over indexes far bigger than 2 MiB.
CACHE_MIB_DEFAULT = 2
HEAD_SQL = "(SELECT value FROM meta WHERE key = 'head_sequence')"
# The sequence the stored derived rows reflect: `derived_sequence` (the watermark, see
# store/held_rows.py), or the head on a file no commit ever held rows behind. Every read of derived
# tables reports it as the head of its snapshot: the rows read reflect exactly that much journal.
DERIVED_SQL = (
    "(SELECT coalesce((SELECT value FROM meta WHERE key = 'derived_sequence'), "
    "(SELECT value FROM meta WHERE key = 'head_sequence')))"
)


def doc_sql(table: str, alias: str = "") -> str:
    """The SQL expression of a row's document (a JSON text) in `table`."""
    members = COLUMNAR.get(table)
    if members is None:
        return f"{alias}doc"
    nested, optional = NESTED.get(table, frozenset()), OPTIONAL.get(table, frozenset())

    def pairs(names: Sequence[str]) -> str:
        return ", ".join(f"'{m}', json({alias}{m})" if m in nested else f"'{m}', {alias}{m}" for m in names)

    doc = f"json_object({pairs(members)})"
    if not optional:
        return doc
    # An optional member's NULL column is its absence: removed from the object (a path to a member
    # that is not there, `$."~"`, removes nothing).
    absent = ", ".join(f"iif({alias}{m} IS NULL, '$.{m}', '$.\"~\"')" for m in members if m in optional)
    return f"json_remove({doc}, {absent})"


LOW_32 = 2**32 - 1


def _ints(members: Sequence[str], values: Sequence[int]) -> dict[str, int]:
    return dict(zip(members, map(int, values), strict=True))


def _joined_halves(members: Sequence[str], halves: Sequence[int]) -> dict[str, int]:
    """Sums of `members` from the sums of their high and low 32 bits, in pairs (`x >> 32` is
    arithmetic: x == (x >> 32) * 2^32 + (x & LOW_32), negative x too)."""
    return {m: (int(halves[2 * i]) << 32) + int(halves[2 * i + 1]) for i, m in enumerate(members)}


def _member_sql(table: str, name: str) -> str:
    """The SQL expression of one member of a row's document in `table` (NULL: a member that a
    columnar table does not have)."""
    members = COLUMNAR.get(table)
    if members is None:
        return f"json_extract(doc, '$.{name}')"
    if name not in members:
        return "NULL"
    return f"({name} ->> '$')" if name in NESTED.get(table, frozenset()) else name  # JSON text: its value


def _stored_columns(table: str) -> tuple[str, ...]:
    """The columns of `table` in order: its key columns, then `doc` or its members."""
    return (*TABLES[table], *COLUMNAR.get(table, ("doc",)))


# (position, name) of each member stored as JSON text, by columnar table.
_NESTED_AT = {t: tuple((i, m) for i, m in enumerate(COLUMNAR[t]) if m in nested) for t, nested in NESTED.items()}


def _check_members(table: str, items: Sequence[tuple[Key, Doc]]) -> None:
    """Refuse a document with a member its columnar table has no column for (a bug: it would be lost)."""
    known = _MEMBER_SETS.get(table)
    if known is not None and not all(known.issuperset(doc) for _, doc in items):
        unknown = sorted({m for _, doc in items for m in doc} - known)
        raise InvariantBroken(f"{table} has no column for the members {unknown} (see COLUMNAR)")


def _stored_rows(table: str, items: Sequence[tuple[Key, Doc]]) -> list[tuple[Any, ...]]:
    """The parameters that store `items` (key, document) in `table`, in `_stored_columns` order. A
    document with a member its columnar table has no column for is refused (a bug: it would be lost)."""
    members = COLUMNAR.get(table)
    if members is None:
        return [(*key, orjson.dumps(doc).decode()) for key, doc in items]
    _check_members(table, items)
    if table in ADDITIVE:  # sums: a member not given adds nothing
        return [(*key, *[doc.get(m, 0) for m in members]) for key, doc in items]
    nested_at = _NESTED_AT.get(table)
    if nested_at:
        rows = []
        for key, doc in items:
            row = [*map(doc.get, members)]
            for i, m in nested_at:  # JSON text; a member absent stays NULL (a null one is 'null')
                if row[i] is not None or m in doc:
                    row[i] = orjson.dumps(row[i]).decode()
            rows.append((*key, *row))
        return rows
    return [(*key, *map(doc.get, members)) for key, doc in items]


def _select_keys(table: str, count: int) -> str:
    """Rows of `table` whose key is one of `count` given keys, by primary-key lookups.

    (A row-value `IN (VALUES ...)` would scan the whole table; a join on a VALUES list seeks.)"""
    columns = TABLES[table]
    if len(columns) == 1:
        return f"SELECT {columns[0]}, {doc_sql(table)} FROM {table} WHERE {columns[0]} IN ({', '.join('?' * count)})"
    row = "(" + ", ".join("?" * len(columns)) + ")"
    on = " AND ".join(f"t.{c} = k.{c}" for c in columns)
    return (
        f"WITH k({', '.join(columns)}) AS (VALUES {', '.join([row] * count)}) "
        f"SELECT {', '.join('t.' + c for c in columns)}, {doc_sql(table, 't.')} FROM k JOIN {table} AS t ON {on}"
    )


def _load_sync(db: sqlite3.Connection, wanted: dict[str, Sequence[Key]]) -> dict[str, dict[Key, Doc]]:
    out: dict[str, dict[Key, Doc]] = {}
    for table, keys in wanted.items():
        found = out.setdefault(table, {})
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), KEYS_PER_QUERY_MAX):
            chunk = unique[start : start + KEYS_PER_QUERY_MAX]
            sql = (
                f"SELECT sequence, entry FROM journal WHERE sequence IN ({', '.join('?' * len(chunk))})"
                if table == ENTRIES
                else _select_keys(table, len(chunk))
            )
            # Closed here, even on an error: no statement of a load outlives it (see `load`).
            with closing(db.execute(sql, [part for key in chunk for part in key])) as rows:
                if table == ENTRIES:
                    for sequence, stored in rows:
                        found[(sequence,)] = orjson.loads(entry_text(stored))
                else:
                    for row in rows:
                        found[tuple(row[:-1])] = orjson.loads(row[-1])
    return out


def _key_page_sync(db: sqlite3.Connection, table: str, after: Key | None, limit: int) -> list[Key]:
    """Keys of `table` after `after` in key order, read from its key index (a row-value range)."""
    sql, params = key_page_query(table, after, limit, lambda _: "?")
    return _fetch_all(db, sql, params)  # rows are tuples (no row factory): the keys as `load` returns them


# An upsert, not INSERT OR REPLACE: a replace deletes the row and inserts it again under a new
# rowid, rewriting the primary-key and secondary index pages too; an upsert rewrites only the row
# (a round updated by each of its bets: 22% fewer WAL bytes per bet). A row written again unchanged
# (a round's opening, rewritten by each of its bets with the same status) is left alone: an update
# would dirty its page and rewrite its index entries for nothing. Tables of sums (`ADDITIVE`,
# integer columns): a commit's doc holds deltas, added column by column to the stored row.
def _upsert_clause(table: str) -> str:
    columns, key = _stored_columns(table), TABLES[table]
    if table in ADDITIVE:
        return f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET " + ", ".join(
            f"{m} = {m} + excluded.{m}" for m in COLUMNAR[table]
        )
    values = columns[len(key) :]
    return (
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in values)
        + f" WHERE ({', '.join(values)}) IS NOT ({', '.join('excluded.' + c for c in values)})"
    )


# A commit's rows go in multi-row statements of these sizes (greedily, largest first), not one
# step per row: the sqlite3 module lets go of the GIL around every step, and the SQLite thread then
# waits for the event loop to hand it back. A few fixed sizes keep the statements few and in the
# connection's statement cache (docs/decisions/sqlite-rows-in-multi-row-statements.md).
ROWS_PER_STATEMENT = (64, 16, 4, 1)
_INSERTS: dict[str, tuple[str, str, str]] = {
    t: (
        f"INSERT INTO {t} ({', '.join(_stored_columns(t))}) VALUES ",
        "(" + ", ".join("?" * len(_stored_columns(t))) + ")",
        _upsert_clause(t),
    )
    for t in TABLES
}
_INSERTS["journal"] = ("INSERT INTO journal (sequence, tx_id, entry) VALUES ", "(?, ?, ?)", "")
_STATEMENTS = {
    (t, n): head + ", ".join([row] * n) + tail for t, (head, row, tail) in _INSERTS.items() for n in ROWS_PER_STATEMENT
}


def _insert_rows(db: sqlite3.Connection, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """`rows` into `table` (its upsert), in order, in as few statements of ROWS_PER_STATEMENT as fit."""
    at = 0
    for size in ROWS_PER_STATEMENT:
        sql = _STATEMENTS[(table, size)]
        while len(rows) - at >= size:
            db.execute(sql, [value for row in rows[at : at + size] for value in row])
            at += size


def _commit_sync(db: sqlite3.Connection, journal: Sequence[JournalRow], rows: Rows, head: Head, held: HeldRows) -> None:
    """One group's commit: its journal rows and head; its derived rows are held (`held`) or, when a
    flush is due, written with everything held and the watermark moved to `head`."""
    require(
        [j.sequence for j in journal] == list(range(head.sequence - len(journal) + 1, head.sequence + 1)),
        "a commit's journal rows end at its head without a gap",
    )
    flush = held.due(rows)
    if not flush:  # refused now, not by the flush: this group is not acknowledged
        for table, items in rows.items():
            _check_members(table, items)
    with write_transaction(db):
        # The stored head must be where this commit starts (fencing, as on PostgreSQL).
        stored, watermark = _heads_sync(db)
        if stored != head.sequence - len(journal):
            refused = HeldRowsLost if held.groups and stored != held.head else StorageError
            raise refused(
                f"the stored journal head ({stored}) is not the one this commit extends "
                f"({head.sequence - len(journal)}): another writer?"
            )
        _check_watermark(held, stored, watermark)
        _insert_rows(db, "journal", [(j.sequence, j.tx_id, stored_entry(j.text)) for j in journal])
        meta: list[tuple[str, Any]] = [
            ("head_sequence", head.sequence),
            ("head_hash", head.hash),
            ("epoch", head.epoch),
        ]
        if flush:
            _write_held(db, held, rows)
            meta.append(("derived_sequence", head.sequence))
        elif held.groups == 0:  # the first group held since a flush: the watermark stays where it was
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('derived_sequence', ?)", (stored,))
        db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta)
    if flush:
        held.clear()
    else:
        held.hold(rows, stored, head.sequence)


def _heads_sync(db: sqlite3.Connection) -> tuple[int, int]:
    """(the stored head's sequence, the watermark of the stored derived rows)."""
    [(stored, watermark)] = _fetch_all(db, f"SELECT coalesce({HEAD_SQL}, 0), coalesce({DERIVED_SQL}, 0)", ())
    return int(stored), int(watermark)


class HeldRowsLost(StorageError):
    """Another writer or copy wrote this store since it last committed: the derived rows it holds
    (if any) are not its to write, and those stored are behind the head."""


def derived_behind(path: Path) -> bool:
    """Whether the derived rows of the SQLite ledger file at `path` stop below its head (rows a
    ledger held in memory when the file was copied, or when it crashed)."""
    with closing(sqlite3.connect(path)) as db:
        stored, watermark = _heads_sync(db)
    return watermark < stored


def _check_watermark(held: HeldRows, stored: int, watermark: int) -> None:
    """The stored derived rows must be where this store left them: at the head when it holds
    none, at the watermark its held rows start from when it holds some. Anything else is
    another copy's doing (rows it held and lost, or a fold of the journal's tail it wrote), and
    what this store would write on top could count the same entries twice."""
    expected = held.base if held.groups else stored
    if watermark != expected:
        raise HeldRowsLost(
            f"the stored derived rows reflect the journal up to {watermark}, not {expected}: "
            "another copy wrote or held them; the journal's tail is folded into them again"
        )


def _write_held(db: sqlite3.Connection, held: HeldRows, rows: Rows) -> None:
    """Everything `held` holds, merged with a commit's own `rows`; timed for the next flush's bound."""
    started, merged = time.perf_counter(), held.with_rows(rows)
    _write_derived(db, merged)
    held.measured(sum(map(len, merged.values())), time.perf_counter() - started)


def _write_derived(db: sqlite3.Connection, rows: Rows) -> None:
    for table, items in rows.items():
        _insert_rows(db, table, _stored_rows(table, items))


def _flush_sync(db: sqlite3.Connection, held: HeldRows) -> None:
    """Write everything held and move the watermark to the stored head."""
    if not held.groups:
        return
    with write_transaction(db):
        stored, watermark = _heads_sync(db)
        if stored != held.head:
            raise HeldRowsLost(f"the stored head ({stored}) moved past this store's last commit ({held.head})")
        _check_watermark(held, stored, watermark)
        _write_held(db, held, {})
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('derived_sequence', ?)", (stored,))
    held.clear()


def _write_derived_sync(db: sqlite3.Connection, rows: Rows, sequence: int) -> None:
    """Rows folded from the journal up to `sequence` (the stored head), and the watermark there."""
    with write_transaction(db):
        [(stored,)] = _fetch_all(db, f"SELECT coalesce({HEAD_SQL}, 0)", ())
        if stored != sequence:
            raise StorageError(f"derived rows folded up to {sequence}, but the stored head is {stored}")
        _write_derived(db, rows)
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('derived_sequence', ?)", (sequence,))


def _execute_count(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> int:
    """One autocommitted statement; the number of rows it changed."""
    return int(db.execute(sql, params).rowcount)


def _head_sync(db: sqlite3.Connection) -> Head:
    with closing(db.execute("SELECT key, value FROM meta WHERE key IN ('head_sequence', 'head_hash', 'epoch')")) as cur:
        return _head_of_meta({str(key): value for key, value in cur.fetchall()})


def _head_of_meta(meta: dict[str, Any]) -> Head:
    if "head_sequence" not in meta:
        return Head()
    return Head(int(meta["head_sequence"]), str(meta["head_hash"]), int(meta["epoch"]))


def _fetch_all(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    with closing(db.execute(sql, params)) as cur:
        return cur.fetchall()


def _replace_derived_sync(db: sqlite3.Connection, tables: dict[str, dict[Key, Doc]]) -> None:
    with write_transaction(db):
        db.execute(f"INSERT OR REPLACE INTO meta (key, value) SELECT 'derived_sequence', {HEAD_SQL} WHERE {HEAD_SQL}")
        for table in TABLES:
            columns = _stored_columns(table)
            db.execute(f"DELETE FROM {table}")
            db.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                _stored_rows(table, list(tables.get(table, {}).items())),
            )


def _replace_derived_from_sync(db: sqlite3.Connection, other: str) -> dict[str, int]:
    """Copy every derived table of the ledger file `other` over this one's, in one transaction
    (row by row inside SQLite: nothing is held in memory)."""
    db.execute("ATTACH DATABASE ? AS rebuilt", (other,))
    try:
        counts = {}
        with write_transaction(db):
            db.execute(
                f"INSERT OR REPLACE INTO meta (key, value) SELECT 'derived_sequence', {HEAD_SQL} WHERE {HEAD_SQL}"
            )
            for table in TABLES:
                names = ", ".join(_stored_columns(table))
                db.execute(f"DELETE FROM main.{table}")
                db.execute(f"INSERT INTO main.{table} ({names}) SELECT {names} FROM rebuilt.{table}")
                [(counts[table],)] = _fetch_all(db, f"SELECT count(*) FROM main.{table}", ())
        return counts
    finally:
        db.execute("DETACH DATABASE rebuilt")


def _snapshot_sync(db: sqlite3.Connection, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
    """Several queries of derived tables and their head (the watermark, `DERIVED_SQL`) in ONE read
    transaction (one snapshot); the head is the last result. Nothing stays open after it."""
    db.execute("BEGIN")
    try:
        found = [_fetch_all(db, sql, params) for sql, params in queries]
        [(head,)] = _fetch_all(db, f"SELECT {DERIVED_SQL}", ())
    finally:
        db.execute("ROLLBACK")
    return [*found, [int(head or 0)]]


def _fenced_by_sync(db: sqlite3.Connection) -> int:
    rows = _fetch_all(db, "SELECT value FROM meta WHERE key = 'fenced_by'", ())
    return int(rows[0][0]) if rows else 0


def _unfence_sync(db: sqlite3.Connection, epoch: int) -> int:
    db.execute("DELETE FROM meta WHERE key = 'fenced_by' AND value <= ?", (epoch,))
    return _fenced_by_sync(db)


def wal_autocheckpoint_pages(conn: sqlite3.Connection, wal_bytes: int = WAL_AUTOCHECKPOINT_BYTES) -> int:
    """`wal_bytes` in pages of this database (new ones: 1 KiB; older ones: 4 KiB)."""
    [(page_size,)] = _fetch_all(conn, "PRAGMA page_size", ())
    return max(1, wal_bytes // int(page_size))


def _set_autocheckpoint(conn: sqlite3.Connection, wal_bytes: int) -> None:
    conn.execute(f"PRAGMA wal_autocheckpoint={wal_autocheckpoint_pages(conn, wal_bytes)}")


class WalCheckpoint(NamedTuple):
    """What one `PRAGMA wal_checkpoint(PASSIVE)` reported: whether it could not run (another
    checkpoint held the lock), the frames in the WAL and how many of them are in the database now."""

    busy: bool
    wal_frames: int
    checkpointed_frames: int


def _checkpoint_sync(conn: sqlite3.Connection) -> WalCheckpoint:
    # PASSIVE: copies what it can without waiting for the writer or any reader, and blocks neither.
    [(busy, wal_frames, checkpointed)] = _fetch_all(conn, "PRAGMA wal_checkpoint(PASSIVE)", ())
    return WalCheckpoint(bool(busy), max(0, int(wal_frames)), max(0, int(checkpointed)))


async def _checkpoint_on(connection: SqliteThread) -> WalCheckpoint:
    try:
        return await connection.run(_checkpoint_sync)
    except sqlite3.Error as e:
        raise StorageError(f"WAL checkpoint failed: {e}") from e


def _connect(path: Path, cache_mib: int = CACHE_MIB_DEFAULT, *, check_same_thread: bool = True) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread)
    try:
        for pragma in PRAGMAS:
            conn.execute(pragma)
        _set_autocheckpoint(conn, WAL_AUTOCHECKPOINT_BYTES)
        conn.execute(f"PRAGMA cache_size={-1024 * cache_mib}")  # negative: KiB, not pages
    except BaseException:
        conn.close()
        raise
    return conn


def mkdir_durable(directory: Path) -> None:
    """Create `directory` and its missing parents, fsyncing each parent after the new entry: on a
    first install a power cut must not lose the directory that holds acknowledged commits."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        fsync_path(d.parent)


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by its path (a directory: the names it holds are durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Journal rows a commit may have and still run on the event loop's thread (with its derived rows
# held): the small groups of single requests (about 4 to 20 under load), not the batches of edges,
# whose commits overlap the reading of the next requests (see `SqliteStore.commit`).
HERE_JOURNAL_ROWS_MAX = 64


class SqliteStore(Store):
    """`allow_migration`: whether `open` may migrate a store that is behind (an empty one is always
    created at the latest version); `migrations` is replaced by tests only; `cache_mib`: the page
    cache of each of its connections (see CACHE_MIB_DEFAULT); `held_groups_max`, `held_rows_max`:
    commits whose derived rows are held in memory and written by one flush, and rows held at most
    (store/held_rows.py; 1 group: every commit writes its own).

    Derived rows held behind the journal never show: a read of derived tables (or of their keys)
    first writes what is held (`_derived_read`), and reports the watermark as its snapshot's head;
    the writer's loads read the held versions over storage. After a crash, or a failed write that
    gave up what was held, the stored derived rows stand at the watermark, below the head: they are
    `stale`, every read of them is refused until `write_derived` brings them up to the head
    (`Overlay.reload` folds the journal's tail into them)."""

    def __init__(
        self,
        path: Path,
        *,
        allow_migration: bool = True,
        migrations: Sequence[Migration] = MIGRATIONS,
        cache_mib: int = CACHE_MIB_DEFAULT,
        held_groups_max: int = GROUPS_MAX,
        held_rows_max: int = ROWS_MAX,
    ) -> None:
        self.path = path
        self._held = HeldRows(groups_max=held_groups_max, rows_max=held_rows_max)
        self.stale = False  # the stored derived rows are behind the head, nothing holds the rest
        self.cache_mib = cache_mib
        self.allow_migration = allow_migration
        self.migrations = tuple(migrations)
        self.schema_plan: Plan | None = None  # what the last `open` found and did
        self._writer: SqliteThread | None = None
        self._loader: SqliteThread | None = None  # the writer's loads only (see `load`)
        self._reader: SqliteThread | None = None
        self._checkpointer: SqliteThread | None = None  # only while `background_checkpoints` is on

    def child_location(self) -> dict[str, str]:
        return {"backend": "sqlite", "location": str(self.path.absolute())}  # whatever the working directory

    async def open(self) -> None:
        mkdir_durable(self.path.parent)
        try:
            self._writer = await self._connect("ledger-sqlite-writer", here=True)
            self.schema_plan = await self._writer.run(
                sqlite_migrate.migrate,
                self.migrations,
                allowed=self.allow_migration,
                store=f"the ledger database {self.path}",
                migrate_command=MIGRATE_COMMAND,
            )
            self._loader = await self._connect("ledger-sqlite-loader")
            self._reader = await self._connect("ledger-sqlite-reader")
            self._held = HeldRows(groups_max=self._held.groups_max, rows_max=self._held.rows_max)
            stored, watermark = await self._writer.run(_heads_sync)
            self.stale = watermark < stored
        except SchemaVersionError as e:
            await self.close()
            raise StorageError(str(e)) from e
        except sqlite3.Error as e:
            await self.close()
            raise StorageError(f"cannot open {self.path}: {e}") from e

    async def _connect(self, name: str, *, here: bool = False) -> SqliteThread:
        """A connection on a thread of its own; `here`: also usable on the event loop's thread
        (`SqliteThread.run_here`), which only the writer's connection is."""
        return await SqliteThread.open(
            lambda: _connect(self.path, self.cache_mib, check_same_thread=not here), name=name, here=here
        )

    async def close(self) -> None:
        if self._writer is not None and self._held.groups and not self.stale:
            try:
                await self.flush_derived()
            except StorageError as e:  # the watermark stays behind: the next open folds the journal's tail
                log.warning("ledger_derived_flush_at_close_failed", error=str(e))
        for conn in (self._checkpointer, self._reader, self._loader, self._writer):
            if conn is not None:
                await conn.close()
        self._checkpointer = self._reader = self._loader = self._writer = None

    async def background_checkpoints(self, on: bool) -> None:
        """On: WAL checkpoints are `checkpoint_wal`'s job, on a connection of its own, and the
        writer's autocheckpoint is only a backstop (WAL_BACKSTOP_BYTES). Off: the writer
        checkpoints inside its commits again (WAL_AUTOCHECKPOINT_BYTES), as it does by default."""
        if on and self._checkpointer is None:
            # The backstop first: should the connection then fail, the WAL is still bounded, and
            # a retry does both again.
            await self._w.run(_set_autocheckpoint, WAL_BACKSTOP_BYTES)
            self._checkpointer = await self._connect("ledger-sqlite-checkpointer")
        elif not on and self._checkpointer is not None:
            await self._w.run(_set_autocheckpoint, WAL_AUTOCHECKPOINT_BYTES)
            checkpointer, self._checkpointer = self._checkpointer, None
            await checkpointer.close()

    async def checkpoint_wal(self) -> WalCheckpoint:
        """Copy the WAL's committed frames into the database file (and fsync it), without blocking
        the writer or readers. Only while `background_checkpoints` is on."""
        if self._checkpointer is None:
            raise StorageError("background checkpoints are off")
        return await _checkpoint_on(self._checkpointer)

    async def checkpoint_wal_between_commits(self) -> WalCheckpoint:
        """The same on the writer's own connection, between two of its commits: nothing is
        committed while it copies, so it copies every frame (unless a reader still reads an older
        snapshot) and the next commit starts the WAL over (see core_ledger/wal_checkpoints.py)."""
        return await _checkpoint_on(self._w)

    @property
    def _w(self) -> SqliteThread:
        if self._writer is None:
            raise StorageError("the store is not open")
        return self._writer

    @property
    def _l(self) -> SqliteThread:
        if self._loader is None:
            raise StorageError("the store is not open")
        return self._loader

    @property
    def _r(self) -> SqliteThread:
        if self._reader is None:
            raise StorageError("the store is not open")
        return self._reader

    async def head(self) -> Head:
        # On the writer's connection: a head read queues behind a commit still running there.
        return await self._w.run(_head_sync)

    def holds_derived(self) -> bool:
        return self._held.groups > 0

    def derived_rows_held(self) -> int:
        return self._held.count

    def derived_rows_bound(self) -> int:
        return self._held.rows_bound()

    async def flush_derived(self) -> None:
        """Write the derived rows held in memory (and move the watermark to the head)."""
        if not self._held.groups:
            return
        try:
            await self._w.run(_flush_sync, self._held)
        except (HeldRowsLost, sqlite3.Error, SqliteThreadClosed) as e:
            self._give_up_held()
            raise StorageError(f"writing the held derived rows failed: {e}") from e

    def _give_up_held(self) -> None:
        """A write of held rows failed, and may or may not have landed: what storage holds is
        behind the head, until `write_derived`."""
        self._held.clear()
        self.stale = True

    async def derived_sequence(self) -> int:
        stored, watermark = await self._w.run(_heads_sync)
        return stored if self._held.groups else watermark

    async def write_derived(self, rows: Rows, sequence: int) -> None:
        try:
            await self._w.run(_write_derived_sync, rows, sequence)
        except (sqlite3.Error, SqliteThreadClosed) as e:
            raise StorageError(f"writing the folded derived rows failed: {e}") from e
        self.stale = False

    async def _derived_read(self) -> None:
        """Before any read of derived tables: they must show every commit that returned before it."""
        if self.stale:
            stored, watermark = await self._w.run(_heads_sync)
            self.stale = watermark < stored  # folded meanwhile (by whichever copy writes this store)
        if self.stale:
            raise StorageError(
                "the derived tables are behind the journal (a crash, or a failed write): the ledger "
                "folds the journal's tail into them when it (re)loads"
            )
        await self.flush_derived()

    async def load(self, wanted: dict[str, Sequence[Key]]) -> dict[str, dict[Key, Doc]]:
        # Not on the writer connection: a load runs while the writer commits the previous group
        # (rows that group changed are in the writer's overlay, so committed state is right for the
        # rest). Nor on the readers' connection: a read served there could, if it ever kept a
        # statement open across units of work, pin a snapshot older than the commits that ended
        # since, and a load run in between would join it: it would miss a just-committed journal
        # entry (a duplicate's replay then halted the writer on "entry N is missing") or return a
        # row older than storage holds. On its own connection, nothing holds a statement open
        # between loads (each is one unit, its statements closed within it), so every query of a
        # load sees every commit that returned before it started.
        #
        # Rows held behind the journal (store/held_rows.py) are newer than storage: a load reads
        # storage, then the held versions over it; a flush that ran in between moved `flushes`
        # before it let go of them, and the load reads again.
        held = self._held
        while True:
            flushes = held.flushes
            found = await self._l.run(_load_sync, wanted)
            if held.groups:
                for table, keys in wanted.items():
                    if table == ENTRIES:
                        continue
                    require(table not in ADDITIVE, "the writer loads no rows of sums")
                    rows = found.setdefault(table, {})
                    for key in keys:
                        is_held, doc = held.lookup(table, key)
                        if is_held:
                            rows[key] = doc  # type: ignore[assignment]  # a held row is never None
            if held.flushes == flushes:
                return found

    async def count_keys(self, table: str) -> int | None:
        await self._derived_read()
        [(count,)] = await self._l.run(_fetch_all, count_keys_query(table), ())
        return int(count)

    async def key_page(self, table: str, after: Key | None, limit: int) -> list[Key]:
        # On the loader's connection, one unit of work a page: the writer's loads interleave.
        await self._derived_read()
        return await self._l.run(_key_page_sync, table, after, limit)

    async def commit(self, journal: Sequence[JournalRow], rows: Rows, head: Head) -> None:
        if self.stale:
            raise StorageError("the derived tables are behind the journal: fold its tail into them first")
        # A small commit that only adds journal rows (its derived rows held) runs on the event
        # loop's thread: the writer waits for it anyway, and the thread hop cost more than the
        # commit. A larger one, or one that writes everything held (up to `held_rows_max` rows:
        # tens of milliseconds), runs in the writer's thread, so that the event loop reads and
        # checks the next requests meanwhile (docs/decisions/sqlite-commits-on-the-event-loop.md).
        here = len(journal) <= HERE_JOURNAL_ROWS_MAX and not self._held.due(rows)
        run = self._w.run_here if here else self._w.run
        try:
            await run(_commit_sync, journal, rows, head, self._held)
        except HeldRowsLost:
            self._give_up_held()  # another writer or another copy's rows: none of this store's to write
            raise
        except (sqlite3.Error, SqliteThreadClosed) as e:
            self._give_up_held()  # and this group's rows: the commit may have landed
            raise StorageError(f"commit failed: {e}") from e

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """One query on the readers' connection, executed, fetched and closed in ONE unit of work,
        so no statement stays open between reads: each read sees every commit that returned before
        it (an open statement would pin an older snapshot for whatever read runs next)."""
        return await self._r.run(_fetch_all, sql, params)

    async def get(self, table: str, key: Key) -> tuple[Doc | None, int]:
        columns = TABLES[table]
        where = " AND ".join(f"{c} = ?" for c in columns)
        sql = f"SELECT (SELECT {doc_sql(table)} FROM {table} WHERE {where}), {DERIVED_SQL}"
        await self._derived_read()
        [(doc, head)] = await self._read(sql, list(key))  # a SELECT without FROM returns exactly one row
        return (None if doc is None else orjson.loads(doc)), int(head or 0)

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
        columns = TABLES[table]
        clauses, params = [f"{c} = ?" for c in equals], list(equals.values())
        for name, value in (doc_equals or {}).items():
            clauses.append(f"{_member_sql(table, name)} = ?")
            params.append(value)
        clauses += [f"{_member_sql(table, name)} > 0" for name in doc_positive]
        if after is not None:
            clauses.append(f"{columns[-1]} > ?")
            params.append(after)
        where = " AND ".join(clauses) or "1"
        sql = (
            f"SELECT {', '.join(columns)}, {doc_sql(table)}, {DERIVED_SQL} FROM {table} WHERE {where} "
            f"ORDER BY {', '.join(columns)} LIMIT ?"
        )
        await self._derived_read()
        found = await self._read(sql, [*params, limit])
        if not found:
            return [], (await self._read_head())
        return [(tuple(row[:-2]), orjson.loads(row[-2])) for row in found], int(found[0][-1] or 0)

    async def _read_head(self) -> int:
        """The head of a read of derived tables that found no row: their watermark."""
        [(head,)] = await self._read(f"SELECT {DERIVED_SQL}")
        return int(head or 0)

    async def journal(self, after_sequence: int, limit: int) -> list[tuple[int, str]]:
        sql = "SELECT sequence, entry FROM journal WHERE sequence > ? ORDER BY sequence LIMIT ?"
        return [(int(s), entry_text(e)) for s, e in await self._read(sql, [after_sequence, limit])]

    async def journal_of(self, tx_id: str, limit: int) -> list[str]:
        sql = "SELECT entry FROM journal WHERE tx_id = ? ORDER BY sequence LIMIT ?"
        return [entry_text(row[0]) for row in await self._read(sql, [tx_id, limit])]

    async def dump(self, table: str) -> dict[Key, Doc]:
        await self._derived_read()
        columns = TABLES[table]
        rows = await self._read(f"SELECT {', '.join(columns)}, {doc_sql(table)} FROM {table}")
        return {tuple(row[:-1]): orjson.loads(row[-1]) for row in rows}

    async def replace_derived(self, tables: dict[str, dict[Key, Doc]]) -> None:
        self._held.clear()  # replaced: whatever was held is in `tables` (folded from the journal)
        await self._w.run(_replace_derived_sync, tables)
        self.stale = False

    async def replace_derived_from(self, other: Path) -> dict[str, int]:
        """Every derived table replaced by those of the ledger file `other` (a rebuild replayed
        there: `journal_checks.replay_journal`), in one transaction; rows per table."""
        self._held.clear()
        counts = await self._w.run(_replace_derived_from_sync, str(other))
        self.stale = False
        return counts

    async def fence(self, epoch: int) -> None:
        # Its own meta key: commits rewrite only the head keys, so a fence outlives them.
        sql = (
            "INSERT INTO meta (key, value) VALUES ('fenced_by', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)"
        )
        try:
            await self._w.run(_fetch_all, sql, (epoch,))
        except sqlite3.Error as e:
            raise StorageError(f"fence failed: {e}") from e

    async def fenced_by(self) -> int:
        return await self._w.run(_fenced_by_sync)

    async def unfence(self, epoch: int) -> int:
        try:
            return await self._w.run(_unfence_sync, epoch)
        except sqlite3.Error as e:
            raise StorageError(f"unfence failed: {e}") from e

    async def backup(self, path: Path) -> Head:
        """A consistent copy by SQLite's online backup, through aiosqlite's public API: one call on
        a connection of its own for as long as the copy takes, so API reads and the writer's loads
        are not held up behind it (see docs/decisions/one-sqlite-executor.md)."""
        mkdir_durable(path.parent)
        # The copy carries the watermark: rows still held when it is taken are folded from its
        # journal by whoever serves it. Written first, there are only the latest groups' left.
        await self.flush_derived()
        async with aiosqlite.connect(self.path) as source, aiosqlite.connect(path, isolation_level=None) as target:
            await source.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            await source.backup(target)
            meta = await target.execute_fetchall(
                "SELECT key, value FROM meta WHERE key IN ('head_sequence', 'head_hash', 'epoch')"
            )
        return _head_of_meta({str(key): value for key, value in meta})

    # Checkpoints and event consumers (see Store): small side tables, on the writer connection.

    async def _write(self, what: str, sql: str, params: Sequence[Any]) -> int:
        try:
            return await self._w.run(_execute_count, sql, params)
        except sqlite3.Error as e:
            raise StorageError(f"{what} failed: {e}") from e

    async def add_checkpoint(self, checkpoint: dict[str, Any]) -> bool:
        sql = "INSERT INTO checkpoints (sequence, doc) VALUES (?, ?) ON CONFLICT (sequence) DO NOTHING"
        text = orjson.dumps(checkpoint).decode()
        return await self._write("add_checkpoint", sql, (checkpoint["sequence"], text)) == 1

    async def checkpoints(self, after_sequence: int, limit: int) -> list[dict[str, Any]]:
        sql = "SELECT doc FROM checkpoints WHERE sequence > ? ORDER BY sequence LIMIT ?"
        return [orjson.loads(row[0]) for row in await self._read(sql, [after_sequence, limit])]

    async def latest_checkpoint(self) -> dict[str, Any] | None:
        rows = await self._read("SELECT doc FROM checkpoints ORDER BY sequence DESC LIMIT 1")
        return orjson.loads(rows[0][0]) if rows else None

    async def put_consumer(self, name: str, doc: dict[str, Any], *, cursor: int | None) -> tuple[dict[str, Any], int]:
        text = orjson.dumps(doc).decode()
        if cursor is None:
            sql = (
                "INSERT INTO event_consumers (name, acked_sequence, doc) VALUES (?, 0, ?) "
                "ON CONFLICT (name) DO UPDATE SET doc = excluded.doc"
            )
            await self._write("put_consumer", sql, (name, text))
        else:
            sql = (
                "INSERT INTO event_consumers (name, acked_sequence, doc) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET doc = excluded.doc, acked_sequence = excluded.acked_sequence"
            )
            await self._write("put_consumer", sql, (name, cursor, text))
        [(stored, kept)] = await self._read("SELECT doc, acked_sequence FROM event_consumers WHERE name = ?", [name])
        return orjson.loads(stored), int(kept)

    async def advance_consumer(self, name: str, sequence: int) -> int | None:
        sql = "UPDATE event_consumers SET acked_sequence = max(acked_sequence, ?) WHERE name = ?"
        await self._write("advance_consumer", sql, (sequence, name))
        rows = await self._read("SELECT acked_sequence FROM event_consumers WHERE name = ?", [name])
        return int(rows[0][0]) if rows else None

    async def consumers(self) -> dict[str, tuple[dict[str, Any], int]]:
        rows = await self._read("SELECT name, doc, acked_sequence FROM event_consumers ORDER BY name")
        return {str(name): (orjson.loads(doc), int(cursor)) for name, doc, cursor in rows}

    async def delete_consumer(self, name: str) -> bool:
        return await self._write("delete_consumer", "DELETE FROM event_consumers WHERE name = ?", (name,)) == 1

    # Operator queries (see Store): one statement each on the readers' connection, the head read in
    # the same statement (one snapshot).

    async def page(
        self,
        table: str,
        *,
        after: Key | None,
        limit: int,
        key_prefix: str | None = None,
        doc_equals: dict[str, Any] | None = None,
    ) -> tuple[list[tuple[Key, Doc]], int]:
        columns = TABLES[table]
        clauses, params = _prefix_clauses(columns[0], key_prefix, "?")
        for name, value in (doc_equals or {}).items():
            clauses.append(f"{_member_sql(table, name)} = ?")
            params.append(value)
        if after is not None:
            clauses.append(f"({', '.join(columns)}) > ({', '.join('?' * len(columns))})")
            params.extend(after)
        sql = (
            f"SELECT {', '.join(columns)}, {doc_sql(table)}, {DERIVED_SQL} FROM {table} "
            f"WHERE {' AND '.join(clauses) or '1'} "
            f"ORDER BY {', '.join(columns)} LIMIT ?"
        )
        await self._derived_read()
        found = await self._read(sql, [*params, limit])
        if not found:
            return [], await self._read_head()
        return [(tuple(row[:-2]), orjson.loads(row[-2])) for row in found], int(found[0][-1] or 0)

    async def summaries(
        self,
        equals: dict[str, str],
        *,
        after_sequence: int,
        limit: int,
        time_from: str | None = None,
        time_until: str | None = None,
    ) -> SummaryPage:
        await self._derived_read()
        found, head = await self._r.run(
            summaries_sync,
            doc_sql("tx_summaries", "t."),
            DERIVED_SQL,
            equals,
            after_sequence,
            limit,
            time_from,
            time_until,
        )
        return [(sequence, orjson.loads(doc)) for sequence, doc in found], head

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
        clauses, params = report_filter(table, day_from, day_to, equals, group_by, members, lambda _: "?")
        groups, width = ", ".join(group_by), len(group_by)
        if tuple(group_by) == TABLES[table]:  # one row per stored row: each sum within 64 bits
            values = ", ".join(f"coalesce({_member_sql(table, m)}, 0)" for m in members)
            sql = f"SELECT {groups}, {values} FROM {table} WHERE {' AND '.join(clauses)} ORDER BY {groups} LIMIT ?"
            decoded = partial(_ints, members)
        else:  # SQLite's sum() fails past 2^63: each member summed as its high and low 32 bits
            sums = ", ".join(
                f"coalesce(sum({value} >> 32), 0), coalesce(sum({value} & {LOW_32}), 0)"
                for value in (_member_sql(table, m) for m in members)
            )
            sql = (
                f"SELECT {groups}, {sums} FROM {table} WHERE {' AND '.join(clauses)} "
                f"GROUP BY {groups} ORDER BY {groups} LIMIT ?"
            )
            decoded = partial(_joined_halves, members)
        await self._derived_read()
        found, [head] = await self._r.run(_snapshot_sync, [(sql, [*params, limit])])
        return [(tuple(row[:width]), decoded(row[width:])) for row in found], head

    async def accounts_by_prefix(self, prefixes: Sequence[str], limit: int) -> tuple[dict[str, Doc], int]:
        queries = []
        for prefix in prefixes:
            clauses, params = _prefix_clauses("account", prefix, "?")
            queries.append(
                (
                    f"SELECT account, {doc_sql('accounts')} FROM accounts WHERE {' AND '.join(clauses)} LIMIT ?",
                    [*params, limit],
                )
            )
        await self._derived_read()
        *found, [head] = await self._r.run(_snapshot_sync, queries)
        return {str(account): orjson.loads(doc) for rows in found for account, doc in rows}, head

    async def history_at(self, account: str, sequence: int) -> Doc | None:
        sql = (
            f"SELECT sequence, {doc_sql('history')} FROM history WHERE account = ? AND sequence <= ? "
            "ORDER BY sequence DESC LIMIT 1"
        )
        await self._derived_read()
        rows = await self._read(sql, [account, sequence])
        return {**orjson.loads(rows[0][1]), "sequence": int(rows[0][0])} if rows else None

    async def sequence_at(self, moment: str) -> int:
        sql = (
            "SELECT sequence FROM tx_summaries WHERE committed_at <= ? "
            "ORDER BY committed_at DESC, sequence DESC LIMIT 1"
        )
        await self._derived_read()
        rows = await self._read(sql, [moment])
        return int(rows[0][0]) if rows else 0


def _prefix_clauses(column: str, prefix: str | None, mark: str) -> tuple[list[str], list[Any]]:
    """A key column starting with `prefix`, as an index range (keys compare by code point)."""
    if not prefix:
        return [], []
    return [f"{column} >= {mark}", f"{column} < {mark}"], [prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)]
