"""Bulk loading of a NEW SQLite ledger file: a benchmark's seeded database, a rebuild's scratch file.

A `SqliteBulkStore` is a `SqliteStore` whose file is not anyone's live database while it is
loaded, so it trades the live file's crash safety for speed until `finish`:

- `synchronous=OFF` and an in-memory rollback journal: no fsync per commit, and no page written
  twice (once to the WAL, once when checkpointed);
- the secondary indexes (every index the schema creates, not the primary keys) are dropped once
  the schema is made and created again by `finish`, each by one sort of the loaded rows instead of
  one random insert per row into a B-tree far bigger than the page cache;
- a big page cache (`BULK_CACHE_MIB`).

Its schema, columns and rows are the store's own (`SqliteStore`: migrations, `_stored_columns`,
`_stored_rows`): only the pragmas and the moment indexes are built differently. `finish` creates
the indexes, switches the file to what the live store uses (WAL, `synchronous=FULL`), closes it and
fsyncs the file and its directory: only then may it be used (opened by the ledger, swapped or
copied into a live database). A crash or error before that leaves a file to throw away, never a
live database changed: the bulk store only ever opens a file that does not exist yet.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import structlog

from shared.sqlite_thread import SqliteThread

from core_ledger.store.base import StorageError
from core_ledger.store.sqlite import BUSY_TIMEOUT_MS, PAGE_SIZE_NEW, SqliteStore, fsync_path

log = structlog.get_logger("croupier.store")

BULK_CACHE_MIB = 1024  # each connection's page cache while loading: inserts land all over big B-trees
BULK_PRAGMAS = (
    f"PRAGMA page_size={PAGE_SIZE_NEW}",  # before anything is written: fixes the new file's page size
    "PRAGMA journal_mode=MEMORY",  # a rollback still works (a refused commit), nothing written twice
    "PRAGMA synchronous=OFF",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
)


def _bulk_connect(path: Path, cache_mib: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in BULK_PRAGMAS:
            conn.execute(pragma)
        conn.execute(f"PRAGMA cache_size={-1024 * cache_mib}")  # negative: KiB, not pages
    except BaseException:
        conn.close()
        raise
    return conn


def _drop_secondary_indexes(db: sqlite3.Connection) -> list[tuple[str, str]]:
    """Drop every index the schema created (primary keys stay); (name, CREATE statement) of each."""
    indexes = [
        (str(name), str(sql))
        for name, sql in db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name"
        ).fetchall()
    ]
    for name, _ in indexes:
        db.execute(f'DROP INDEX "{name}"')
    return indexes


def _finish_file(path: Path, cache_mib: int, indexes: list[tuple[str, str]]) -> None:
    """On the file alone (the store's connections closed): its indexes, then WAL, fsynced."""
    with closing(_bulk_connect(path, cache_mib)) as db:
        for _, sql in indexes:
            db.execute(sql)
        [(mode,)] = db.execute("PRAGMA journal_mode=WAL").fetchall()
        if str(mode).lower() != "wal":
            raise StorageError(f"the bulk-loaded file {path} stays in journal mode {mode}, not WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    fsync_path(path)
    fsync_path(path.parent)


class SqliteBulkStore(SqliteStore):
    """A `SqliteStore` on a new file, loaded fast and made durable by `finish` (see the module)."""

    def __init__(self, path: Path, *, cache_mib: int = BULK_CACHE_MIB) -> None:
        # Every commit writes its derived rows: without fsyncs there is nothing to save by holding them.
        super().__init__(path, cache_mib=cache_mib, held_groups_max=1)
        self._indexes: list[tuple[str, str]] | None = None

    async def _connect(self, name: str, *, here: bool = False) -> SqliteThread:
        # Every unit on the connection's thread (`here` is not taken): a bulk commit writes every
        # row of its 20,000 entries, and the loop serves meanwhile.
        return await SqliteThread.open(lambda: _bulk_connect(self.path, self.cache_mib), name=name)

    async def open(self) -> None:
        if self._indexes is not None:
            raise StorageError(f"{self.path} is being bulk-loaded already")
        if any(self.path.parent.glob(self.path.name + "*")):
            raise StorageError(f"{self.path} exists: a bulk load only makes a new file")
        await super().open()
        self._indexes = await self._w.run(_drop_secondary_indexes)

    async def finish(self) -> None:
        """Create the indexes, switch to WAL with `synchronous=FULL`, close, fsync file and directory."""
        if self._indexes is None:
            raise StorageError(f"{self.path} is not being bulk-loaded")
        await self.close()
        await asyncio.to_thread(_finish_file, self.path, self.cache_mib, self._indexes)
        log.info("bulk_load_finished", path=str(self.path), indexes=len(self._indexes))
        self._indexes = None
