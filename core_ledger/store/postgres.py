"""PostgreSQL backend (asyncpg): the scale-out store, behind the same contract as SQLite.

The schema mirrors SQLite's: derived tables are (key columns..., doc TEXT) holding the same JSON
text; the journal (sequence, tx_id, entry) is append-only by trigger; `head` is one row. Text keys
use COLLATE "C" so ordering and `after` paging match the other backends (code-point order).

The writer's commit is ONE SERIALIZABLE transaction of ONE statement (`COMMIT_SQL`: head moved
first, fenced on the previous head, then journal rows and derived upserts by `unnest` arrays),
retried a bounded number of times on serialization failure or deadlock. It runs on a connection of
its own (`COMMIT_SETTINGS`: SERIALIZABLE is that session's default isolation), so the statement is
its own transaction: one round trip, no BEGIN and COMMIT around it (with a writer lease, the lease
check and the statement still share an explicit transaction). Pool connections keep their session
between checkouts (no reset query) and plan prepared statements per call. Reads of
a row or page plus the head run in one REPEATABLE READ READ ONLY transaction (one snapshot).
Driver errors become `StorageError` where the transaction ends. `backup` writes a SQLite ledger file (see `backup`).

The schema version is the one row of `schema_version`, moved forward by `MIGRATIONS` at open
under an advisory lock, in the transaction that creates the schema (see `shared.migrations`).

`replication_view` reports replication as seen from the server the store writes to (for
core_ledger/postgres_watch.py). A `WriterLease` (an advisory lock held by a session of its own)
makes a store one copy of an active/passive pair: its commits first prove the lease is held.
New pool connections come from `pg_connect.connect_read_write` (every host of a multi-host DSN
tried at once, each bounded; dead peers noticed within `dead_peer_s`).
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import orjson
import structlog

from shared.migrations import Migration, Plan, SchemaVersionError, plan

from core_ledger.domain.commands import require
from core_ledger.domain.journal import GENESIS_HASH
from core_ledger.domain.state import ADDITIVE, ENTRIES, LATER_TABLES, TABLES, Doc, Key
from core_ledger.store import pg_summaries
from core_ledger.store.base import (
    KEYS_PER_QUERY_MAX,
    REPORT_BY_CLIENT,
    SUMMARY_FILTERS,
    SUMMARY_INDEXED,
    Head,
    JournalRow,
    Rows,
    StorageError,
    Store,
    SummaryPage,
    count_keys_query,
    key_page_query,
    report_filter,
    summary_filter,
)
from core_ledger.store.pg_connect import connect_read_write
from core_ledger.store.sqlite import SqliteStore

log = structlog.get_logger("croupier.ledger.postgres")

ROWS_PER_STATEMENT_MAX = 5000  # bound on the arrays of one insert/upsert statement
BACKUP_PAGE_ROWS = 2000  # rows fetched per round trip while copying a snapshot out
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
KEY_TYPES = {"sequence": "bigint"}  # key columns that are not text (history's journal sequence)
LOAD_KEYS = {**TABLES, ENTRIES: ("sequence",)}  # what `load` accepts: the tables and the journal
# Ends of a transaction that may be retried as is: nothing of it was committed.
RETRYABLE = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)
# What the driver raises when the server or the network failed. `InternalClientError` is among
# them: asyncpg raises it ("cannot switch to state 12; another operation (2) is in progress") when
# the server ended a session in the middle of a statement, as a dying leader does during a
# failover; it says the connection is unusable, not that the ledger is wrong.
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)
# After these the connection's protocol state is unknown: it is closed, never given out again.
CONNECTION_BROKEN = (asyncpg.InterfaceError, asyncpg.InternalClientError)
T = TypeVar("T")


@dataclass(frozen=True)
class PostgresLimits:
    pool_size_max: int = 8
    connect_timeout_s: float = 10.0
    acquire_timeout_s: float = 10.0
    command_timeout_s: float = 30.0
    serialization_attempts_max: int = 8  # tries of one write transaction, the first included
    retry_backoff_s: float = 0.005  # times the attempt number
    dead_peer_s: float = 5.0  # a pooled connection whose server stays silent this long is closed (pg_connect.py)


def _key_type(column: str) -> str:
    return KEY_TYPES.get(column, "text")


def _column_def(column: str) -> str:
    typ = _key_type(column)
    return f"{column} {typ}" + (' COLLATE "C"' if typ == "text" else "")


def _summary_member(name: str) -> str:
    """A member of a transaction index row, as the SQL expression its index is built on."""
    return f"((doc::jsonb) ->> '{name}')"


SCHEMA = [
    "CREATE TABLE IF NOT EXISTS head (one boolean PRIMARY KEY DEFAULT true CHECK (one), "
    "sequence bigint NOT NULL, hash text NOT NULL, epoch bigint NOT NULL)",
    f"INSERT INTO head (sequence, hash, epoch) VALUES (0, '{GENESIS_HASH}', 1) ON CONFLICT DO NOTHING",
    "ALTER TABLE head ADD COLUMN IF NOT EXISTS fenced_by bigint NOT NULL DEFAULT 0",
    "CREATE TABLE IF NOT EXISTS journal (sequence bigint PRIMARY KEY, tx_id text, entry text NOT NULL)",
    "CREATE INDEX IF NOT EXISTS journal_tx_id ON journal (tx_id)",
    "CREATE OR REPLACE FUNCTION journal_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'the journal is append-only'; END $$",
    "CREATE OR REPLACE TRIGGER journal_no_change BEFORE UPDATE OR DELETE OR TRUNCATE ON journal "
    "FOR EACH STATEMENT EXECUTE FUNCTION journal_append_only()",
    *[
        f"CREATE TABLE IF NOT EXISTS {t} ({', '.join(map(_column_def, cols))}, doc text NOT NULL, "
        f"PRIMARY KEY ({', '.join(cols)}))"
        for t, cols in TABLES.items()
        if t not in LATER_TABLES
    ],
    "CREATE INDEX IF NOT EXISTS rounds_by_round ON rounds (round_id)",
    "CREATE INDEX IF NOT EXISTS client_rounds_by_round ON client_rounds (round_id)",
    "CREATE INDEX IF NOT EXISTS idem_by_id ON idem (id)",
]
SCHEMA_LOCK = 0x43524F55  # advisory lock: ledgers starting together create the schema once
# Numbered schema migrations, 1..N; never edit or drop one that was released, append a new one.
MIGRATIONS = (
    Migration(1, "head, the append-only journal, the derived tables and their indexes", tuple(SCHEMA)),
    Migration(
        2,
        "signed checkpoints of the chain head and event consumers' cursors",
        (
            "CREATE TABLE IF NOT EXISTS checkpoints (sequence bigint PRIMARY KEY, doc text NOT NULL)",
            'CREATE TABLE IF NOT EXISTS event_consumers (name text COLLATE "C" PRIMARY KEY, '
            "acked_sequence bigint NOT NULL, doc text NOT NULL)",
        ),
    ),
    Migration(
        3,
        "indexes of external references and of rounds by age (derived, rebuilt from the journal)",
        (
            'CREATE TABLE IF NOT EXISTS external_refs (external_ref text COLLATE "C", sequence bigint, '
            "doc text NOT NULL, PRIMARY KEY (external_ref, sequence))",
            "CREATE TABLE IF NOT EXISTS round_openings (sequence bigint PRIMARY KEY, doc text NOT NULL)",
        ),
    ),
    Migration(
        4,
        "the transaction index of operator queries: one summary row per journal entry",
        (
            "CREATE TABLE IF NOT EXISTS tx_summaries (sequence bigint PRIMARY KEY, doc text NOT NULL)",
            *[
                f"CREATE INDEX IF NOT EXISTS tx_summaries_by_{name} ON tx_summaries ({_summary_member(name)}, sequence)"
                for name in (*SUMMARY_FILTERS, "committed_at")
            ],
        ),
    ),
    Migration(
        5,
        "finance report sums per day (derived, rebuilt from the journal)",
        (
            'CREATE TABLE IF NOT EXISTS report_play_days (day text COLLATE "C", currency text COLLATE "C", '
            'game_id text COLLATE "C", client_id text COLLATE "C", doc text NOT NULL, '
            "PRIMARY KEY (day, currency, game_id, client_id))",
            'CREATE TABLE IF NOT EXISTS report_cash_days (day text COLLATE "C", currency text COLLATE "C", '
            "doc text NOT NULL, PRIMARY KEY (day, currency))",
        ),
    ),
    Migration(
        6,
        "the transaction index keeps the indexes of player, round, type and time only",
        tuple(
            f"DROP INDEX IF EXISTS tx_summaries_by_{name}" for name in SUMMARY_FILTERS if name not in SUMMARY_INDEXED
        ),
    ),
    # SQLite's migration 7 stores balances, history, rounds, round openings and report sums as columns; the
    # rows here stay documents (see docs/decisions/sqlite-derived-rows-as-columns.md): the version
    # moves so both backends number the same schema steps.
    Migration(7, "no change here: SQLite's balances, history, rounds, round openings and report sums as columns", ()),
    Migration(8, "no change here: SQLite's bets as columns", ()),
    Migration(
        9,
        "the transaction index by player and by round from the balance history and the rounds, "
        "and partial indexes of the entries those do not find",
        (
            "DROP INDEX IF EXISTS tx_summaries_by_player_id",
            "DROP INDEX IF EXISTS tx_summaries_by_round_id",
            "CREATE INDEX IF NOT EXISTS tx_summaries_unposted_by_player_id ON tx_summaries "
            f"({_summary_member('player_id')}, sequence) WHERE {pg_summaries.UNPOSTED}",
            "CREATE INDEX IF NOT EXISTS tx_summaries_unnoted_by_round_id ON tx_summaries "
            f"({_summary_member('round_id')}, sequence) WHERE {pg_summaries.UNNOTED}",
        ),
    ),
    Migration(
        10,
        "finance report rows by client and day (the writer reads one client's rows of a day)",
        (REPORT_BY_CLIENT,),
    ),
)
MIGRATE_COMMAND = "croupier ledger migrate --config <ledger.toml>"
VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version "
    "(one boolean PRIMARY KEY DEFAULT true CHECK (one), version integer NOT NULL)"
)


async def _migrate_in(conn: asyncpg.Connection, schema: str, migrations: Sequence[Migration], *, allowed: bool) -> Plan:
    """Inside the open transaction (advisory lock held): bring `schema` to the code's version."""
    empty = not await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = $1", schema)
    stored = 0
    if await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL"):
        stored = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
    steps = plan(
        migrations,
        stored,
        empty=empty,
        allowed=allowed,
        store=f"the PostgreSQL ledger schema {schema!r}",
        migrate_command=MIGRATE_COMMAND,
    )
    for step in steps.steps:
        for statement in step.statements:
            await conn.execute(statement)
    if steps.steps:
        await conn.execute(VERSION_TABLE)
        await conn.execute(
            "INSERT INTO schema_version (version) VALUES ($1) "
            "ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version",
            steps.target,
        )
        log.info(
            "schema_migrated",
            store=f"postgres:{schema}",
            from_version=steps.stored,
            to_version=steps.target,
            steps=[f"{m.version}: {m.summary}" for m in steps.steps],
        )
    return steps


def _unnest(columns: Sequence[str], *, with_doc: bool) -> str:
    """`unnest($1::type[], ...) AS k(columns)`: a batch of rows, one array parameter per column."""
    names = [*columns, "doc"] if with_doc else list(columns)
    types = [_key_type(c) for c in columns] + (["text"] if with_doc else [])
    arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, 1))
    return f"unnest({arrays}) AS k({', '.join(names)})"


def _load_many_sql(tables: Sequence[str]) -> str:
    """The rows of several tables (or of the journal: ENTRIES, by sequence) among batches of keys,
    as ONE statement (one round trip for a writer's whole pass): each row is (the table's position
    in `tables`, its key columns as text, its doc); the parameters are the key arrays of each
    table in turn."""
    parts, n = [], 0
    for i, table in enumerate(tables):
        source, doc = ("journal", "entry") if table == ENTRIES else (table, "doc")
        columns = LOAD_KEYS[table]
        arrays = ", ".join(f"${n + k}::{_key_type(c)}[]" for k, c in enumerate(columns, 1))
        n += len(columns)
        parts.append(
            f"SELECT {i} AS t, ARRAY[{', '.join(f'k.{c}::text' for c in columns)}] AS key, s.{doc} AS doc "
            f"FROM unnest({arrays}) AS k({', '.join(columns)}) JOIN {source} AS s USING ({', '.join(columns)})"
        )
    return "\nUNION ALL ".join(parts)


def _key_of(texts: Sequence[str], columns: Sequence[str]) -> Key:
    """A key read back as text (`_load_many_sql`) in its columns' types."""
    return tuple(int(v) if _key_type(c) == "bigint" else v for v, c in zip(texts, columns, strict=True))


def _write_sql(table: str, *, upsert: bool) -> str:
    columns = TABLES[table]
    conflict = f" ON CONFLICT ({', '.join(columns)}) DO UPDATE SET doc = EXCLUDED.doc" if upsert else ""
    return f"INSERT INTO {table} ({', '.join(columns)}, doc) SELECT * FROM {_unnest(columns, with_doc=True)}{conflict}"


def _columns_of(keys: Sequence[Key], width: int) -> list[list[Any]]:
    return [[key[i] for key in keys] for i in range(width)]


async def _write_rows(conn: asyncpg.Connection, table: str, items: dict[Key, Doc], *, upsert: bool) -> None:
    """Insert (or upsert) rows in statements of at most ROWS_PER_STATEMENT_MAX rows."""
    sql, width, pairs = _write_sql(table, upsert=upsert), len(TABLES[table]), list(items.items())
    for start in range(0, len(pairs), ROWS_PER_STATEMENT_MAX):
        chunk = pairs[start : start + ROWS_PER_STATEMENT_MAX]
        docs = [orjson.dumps(doc).decode() for _, doc in chunk]
        await conn.execute(sql, *_columns_of([k for k, _ in chunk], width), docs)


def _on_conflict(table: str) -> str:
    """What an upsert does to a stored row: replace its doc; for a table of sums (`ADDITIVE`: the
    doc holds deltas), add each member to the stored one."""
    if table not in ADDITIVE:
        return "doc = EXCLUDED.doc"
    return (
        "doc = (SELECT json_object_agg(d.key, d.value::bigint + coalesce((cur.doc::jsonb ->> d.key)::bigint, 0))::text "
        "FROM jsonb_each_text(EXCLUDED.doc::jsonb) AS d)"
    )


def _commit_sql() -> str:
    """A whole group commit as ONE statement (data-modifying CTEs): move the head (fenced on the
    previous one), append the journal rows, upsert every derived table, each from arrays with
    `unnest`. Every table is always named (its arrays empty when the group changed none of its
    rows), so the text is one prepared statement. Its result is 1 when the head moved, 0 (and
    nothing written: every insert is guarded by the move) when the stored head was not the one
    this commit extends. Parameters: `_commit_args`."""
    ctes = [
        "moved AS (UPDATE head SET sequence = $1, hash = $2, epoch = $3 WHERE sequence = $4 RETURNING 1)",
        "j AS (INSERT INTO journal (sequence, tx_id, entry) SELECT * FROM "
        "unnest($5::bigint[], $6::text[], $7::text[]) WHERE EXISTS (SELECT 1 FROM moved))",
    ]
    n = 7
    for i, (table, columns) in enumerate(TABLES.items()):
        names = [*columns, "doc"]
        types = [_key_type(c) for c in columns] + ["text"]
        arrays = ", ".join(f"${n + k}::{t}[]" for k, t in enumerate(types, 1))
        n += len(types)
        ctes.append(
            f"t{i} AS (INSERT INTO {table} AS cur ({', '.join(names)}) SELECT * FROM unnest({arrays}) "
            f"AS k({', '.join(names)}) WHERE EXISTS (SELECT 1 FROM moved) "
            f"ON CONFLICT ({', '.join(columns)}) DO UPDATE SET {_on_conflict(table)})"
        )
    return "WITH " + ",\n".join(ctes) + "\nSELECT count(*) FROM moved"


COMMIT_SQL = _commit_sql()


def _commit_args(journal: Sequence[JournalRow], rows: Rows, head: Head) -> list[Any]:
    args: list[Any] = [
        head.sequence,
        head.hash,
        head.epoch,
        head.sequence - len(journal),
        [j.sequence for j in journal],
        [j.tx_id for j in journal],
        [j.text for j in journal],
    ]
    for table, columns in TABLES.items():
        items = dict(rows.get(table, ()))  # the last doc of a key wins: an upsert may touch a row once
        args.extend(_columns_of(list(items), len(columns)))
        args.append([orjson.dumps(doc).decode() for doc in items.values()])
    return args


async def _commit_in(
    conn: asyncpg.Connection, journal: Sequence[JournalRow], rows: Rows, head: Head, lease: WriterLease | None = None
) -> None:
    """One SERIALIZABLE transaction of one statement. On the commit connection (`COMMIT_SETTINGS`)
    the statement alone is that transaction: one round trip, committed (and flushed, with
    synchronous_commit on) before its answer arrives; all or nothing of it is stored. With a
    writer lease: BEGIN, the lease check, `COMMIT_SQL`, COMMIT."""
    require(
        [j.sequence for j in journal] == list(range(head.sequence - len(journal) + 1, head.sequence + 1)),
        "a commit's journal rows end at its head without a gap",
    )
    args = _commit_args(journal, rows, head)
    if lease is None:
        moved = await conn.fetchval(COMMIT_SQL, *args)
    else:
        async with conn.transaction(isolation="serializable"):
            await lease.check_in(conn)
            moved = await conn.fetchval(COMMIT_SQL, *args)
    # Fencing: the stored head must be where this writer believes it is (when it was not, every
    # insert of the statement was guarded by the head's move: nothing was written).
    if not moved:
        raise StorageError("the stored journal head is not the one this commit extends (another writer?)")


async def _replace_in(conn: asyncpg.Connection, tables: dict[str, dict[Key, Doc]]) -> None:
    async with conn.transaction(isolation="serializable"):
        for table in TABLES:
            await conn.execute(f"DELETE FROM {table}")
            await _write_rows(conn, table, tables.get(table, {}), upsert=False)


# Prepared statements (asyncpg caches them per connection) plan for the values of each call, never
# a generic plan: one made while a table was empty (a fresh database) kept a full scan of `bets`
# for the duplicate lookup by (client_id, bet_id) after the table grew. Planning these short
# statements costs far less than one wrong plan. See docs/decisions/postgres-commit-path.md.
PLAN_SETTINGS = {"plan_cache_mode": "force_custom_plan"}
# The commit connection: every transaction on it is SERIALIZABLE unless it says otherwise, so
# `COMMIT_SQL` is sent alone (its own transaction, one round trip). That statement's plan depends
# on no value (a one-row head, inserts from arrays on their keys), so its generic plan is kept
# rather than planning some fifteen CTEs at every commit.
COMMIT_SETTINGS = {"default_transaction_isolation": "serializable", "plan_cache_mode": "auto"}
COMMIT_CONNECTIONS = 1  # the writer commits one group at a time


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A connection back in the pool keeps its session (no reset query: one round trip less per
    checkout). asyncpg still rolls back a transaction left open; this store sets no session
    state, takes only transaction-scoped advisory locks, opens no cursor outside a transaction
    and listens to nothing, so there is nothing else to reset."""


@dataclass(frozen=True)
class ReplicationView:
    """PostgreSQL replication as the ledger sees it from the server it writes to (the leader)."""

    server: str  # host:port of that server: another one after a leader change
    timeline: int  # PostgreSQL's timeline: a promotion starts a new one
    synchronous_expected: bool  # synchronous_standby_names is set (Patroni's synchronous mode)
    synchronous_replicas: int  # replicas in sync (or quorum) state: a commit waits for one of them
    replicas: int  # replicas streaming from this server
    lag_bytes: int  # the largest replay lag of a replica, in WAL bytes
    lag_seconds: float  # the largest replay lag of a replica, in seconds


# One round trip; pg_stat_replication shows every replica to a superuser or a pg_monitor member.
REPLICATION_VIEW_SQL = """
SELECT host(inet_server_addr()) || ':' || inet_server_port() AS server,
       ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline,
       current_setting('synchronous_standby_names') <> '' AS synchronous_expected,
       count(r.pid) FILTER (WHERE r.sync_state IN ('sync', 'quorum')) AS synchronous_replicas,
       count(r.pid) AS replicas,
       coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)), 0)::bigint AS lag_bytes,
       coalesce(max(extract(epoch FROM r.replay_lag)), 0)::float8 AS lag_seconds
FROM (SELECT 1) AS one LEFT JOIN pg_stat_replication AS r ON true
"""


WRITER_LOCK_CLASS = 0x43525752  # advisory lock class of the writer lease ("CRWR"); the schema names the object
LEASE_CHECK_SQL = (
    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 "
    "AND objsubid = 2 AND pid = $3 AND granted"
)


def writer_lock_object(schema: str) -> int:
    """The advisory lock object of a schema's writer (a positive 31-bit number, as pg_locks shows it)."""
    return zlib.crc32(schema.encode()) & 0x7FFFFFFF


class WriterLease:
    """The only-writer lease of an active/passive ledger pair on one PostgreSQL: a session advisory
    lock held on a connection of its own for the ledger's whole life. The passive copy waits in
    `acquire`; when the active dies or loses the database, its session ends, PostgreSQL releases
    the lock and the passive one gets it. Every commit of a store holding a lease first checks, in
    its own transaction, that the lease's session still holds the lock (so a writer that lost it
    commits nothing), and the head compare-and-set fences the rest."""

    def __init__(
        self, dsn: str, schema: str, limits: PostgresLimits = PostgresLimits(), *, ttl_s: float | None = None
    ) -> None:
        self._dsn = dsn
        self.schema = schema
        self.limits = limits
        self.ttl_s = ttl_s  # set: the server ends the lease's session after this long without a heartbeat
        self.object = writer_lock_object(schema)
        self._conn: asyncpg.Connection | None = None
        self.pid: int | None = None  # backend pid of the session holding the lock

    def __repr__(self) -> str:
        return f"WriterLease(schema={self.schema!r}, pid={self.pid})"

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.is_closed() and self.pid is not None

    async def acquire(self, *, poll_s: float = 0.5, timeout_s: float | None = None) -> bool:
        """Wait for the lock (at most `timeout_s`, forever if None); True once held."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(
                        self._dsn, timeout=self.limits.connect_timeout_s, server_settings=self._session_settings()
                    )
                async with asyncio.timeout(self.limits.connect_timeout_s):
                    locked = await self._try_lock(self._conn)
                if locked:
                    async with asyncio.timeout(self.limits.connect_timeout_s):
                        self.pid = int(await self._conn.fetchval("SELECT pg_backend_pid()"))
                    log.info("postgres_writer_lease_acquired", schema=self.schema, pid=self.pid)
                    return True
            except DRIVER_ERRORS as e:
                log.warning("postgres_writer_lease_wait_failed", schema=self.schema, error=f"{type(e).__name__}: {e}")
                await self._drop()
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(poll_s)

    async def _try_lock(self, conn: asyncpg.Connection) -> bool:
        return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", WRITER_LOCK_CLASS, self.object))

    def _session_settings(self) -> dict[str, str]:
        """With a ttl, PostgreSQL itself ends the lease's session once it went quiet that long
        (`idle_session_timeout`): an active cut off from the database (no FIN, no RST reaches the
        server) loses the lock after `ttl_s`, so the passive can take it. The holder keeps it with
        `heartbeat` well within the ttl; a waiting copy polls within it too."""
        if self.ttl_s is None:
            return {}
        return {"idle_session_timeout": str(max(1, round(self.ttl_s * 1000)))}

    async def heartbeat(self, timeout_s: float) -> None:
        """Prove the lease's session is alive and still holds the lock (within `timeout_s`);
        StorageError if not (the caller stops writing at once)."""
        conn = self._conn
        if conn is None or conn.is_closed() or self.pid is None:
            raise StorageError("the writer lease's session is gone")
        try:
            async with asyncio.timeout(timeout_s):
                held = await conn.fetchval(LEASE_CHECK_SQL, WRITER_LOCK_CLASS, self.object, self.pid)
        except DRIVER_ERRORS as e:
            raise StorageError(f"the writer lease's session did not answer: {type(e).__name__}: {e}") from e
        if held is None:
            raise StorageError("the writer lease's session no longer holds the lock")

    async def release(self) -> None:
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn, self.pid = self._conn, None, None
        if conn is not None and not conn.is_closed():
            try:
                async with asyncio.timeout(self.limits.connect_timeout_s):
                    await conn.close()
            except DRIVER_ERRORS:
                conn.terminate()

    async def check_in(self, conn: asyncpg.Connection) -> None:
        """Inside a commit's transaction: StorageError unless this lease's session holds the lock."""
        if self.pid is None or await conn.fetchval(LEASE_CHECK_SQL, WRITER_LOCK_CLASS, self.object, self.pid) is None:
            raise StorageError("this ledger does not hold the writer lease (another copy is the active one)")


def _pairs(found: Sequence[asyncpg.Record]) -> list[tuple[Key, Doc]]:
    return [(tuple(row[:-1]), orjson.loads(row[-1])) for row in found]


class PostgresStore(Store):
    """`dsn` holds a password: it is never logged nor put in an error message."""

    # The server commits in its own process while the event loop waits on the socket: judging the
    # next group meanwhile overlaps them (docs/decisions/pipeline-depth-by-backend.md).
    pipeline_depth = 2

    def __init__(
        self,
        dsn: str,
        limits: PostgresLimits = PostgresLimits(),
        *,
        schema: str = "public",
        allow_migration: bool = True,
        migrations: Sequence[Migration] = MIGRATIONS,
        create: bool = True,
    ) -> None:
        if not SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema {schema!r} is not a plain lower-case SQL name")
        self._dsn = dsn
        self.limits = limits
        self.schema = schema
        self.allow_migration = allow_migration  # see SqliteStore
        self.create = create  # False: a schema without ledger tables is refused, never created (offline tools)
        self.migrations = tuple(migrations)
        self.schema_plan: Plan | None = None  # what the last `open` found and did
        self._pool: asyncpg.Pool | None = None
        self._commit_pool: asyncpg.Pool | None = None  # the commit connection (see COMMIT_SETTINGS)
        self.lease: WriterLease | None = None  # set: every commit first proves this lease is held
        # More settings of every pooled session (a pair's copy: `idle_in_transaction_session_timeout`, so
        # a transaction left open by a copy cut off from the database does not lock the head for long).
        self.session_settings: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"PostgresStore(schema={self.schema!r})"

    def child_location(self) -> dict[str, str]:
        return {"backend": "postgres", "location": self._dsn, "postgres_schema": self.schema}

    async def _create_pool(self, size: int, settings: dict[str, str]) -> asyncpg.Pool:
        lim = self.limits
        return await asyncpg.create_pool(
            self._dsn,
            min_size=1,
            max_size=size,
            timeout=lim.connect_timeout_s,
            command_timeout=lim.command_timeout_s,
            reset=_keep_session,
            connect=functools.partial(connect_read_write, dead_peer_s=lim.dead_peer_s),
            server_settings={**self.session_settings, "search_path": self.schema, **settings},
        )

    async def open(self) -> None:
        """The pools (`pool_size_max` connections in all, the commit connection among them, and at
        least one more), then the schema brought to the code's version."""
        lim = self.limits
        try:
            self._pool = await self._create_pool(max(1, lim.pool_size_max - COMMIT_CONNECTIONS), PLAN_SETTINGS)
            self._commit_pool = await self._create_pool(COMMIT_CONNECTIONS, COMMIT_SETTINGS)
            async with self._pool.acquire(timeout=lim.acquire_timeout_s) as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
                if not self.create and not await conn.fetchval(
                    "SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'journal'", self.schema
                ):
                    raise StorageError(f"no ledger in the PostgreSQL schema {self.schema!r} (nothing was created)")
                if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", self.schema):
                    await conn.execute(f'CREATE SCHEMA "{self.schema}"')
                self.schema_plan = await _migrate_in(conn, self.schema, self.migrations, allowed=self.allow_migration)
        except SchemaVersionError as e:
            await self.close()
            raise StorageError(str(e)) from e
        except StorageError:
            await self.close()
            raise
        except DRIVER_ERRORS as e:
            await self.close()
            raise StorageError(f"cannot open the PostgreSQL store: {type(e).__name__}: {e}") from e

    async def close(self) -> None:
        pools, self._pool, self._commit_pool = (self._pool, self._commit_pool), None, None
        for pool in pools:
            if pool is not None:
                await pool.close()

    @property
    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageError("the store is not open")
        return self._pool

    @asynccontextmanager
    async def _conn(self, what: str, pool: asyncpg.Pool | None = None) -> AsyncIterator[asyncpg.Connection]:
        """A connection of the readers' pool (or of `pool`); driver errors become StorageError."""
        try:
            async with (pool or self._p).acquire(timeout=self.limits.acquire_timeout_s) as conn:
                try:
                    yield conn
                except CONNECTION_BROKEN:
                    conn.terminate()  # back in the pool it would fail every later checkout
                    raise
        except DRIVER_ERRORS as e:
            raise StorageError(f"{what} failed: {type(e).__name__}: {e}") from e

    @asynccontextmanager
    async def _snapshot(self, what: str) -> AsyncIterator[asyncpg.Connection]:
        """One REPEATABLE READ READ ONLY transaction: every statement in it sees the same snapshot."""
        async with self._conn(what) as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            yield conn

    async def _once(
        self, what: str, work: Callable[[asyncpg.Connection], Awaitable[T]], pool: asyncpg.Pool | None = None
    ) -> T:
        async with self._conn(what, pool) as conn:
            return await work(conn)

    async def _retrying(
        self, what: str, work: Callable[[asyncpg.Connection], Awaitable[T]], pool: asyncpg.Pool | None = None
    ) -> T:
        """Run a write transaction, again (bounded) when PostgreSQL could not serialize it: a
        serialization failure or deadlock ends the transaction with nothing of it committed."""
        for attempt in range(1, self.limits.serialization_attempts_max):
            try:
                return await self._once(what, work, pool)
            except StorageError as e:
                if not isinstance(e.__cause__, RETRYABLE):
                    raise
                log.warning("postgres_write_retry", what=what, attempt=attempt, sqlstate=e.__cause__.sqlstate)
            await asyncio.sleep(self.limits.retry_backoff_s * attempt)
        return await self._once(what, work, pool)

    async def replication_view(self) -> ReplicationView:
        """Replication as seen from the server this store writes to (see `ReplicationView`)."""
        async with self._conn("replication_view") as conn:
            row = await conn.fetchrow(REPLICATION_VIEW_SQL)
        return ReplicationView(
            str(row["server"]),
            int(row["timeline"]),
            bool(row["synchronous_expected"]),
            int(row["synchronous_replicas"]),
            int(row["replicas"]),
            int(row["lag_bytes"]),
            float(row["lag_seconds"]),
        )

    async def head(self) -> Head:
        async with self._conn("head") as conn:
            row = await conn.fetchrow("SELECT sequence, hash, epoch FROM head")
        return Head(int(row["sequence"]), str(row["hash"]), int(row["epoch"]))

    async def fence(self, epoch: int) -> None:
        # Commits set only sequence, hash and epoch: the fence column outlives them.
        async with self._conn("fence") as conn:
            await conn.execute("UPDATE head SET fenced_by = GREATEST(fenced_by, $1)", epoch)

    async def fenced_by(self) -> int:
        async with self._conn("fenced_by") as conn:
            return int(await conn.fetchval("SELECT fenced_by FROM head"))

    async def unfence(self, epoch: int) -> int:
        async with self._conn("unfence") as conn:
            return int(
                await conn.fetchval(
                    "UPDATE head SET fenced_by = CASE WHEN fenced_by <= $1 THEN 0 ELSE fenced_by END "
                    "RETURNING fenced_by",
                    epoch,
                )
            )

    async def load(self, wanted: dict[str, Sequence[Key]]) -> dict[str, dict[Key, Doc]]:
        """Every table's rows among its keys in one statement (`_load_many_sql`), or one per
        KEYS_PER_QUERY_MAX keys of the table that has the most."""
        out: dict[str, dict[Key, Doc]] = {table: {} for table in wanted}
        chunks = {
            table: [unique[i : i + KEYS_PER_QUERY_MAX] for i in range(0, len(unique), KEYS_PER_QUERY_MAX)]
            for table, unique in ((t, list(dict.fromkeys(keys))) for t, keys in wanted.items())
        }
        async with self._conn("load") as conn:
            for round_ in range(max((len(c) for c in chunks.values()), default=0)):
                tables = [t for t, c in chunks.items() if round_ < len(c)]
                args = [a for t in tables for a in _columns_of(chunks[t][round_], len(LOAD_KEYS[t]))]
                for position, key, doc in await conn.fetch(_load_many_sql(tables), *args):
                    table = tables[position]
                    out[table][_key_of(key, LOAD_KEYS[table])] = orjson.loads(doc)
        return out

    async def count_keys(self, table: str) -> int | None:
        async with self._conn("count_keys") as conn:
            return int(await conn.fetchval(count_keys_query(table)))

    async def key_page(self, table: str, after: Key | None, limit: int) -> list[Key]:
        sql, params = key_page_query(table, after, limit, lambda i: f"${i}")
        async with self._conn("key_page") as conn:
            return [tuple(row) for row in await conn.fetch(sql, *params)]

    async def commit(self, journal: Sequence[JournalRow], rows: Rows, head: Head) -> None:
        if self._commit_pool is None:
            raise StorageError("the store is not open")
        await self._retrying(
            "commit", lambda conn: _commit_in(conn, journal, rows, head, self.lease), self._commit_pool
        )

    async def get(self, table: str, key: Key) -> tuple[Doc | None, int]:
        where = " AND ".join(f"{c} = ${i}" for i, c in enumerate(TABLES[table], 1))
        async with self._snapshot("get") as conn:
            doc = await conn.fetchval(f"SELECT doc FROM {table} WHERE {where}", *key)
            head = await conn.fetchval("SELECT sequence FROM head")
        return (None if doc is None else orjson.loads(doc)), int(head)

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
        clauses, params = [], []
        for column, value in equals.items():
            params.append(value)
            clauses.append(f"{column} = ${len(params)}")
        for name, value in (doc_equals or {}).items():
            params.extend([name, orjson.dumps(value).decode()])
            clauses.append(f"(doc::jsonb) -> ${len(params) - 1}::text = ${len(params)}::jsonb")
        for name in doc_positive:
            params.append(name)
            clauses.append(f"((doc::jsonb) ->> ${len(params)}::text)::numeric > 0")
        if after is not None:
            params.append(after)
            clauses.append(f"{columns[-1]} > ${len(params)}")
        where = " AND ".join(clauses) or "true"
        sql = (
            f"SELECT {', '.join(columns)}, doc FROM {table} WHERE {where} "
            f"ORDER BY {', '.join(columns)} LIMIT ${len(params) + 1}"
        )
        async with self._snapshot("select") as conn:
            found = await conn.fetch(sql, *params, limit)
            head = await conn.fetchval("SELECT sequence FROM head")
        return _pairs(found), int(head)

    async def journal(self, after_sequence: int, limit: int) -> list[tuple[int, str]]:
        sql = "SELECT sequence, entry FROM journal WHERE sequence > $1 ORDER BY sequence LIMIT $2"
        async with self._conn("journal") as conn:
            return [(int(s), str(e)) for s, e in await conn.fetch(sql, after_sequence, limit)]

    async def journal_of(self, tx_id: str, limit: int) -> list[str]:
        sql = "SELECT entry FROM journal WHERE tx_id = $1 ORDER BY sequence LIMIT $2"
        async with self._conn("journal_of") as conn:
            return [str(row[0]) for row in await conn.fetch(sql, tx_id, limit)]

    async def dump(self, table: str) -> dict[Key, Doc]:
        async with self._conn("dump") as conn:
            return dict(_pairs(await conn.fetch(f"SELECT {', '.join(TABLES[table])}, doc FROM {table}")))

    async def replace_derived(self, tables: dict[str, dict[Key, Doc]]) -> None:
        await self._retrying("replace_derived", lambda conn: _replace_in(conn, tables))

    async def backup(self, path: Path) -> Head:
        """Copy one snapshot (journal, every derived table, head) into a new SQLite ledger file.

        The copy is what `croupier ledger verify` checks and what a SQLite ledger serves, so a
        PostgreSQL ledger is restored by serving it (or by loading it back with `commit`). It is
        written under a temporary name, page by page (bounded memory), then renamed into place.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.unlink(missing_ok=True)
        copy = SqliteStore(partial)
        await copy.open()
        try:
            async with self._snapshot("backup") as conn:
                row = await conn.fetchrow("SELECT sequence, hash, epoch FROM head")
                head = Head(int(row["sequence"]), str(row["hash"]), int(row["epoch"]))
                sql = "SELECT sequence, tx_id, entry FROM journal ORDER BY sequence"
                async for page in _pages(conn, sql):
                    await copy.commit([JournalRow(int(s), t, str(e)) for s, t, e in page], {}, head)
                for table, columns in TABLES.items():
                    async for page in _pages(conn, f"SELECT {', '.join(columns)}, doc FROM {table}"):
                        await copy.commit([], {table: _pairs(page)}, head)
                await copy.commit([], {}, head)  # the head, even when there is nothing else
        finally:
            await copy.close()
        os.replace(partial, path)
        return head

    # Checkpoints and event consumers (see Store): small side tables, one statement each.

    async def add_checkpoint(self, checkpoint: dict[str, Any]) -> bool:
        sql = "INSERT INTO checkpoints (sequence, doc) VALUES ($1, $2) ON CONFLICT (sequence) DO NOTHING"
        async with self._conn("add_checkpoint") as conn:
            status = await conn.execute(sql, checkpoint["sequence"], orjson.dumps(checkpoint).decode())
        return bool(status.endswith(" 1"))

    async def checkpoints(self, after_sequence: int, limit: int) -> list[dict[str, Any]]:
        sql = "SELECT doc FROM checkpoints WHERE sequence > $1 ORDER BY sequence LIMIT $2"
        async with self._conn("checkpoints") as conn:
            return [orjson.loads(row[0]) for row in await conn.fetch(sql, after_sequence, limit)]

    async def latest_checkpoint(self) -> dict[str, Any] | None:
        async with self._conn("latest_checkpoint") as conn:
            doc = await conn.fetchval("SELECT doc FROM checkpoints ORDER BY sequence DESC LIMIT 1")
        return None if doc is None else orjson.loads(doc)

    async def put_consumer(self, name: str, doc: dict[str, Any], *, cursor: int | None) -> tuple[dict[str, Any], int]:
        keep = "" if cursor is None else ", acked_sequence = EXCLUDED.acked_sequence"
        sql = (
            f"INSERT INTO event_consumers (name, acked_sequence, doc) VALUES ($1, $2, $3) "
            f"ON CONFLICT (name) DO UPDATE SET doc = EXCLUDED.doc{keep} RETURNING doc, acked_sequence"
        )
        async with self._conn("put_consumer") as conn:
            row = await conn.fetchrow(sql, name, cursor or 0, orjson.dumps(doc).decode())
        return orjson.loads(row["doc"]), int(row["acked_sequence"])

    async def advance_consumer(self, name: str, sequence: int) -> int | None:
        sql = (
            "UPDATE event_consumers SET acked_sequence = GREATEST(acked_sequence, $2) WHERE name = $1 "
            "RETURNING acked_sequence"
        )
        async with self._conn("advance_consumer") as conn:
            value = await conn.fetchval(sql, name, sequence)
        return None if value is None else int(value)

    async def consumers(self) -> dict[str, tuple[dict[str, Any], int]]:
        async with self._conn("consumers") as conn:
            rows = await conn.fetch("SELECT name, doc, acked_sequence FROM event_consumers ORDER BY name")
        return {str(r["name"]): (orjson.loads(r["doc"]), int(r["acked_sequence"])) for r in rows}

    async def delete_consumer(self, name: str) -> bool:
        async with self._conn("delete_consumer") as conn:
            status = await conn.execute("DELETE FROM event_consumers WHERE name = $1", name)
        return bool(status.endswith(" 1"))

    # Operator queries (see Store): each in one snapshot with the head.

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
        clauses: list[str] = []
        params: list[Any] = []
        if key_prefix:
            params.extend([key_prefix, key_prefix[:-1] + chr(ord(key_prefix[-1]) + 1)])
            clauses += [f"{columns[0]} >= $1", f"{columns[0]} < $2"]
        for name, value in (doc_equals or {}).items():
            params.extend([name, orjson.dumps(value).decode()])
            clauses.append(f"(doc::jsonb) -> ${len(params) - 1}::text = ${len(params)}::jsonb")
        if after is not None:
            marks = [f"${len(params) + i}" for i in range(1, len(columns) + 1)]
            params.extend(after)
            clauses.append(f"({', '.join(columns)}) > ({', '.join(marks)})")
        sql = (
            f"SELECT {', '.join(columns)}, doc FROM {table} WHERE {' AND '.join(clauses) or 'true'} "
            f"ORDER BY {', '.join(columns)} LIMIT ${len(params) + 1}"
        )
        async with self._snapshot("page") as conn:
            found = await conn.fetch(sql, *params, limit)
            head = await conn.fetchval("SELECT sequence FROM head")
        return _pairs(found), int(head)

    async def summaries(
        self,
        equals: dict[str, str],
        *,
        after_sequence: int,
        limit: int,
        time_from: str | None = None,
        time_until: str | None = None,
    ) -> SummaryPage:
        if "player_id" in equals or "round_id" in equals:  # no index of their own (migration 9)
            async with self._snapshot("summaries") as conn:
                rows = await pg_summaries.of_player_or_round(conn, equals, after_sequence, limit, time_from, time_until)
                head = await conn.fetchval("SELECT sequence FROM head")
            return [(sequence, orjson.loads(doc)) for sequence, doc in rows], int(head)
        clauses, params = summary_filter(
            equals, after_sequence, time_from, time_until, _summary_member, lambda i: f"${i}"
        )
        sql = (
            f"SELECT sequence, doc FROM tx_summaries WHERE {' AND '.join(clauses)} "
            f"ORDER BY sequence LIMIT ${len(params) + 1}"
        )
        async with self._snapshot("summaries") as conn:
            found = await conn.fetch(sql, *params, limit)
            head = await conn.fetchval("SELECT sequence FROM head")
        return [(int(r[0]), orjson.loads(r[1])) for r in found], int(head)

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
        clauses, params = report_filter(table, day_from, day_to, equals, group_by, members, lambda i: f"${i}")
        groups = ", ".join(group_by)
        sums = ", ".join(f"coalesce(sum(((doc::jsonb) ->> '{m}')::bigint), 0)" for m in members)
        sql = (
            f"SELECT {groups}, {sums} FROM {table} WHERE {' AND '.join(clauses)} "
            f"GROUP BY {groups} ORDER BY {groups} LIMIT ${len(params) + 1}"
        )
        async with self._snapshot("report_sums") as conn:
            found = await conn.fetch(sql, *params, limit)
            head = await conn.fetchval("SELECT sequence FROM head")
        width = len(group_by)
        return [
            (tuple(row[:width]), dict(zip(members, (int(v) for v in list(row)[width:]), strict=True))) for row in found
        ], int(head)

    async def accounts_by_prefix(self, prefixes: Sequence[str], limit: int) -> tuple[dict[str, Doc], int]:
        sql = "SELECT account, doc FROM accounts WHERE account >= $1 AND account < $2 ORDER BY account LIMIT $3"
        out: dict[str, Doc] = {}
        async with self._snapshot("accounts_by_prefix") as conn:
            for prefix in prefixes:
                upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
                out.update({str(r[0]): orjson.loads(r[1]) for r in await conn.fetch(sql, prefix, upper, limit)})
            head = await conn.fetchval("SELECT sequence FROM head")
        return out, int(head)

    async def history_at(self, account: str, sequence: int) -> Doc | None:
        sql = "SELECT sequence, doc FROM history WHERE account = $1 AND sequence <= $2 ORDER BY sequence DESC LIMIT 1"
        async with self._conn("history_at") as conn:
            row = await conn.fetchrow(sql, account, sequence)
        return None if row is None else {**orjson.loads(row["doc"]), "sequence": int(row["sequence"])}

    async def sequence_at(self, moment: str) -> int:
        member = _summary_member("committed_at")
        sql = f"SELECT sequence FROM tx_summaries WHERE {member} <= $1 ORDER BY {member} DESC, sequence DESC LIMIT 1"
        async with self._conn("sequence_at") as conn:
            value = await conn.fetchval(sql, moment)
        return 0 if value is None else int(value)


async def _pages(conn: asyncpg.Connection, sql: str) -> AsyncIterator[list[asyncpg.Record]]:
    """The rows of a query in pages of BACKUP_PAGE_ROWS, by a server-side cursor (inside a transaction)."""
    cursor = await conn.cursor(sql)
    while page := await cursor.fetch(BACKUP_PAGE_ROWS):
        yield page
