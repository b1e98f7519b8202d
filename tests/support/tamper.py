"""What someone with write access to a SQLite ledger file can do to its journal, for the tests that
show the audits find it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from core_ledger.store.sqlite_entries import entry_text


def rewrite_entry(db: Path, sequence: int, change: Callable[[str], str]) -> None:
    """Replace one journal entry's text with `change(text)`, in place and without re-hashing it
    (past the trigger that keeps the journal append-only)."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("DROP TRIGGER journal_no_update")
        [(stored,)] = conn.execute("SELECT entry FROM journal WHERE sequence = ?", (sequence,)).fetchall()
        changed = conn.execute(
            "UPDATE journal SET entry = ? WHERE sequence = ?", (change(entry_text(stored)), sequence)
        )
        assert changed.rowcount == 1
        conn.commit()
    finally:
        conn.close()


def delete_last_entries(db: Path, count: int) -> None:
    """Delete the journal's last `count` entries (past the trigger that forbids it), leaving the
    stored head and every derived row as they were: a journal cut short."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("DROP TRIGGER journal_no_delete")
        [(last,)] = conn.execute("SELECT max(sequence) FROM journal").fetchall()
        deleted = conn.execute("DELETE FROM journal WHERE sequence > ?", (last - count,))
        assert deleted.rowcount == count
        conn.commit()
    finally:
        conn.close()
