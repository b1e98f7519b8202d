"""shared.sqlite_thread: one thread per connection runs whole units of work for the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from shared.sqlite_thread import SqliteThread, SqliteThreadClosed, write_transaction

WAIT_S = 5


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


async def test_a_unit_runs_in_the_connection_thread_and_returns_its_result(tmp_path: Path) -> None:
    db = await SqliteThread.open(lambda: _connect(tmp_path / "t.db"), name="test-sqlite")
    try:

        def batch(conn: sqlite3.Connection, values: list[int]) -> tuple[str, int]:
            conn.execute("CREATE TABLE t (x INTEGER)")
            conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
            return threading.current_thread().name, conn.execute("SELECT sum(x) FROM t").fetchone()[0]

        thread, total = await asyncio.wait_for(db.run(batch, [1, 2, 3]), WAIT_S)
        assert (thread, total) == ("test-sqlite", 6)
        assert thread != threading.current_thread().name
    finally:
        await db.close()


async def test_exceptions_keep_their_type_and_the_thread_serves_on(tmp_path: Path) -> None:
    db = await SqliteThread.open(lambda: _connect(tmp_path / "t.db"), name="test-sqlite")
    try:
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await asyncio.wait_for(db.run(lambda conn: conn.execute("SELECT * FROM missing")), WAIT_S)

        def raise_key_error(conn: sqlite3.Connection) -> None:
            raise KeyError("k")

        with pytest.raises(KeyError):
            await asyncio.wait_for(db.run(raise_key_error), WAIT_S)

        def raise_stop_iteration(conn: sqlite3.Connection) -> None:
            raise StopIteration  # an asyncio future refuses it as such: it must not kill the thread

        with pytest.raises(RuntimeError, match="StopIteration"):
            await asyncio.wait_for(db.run(raise_stop_iteration), WAIT_S)
        assert await asyncio.wait_for(db.run(lambda conn: conn.execute("SELECT 7").fetchone()[0]), WAIT_S) == 7
    finally:
        await db.close()


async def test_close_runs_what_was_queued_then_closes_and_later_calls_are_refused(tmp_path: Path) -> None:
    db = await SqliteThread.open(lambda: _connect(tmp_path / "t.db"), name="test-sqlite")
    await db.run(lambda conn: conn.execute("CREATE TABLE t (x INTEGER)"))

    def slow_insert(conn: sqlite3.Connection, x: int) -> int:
        time.sleep(0.05)
        conn.execute("INSERT INTO t VALUES (?)", (x,))
        return x

    queued = [asyncio.ensure_future(db.run(slow_insert, x)) for x in range(5)]
    await asyncio.sleep(0)  # every unit is handed over before the close
    await asyncio.wait_for(db.close(), WAIT_S)
    assert [q.result() for q in queued] == list(range(5)), "close drains the work queued before it"
    await asyncio.wait_for(db.close(), WAIT_S)  # idempotent
    with pytest.raises(SqliteThreadClosed, match="test-sqlite is closed"):
        await db.run(lambda conn: None)
    check = sqlite3.connect(tmp_path / "t.db")
    try:
        assert check.execute("SELECT count(*) FROM t").fetchone()[0] == 5
    finally:
        check.close()
    for thread in threading.enumerate():  # it ends right after handing the close back
        if thread.name == "test-sqlite":
            thread.join(WAIT_S)
    assert not any(t.name == "test-sqlite" for t in threading.enumerate()), "the thread ended"


async def test_the_connection_is_closed_in_its_own_thread(tmp_path: Path) -> None:
    closed_in: list[str] = []

    class Recording(sqlite3.Connection):
        def close(self) -> None:
            closed_in.append(threading.current_thread().name)
            super().close()

    db = await SqliteThread.open(lambda: sqlite3.connect(tmp_path / "t.db", factory=Recording), name="test-sqlite")
    await asyncio.wait_for(db.close(), WAIT_S)
    assert closed_in == ["test-sqlite"]


async def test_a_failed_connect_is_raised_by_open(tmp_path: Path) -> None:
    def connect() -> sqlite3.Connection:
        return sqlite3.connect(f"file:{tmp_path / 'missing' / 't.db'}?mode=ro", uri=True)

    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        await asyncio.wait_for(SqliteThread.open(connect, name="test-sqlite"), WAIT_S)


async def test_a_cancelled_waiter_does_not_stop_its_unit_nor_break_the_thread(tmp_path: Path) -> None:
    db = await SqliteThread.open(lambda: _connect(tmp_path / "t.db"), name="test-sqlite")
    try:
        await db.run(lambda conn: conn.execute("CREATE TABLE t (x INTEGER)"))
        started = threading.Event()

        def slow_insert(conn: sqlite3.Connection) -> None:
            started.set()
            time.sleep(0.1)
            conn.execute("INSERT INTO t VALUES (1)")

        waiter = asyncio.ensure_future(db.run(slow_insert))
        assert await asyncio.to_thread(started.wait, WAIT_S)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        # The unit still ran (a handed-over commit may land), and the next one sees it.
        count = await asyncio.wait_for(
            db.run(lambda conn: conn.execute("SELECT count(*) FROM t").fetchone()[0]), WAIT_S
        )
        assert count == 1
    finally:
        await db.close()


def test_a_write_transaction_commits_or_rolls_back_whole(tmp_path: Path) -> None:
    conn = _connect(tmp_path / "t.db")
    try:
        conn.execute("CREATE TABLE t (x INTEGER)")
        with write_transaction(conn):
            conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(ValueError), write_transaction(conn):
            conn.execute("INSERT INTO t VALUES (2)")
            raise ValueError("half-way")
        assert not conn.in_transaction
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        conn.close()


def _shared_connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def _thread_name(conn: sqlite3.Connection) -> str:
    conn.execute("SELECT 1").fetchall()
    return threading.current_thread().name


async def test_run_here_runs_on_the_calling_thread_while_the_connection_thread_is_idle(tmp_path: Path) -> None:
    db = await SqliteThread.open(lambda: _shared_connect(tmp_path / "t.db"), name="test-sqlite", here=True)
    try:
        assert await db.run_here(_thread_name) == threading.current_thread().name
        with pytest.raises(sqlite3.OperationalError, match="no such table"):  # raised as is, with its type
            await db.run_here(lambda conn: conn.execute("SELECT * FROM missing"))
        assert await asyncio.wait_for(db.run(_thread_name), WAIT_S) == "test-sqlite", "run still hops"
    finally:
        await db.close()
    with pytest.raises(SqliteThreadClosed, match="test-sqlite is closed"):
        await db.run_here(_thread_name)


async def test_run_here_queues_behind_a_unit_the_thread_is_running(tmp_path: Path) -> None:
    """Never two users of one connection at once: while the thread runs a unit (its queue already
    empty), `run_here` waits its turn in the thread instead."""
    db = await SqliteThread.open(lambda: _shared_connect(tmp_path / "t.db"), name="test-sqlite", here=True)
    try:
        await db.run(lambda conn: conn.execute("CREATE TABLE t (x INTEGER)"))
        started, release = threading.Event(), threading.Event()

        def held_open(conn: sqlite3.Connection) -> None:
            with write_transaction(conn):
                conn.execute("INSERT INTO t VALUES (1)")
                started.set()
                assert release.wait(WAIT_S)

        first = asyncio.ensure_future(db.run(held_open))
        assert await asyncio.to_thread(started.wait, WAIT_S)

        def count_in_a_transaction(conn: sqlite3.Connection) -> tuple[str, int]:
            with write_transaction(conn):  # would fail ("within a transaction") beside the open one
                return threading.current_thread().name, conn.execute("SELECT count(*) FROM t").fetchone()[0]

        second = asyncio.ensure_future(db.run_here(count_in_a_transaction))
        await asyncio.sleep(0.05)
        assert not second.done(), "it waits for the unit the thread runs"
        release.set()
        await asyncio.wait_for(first, WAIT_S)
        assert await asyncio.wait_for(second, WAIT_S) == ("test-sqlite", 1)
    finally:
        await db.close()


async def test_run_here_without_here_always_hops(tmp_path: Path) -> None:
    """A connection not opened with `here` (made with `check_same_thread` on) is only ever used by
    its own thread."""
    db = await SqliteThread.open(lambda: _connect(tmp_path / "t.db"), name="test-sqlite")
    try:
        assert await asyncio.wait_for(db.run_here(_thread_name), WAIT_S) == "test-sqlite"
    finally:
        await db.close()
