"""Run the migration plan (`shared.migrations`) on a SQLite database: ledger and edge stores.

The version is SQLite's own header field `PRAGMA user_version`. The version is read, the plan made
and every step run inside ONE `BEGIN IMMEDIATE` transaction that also writes the new version, so
two processes opening one file never both migrate it and a failed step changes nothing.

`migrate` takes a plain `sqlite3.Connection`: the stores run it in their connection's own thread
as one unit of work (`shared.sqlite_thread`), and an offline tool can call it directly.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import structlog

from shared.migrations import Migration, Plan, plan
from shared.sqlite_thread import write_transaction

log = structlog.get_logger("croupier.schema")


def _scalar(conn: sqlite3.Connection, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def stored_version(conn: sqlite3.Connection) -> int:
    return _scalar(conn, "PRAGMA user_version")


def migrate(
    conn: sqlite3.Connection, migrations: Sequence[Migration], *, allowed: bool, store: str, migrate_command: str
) -> Plan:
    """Bring the database to the code's schema version (or raise `SchemaVersionError`, changing
    nothing). `conn` must be in autocommit mode (`isolation_level=None`), outside a transaction."""
    with write_transaction(conn):
        stored = stored_version(conn)
        empty = _scalar(conn, "SELECT count(*) FROM sqlite_master WHERE type = 'table'") == 0
        steps = plan(migrations, stored, empty=empty, allowed=allowed, store=store, migrate_command=migrate_command)
        for step in steps.steps:
            for statement in step.statements:
                conn.execute(statement)
        if steps.steps:
            conn.execute(f"PRAGMA user_version = {int(steps.target)}")
    if steps.steps:
        log.info(
            "schema_migrated",
            store=store,
            from_version=steps.stored,
            to_version=steps.target,
            steps=[f"{m.version}: {m.summary}" for m in steps.steps],
        )
    return steps
