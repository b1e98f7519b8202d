"""Local persistence of an edge: CRDT updates, applied effects and watermarks in SQLite.

Every change a replica makes (local write or remote update) is appended to `updates`. One writer
task drains a bounded queue and commits a batch in one transaction (so an effect row and the
CRDT update that carries it are durable together or not at all). A document with more than
`compact_after` rows is compacted by applying its rows to a fresh Doc and re-encoding it (never
`merge_updates`: superlinear and keeps garbage). Documents with writes still queued are "pending"
and the replica must not evict them: their rows on disk are incomplete.

Nothing this edge wrote leaves it before it is committed here: live pushes happen in `on_durable`
after the commit, and sync answers wait for `barrier()`. So a restart after kill -9 never reuses a
(client id, clock) pair that peers already hold, and an effect seen by peers is in the local book.
A commit in WAL mode survives the death of the process, so `synchronous=NORMAL` is enough here
(CRDT state can be rebuilt from the ledger and the peers after a power loss).

The connection is owned by one thread (`shared.sqlite_thread`) and every operation is one unit of
work there: a whole batch (updates, documents, effects, watermarks, commit) is one thread hop, and
so is the compaction that follows it (read the rows, re-encode, replace them).

The schema version is `PRAGMA user_version`, moved forward by `MIGRATIONS` at open (see
`shared.migrations`); a store of a newer version is refused with `SchemaVersionError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog

from shared import sqlite_migrate
from shared.errors import Unavailable
from shared.migrations import Migration, Plan
from shared.sqlite_thread import SqliteThread, write_transaction

from edge.crdt import Effect, compact
from edge.health import TaskHealth

log = structlog.get_logger("croupier.edge.persist")

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS updates (id INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT NOT NULL, data BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS updates_by_doc ON updates(doc, id)",
    "CREATE TABLE IF NOT EXISTS docs (name TEXT PRIMARY KEY, sv BLOB NOT NULL, n INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS effects (key TEXT NOT NULL, seq INTEGER NOT NULL, delta BLOB NOT NULL, "
    "PRIMARY KEY (key, seq))",
    "CREATE TABLE IF NOT EXISTS watermarks (key TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
)
# Numbered schema migrations, 1..N; never edit or drop one that was released, append a new one.
MIGRATIONS = (Migration(1, "CRDT updates, documents, effects and watermarks", SCHEMA),)
MIGRATE_COMMAND = "croupier edge migrate --config <edge.toml>"
STORE_WRITER = "store-writer"  # its task name in edge_background_failures_total
STORE_RETRY_FIRST_S, STORE_RETRY_MAX_S = 0.1, 5.0  # a commit the disk failed is tried again after these
STORE_CLOSING_ATTEMPTS = 3  # tries of a batch once the store is closing
PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")


@dataclass(frozen=True)
class StoreLimits:
    queue_max: int = 10_000
    batch_max: int = 512
    compact_after: int = 256  # rows of one document before it is compacted (a hot one: a few times a second)
    compactions_per_batch_max: int = 16


@dataclass(frozen=True)
class Append:
    doc: str
    data: bytes
    state_vector: bytes
    effects: tuple[Effect, ...] = ()  # the effects this update carries (a document stored whole: several)
    local: bool = False  # written by this edge: pushed to peers once durable


@dataclass(frozen=True)
class ReconciliationWatermark:
    """The ledger position up to which document `key`'s effects are reconciled (forgotten below)."""

    key: str
    sequence: int


@dataclass
class Loaded:
    docs: list[tuple[str, bytes]] = field(default_factory=list)  # (name, state vector)
    effects: list[Effect] = field(default_factory=list)
    watermarks: dict[str, int] = field(default_factory=dict)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)  # transactions are explicit (BEGIN ... COMMIT)
    try:
        for pragma in PRAGMAS:
            conn.execute(pragma)
    except BaseException:
        conn.close()
        raise
    return conn


def _fetch_all(db: sqlite3.Connection, sql: str, params: Sequence[object] = ()) -> list[Any]:
    with closing(db.execute(sql, params)) as cur:
        return cur.fetchall()


def _load_all(db: sqlite3.Connection) -> tuple[Loaded, dict[str, int]]:
    """Everything an edge reads at start, and the rows per document on disk."""
    loaded, rows = Loaded(), {}
    for name, sv, n in _fetch_all(db, "SELECT name, sv, n FROM docs"):
        loaded.docs.append((str(name), bytes(sv)))
        rows[str(name)] = int(n)
    loaded.effects = [
        Effect(str(k), int(s), orjson.loads(d)) for k, s, d in _fetch_all(db, "SELECT key, seq, delta FROM effects")
    ]
    loaded.watermarks = {str(k): int(s) for k, s in _fetch_all(db, "SELECT key, seq FROM watermarks")}
    return loaded, rows


def _load_doc(db: sqlite3.Connection, name: str) -> list[bytes]:
    return [bytes(row[0]) for row in _fetch_all(db, "SELECT data FROM updates WHERE doc = ? ORDER BY id", (name,))]


def _commit_batch(
    db: sqlite3.Connection,
    appends: list[Append],
    doc_rows: list[tuple[str, bytes, int]],
    watermarks: list[ReconciliationWatermark],
) -> None:
    """A batch in one transaction: an effect and the CRDT update that carries it, together or not at all."""
    with write_transaction(db):
        db.executemany("INSERT INTO updates (doc, data) VALUES (?, ?)", [(op.doc, op.data) for op in appends])
        db.executemany(
            "INSERT INTO docs (name, sv, n) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET sv = excluded.sv, n = docs.n + excluded.n",
            doc_rows,
        )
        db.executemany(
            "INSERT OR IGNORE INTO effects (key, seq, delta) VALUES (?, ?, ?)",
            [(e.key, e.sequence, orjson.dumps(e.delta)) for op in appends for e in op.effects],
        )
        for mark in watermarks:
            db.execute("DELETE FROM effects WHERE key = ? AND seq <= ?", (mark.key, mark.sequence))
            db.execute(
                "INSERT INTO watermarks (key, seq) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET seq = max(seq, excluded.seq)",
                (mark.key, mark.sequence),
            )


def _compact_docs(db: sqlite3.Connection, client_id: int, names: list[str]) -> None:
    """Replace each document's rows by one equivalent update, in one transaction (all or none)."""
    with write_transaction(db):
        for name in names:
            rows = [
                (int(i), bytes(d))
                for i, d in _fetch_all(db, "SELECT id, data FROM updates WHERE doc = ? ORDER BY id", (name,))
            ]
            snapshot = compact(client_id, (d for _, d in rows))
            db.execute("DELETE FROM updates WHERE doc = ? AND id <= ?", (name, rows[-1][0]))
            db.execute("INSERT INTO updates (doc, data) VALUES (?, ?)", (name, snapshot))
            db.execute("UPDATE docs SET n = 1 WHERE name = ?", (name,))


class DocumentStore:
    """The edge's durable documents: their CRDT updates, the effects they carry and their
    reconciliation watermarks (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        client_id: int,
        limits: StoreLimits = StoreLimits(),
        on_durable: Callable[[list[tuple[str, bytes]]], None] = lambda local_updates: None,
        health: TaskHealth | None = None,
        *,
        allow_migration: bool = True,
        migrations: tuple[Migration, ...] = MIGRATIONS,
    ) -> None:
        self.path = path
        self.allow_migration = allow_migration  # may `open` migrate a store that is behind (an empty one: always)
        self.migrations = migrations  # replaced by tests only
        self.schema_plan: Plan | None = None  # what the last `open` found and did
        self._health = health
        self._on_durable = on_durable
        self.client_id = client_id
        self.limits = limits
        self._db: SqliteThread | None = None
        self._queue: asyncio.Queue[Append | ReconciliationWatermark | None] = asyncio.Queue(maxsize=limits.queue_max)
        self._pending: Counter[str] = Counter()
        self._rows: Counter[str] = Counter()  # rows per document on disk (mirrors docs.n)
        self._enqueued = 0  # operations queued so far; the queue keeps their order
        self._committed = 0
        self._committed_cond = asyncio.Condition()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False  # a failing commit is retried for good only while it is not
        self.failed: BaseException | None = None

    @property
    def is_open(self) -> bool:
        return self._db is not None and self._writer is not None and not self._writer.done()

    async def open(self) -> Loaded:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        path = self.path
        self._db = await SqliteThread.open(lambda: _connect(path), name="edge-sqlite")
        try:
            self.schema_plan = await self._db.run(
                sqlite_migrate.migrate,
                self.migrations,
                allowed=self.allow_migration,
                store=f"the edge database {self.path}",
                migrate_command=MIGRATE_COMMAND,
            )
            loaded, rows = await self._db.run(_load_all)
        except BaseException:
            await self._db.close()
            self._db = None
            raise
        self._rows.update(rows)
        self._writer = asyncio.create_task(self._write_loop(), name="edge-store-writer")
        return loaded

    async def close(self) -> None:
        """Flush everything queued, then close. Bounded while the disk refuses commits: the writer
        then gives up after a few tries (`_commit_until_stored`), and its failure stays in `failed`."""
        self._closing = True
        writer = self._writer
        if writer is not None and not writer.done():
            ending = asyncio.ensure_future(self._queue.put(None))  # waits for room in a full queue
            await asyncio.wait({ending, writer}, return_when=asyncio.FIRST_COMPLETED)
            ending.cancel()
            with contextlib.suppress(Exception):  # logged and kept in `failed` by the writer itself
                await writer
        if self._db is not None:
            await self._db.close()
            self._db = None

    def pending(self, doc: str) -> bool:
        return self._pending[doc] > 0

    def append(self, op: Append) -> None:
        self._put(op)
        self._pending[op.doc] += 1

    def raise_watermark(self, key: str, sequence: int) -> None:
        self._put(ReconciliationWatermark(key, sequence))

    async def barrier(self, timeout_s: float) -> bool:
        """Wait until everything queued so far is committed (False on timeout)."""
        target = self._enqueued
        async with self._committed_cond:
            try:  # not wait_for: on 3.11 it drops a cancellation that meets the commit's notify
                async with asyncio.timeout(timeout_s):
                    await self._committed_cond.wait_for(lambda: self._committed >= target)
            except TimeoutError:
                return False
        return True

    def _put(self, op: Append | ReconciliationWatermark) -> None:
        # Never blocks: a full queue is an explicit failure (callers degrade, reconciliation repairs).
        if not self.is_open:
            raise Unavailable("the edge's local store is not writable", code="storage_unavailable")
        try:
            self._queue.put_nowait(op)
        except asyncio.QueueFull:
            raise Unavailable("the edge's local store is overloaded", code="storage_unavailable") from None
        self._enqueued += 1

    async def load_doc(self, name: str) -> list[bytes]:
        if self._db is None:
            raise Unavailable("the edge's local store is not open", code="storage_unavailable")
        return await self._db.run(_load_doc, name)

    async def _write_loop(self) -> None:
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < self.limits.batch_max and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                stop = batch[-1] is None
                ops = [op for op in batch if op is not None]
                if ops:
                    await self._commit_until_stored(ops)
                if stop:
                    return
        except Exception as e:  # a broken store is reported by /readyz; the edge keeps serving reads
            self.failed = e
            if self._health is not None:
                self._health.failed(STORE_WRITER, e)
            log.exception("edge store writer failed")
            raise

    async def _commit_until_stored(self, ops: list[Append | ReconciliationWatermark]) -> None:
        """Commit `ops`, again and again while the disk fails (full, I/O error, locked): nothing
        queued is dropped, and what comes meanwhile waits in the queue (full: 503 to new writes).
        Each failure is logged and counted; any other error is a bug, which stops the writer. Once
        the store is closing, the writer stops after a few tries: what it held and what is still
        queued is then lost from this disk only (the peers and the ledger still hold it)."""
        delay, attempts = STORE_RETRY_FIRST_S, 0
        while True:
            try:
                await self._commit(ops)
            except sqlite3.OperationalError as e:
                attempts += 1
                if self._health is None or (self._closing and attempts >= STORE_CLOSING_ATTEMPTS):
                    raise
                self._health.failed(STORE_WRITER, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, STORE_RETRY_MAX_S)
                continue
            if attempts and self._health is not None:
                self._health.ok(STORE_WRITER)
            return

    async def _commit(self, ops: list[Append | ReconciliationWatermark]) -> None:
        db = self._db
        assert db is not None
        appends = [op for op in ops if isinstance(op, Append)]
        counts = Counter(op.doc for op in appends)
        last_sv = {op.doc: op.state_vector for op in appends}
        await db.run(
            _commit_batch,
            appends,
            [(doc, last_sv[doc], n) for doc, n in counts.items()],
            [op for op in ops if isinstance(op, ReconciliationWatermark)],
        )
        self._on_durable([(op.doc, op.data) for op in appends if op.local])
        async with self._committed_cond:
            self._committed += len(ops)
            self._committed_cond.notify_all()
        self._pending.subtract(counts)
        self._rows.update(counts)
        for doc in counts:
            if self._pending[doc] <= 0:
                del self._pending[doc]
        due = [doc for doc in counts if self._rows[doc] > self.limits.compact_after]
        try:
            await self._compact(due[: self.limits.compactions_per_batch_max])
        except Exception as e:  # the rows stay as they are (still complete): retried with the next batch
            if self._health is None:
                raise
            self._health.failed("store-compaction", e)
        else:
            if due and self._health is not None:
                self._health.ok("store-compaction")

    async def _compact(self, due: list[str]) -> None:
        if not due:
            return
        db = self._db
        assert db is not None
        await db.run(_compact_docs, self.client_id, due)
        for name in due:
            self._rows[name] = 1
