"""One SQLite connection owned by one thread: the event loop hands it whole units of work.

`SqliteThread.open(connect)` starts a thread that creates its connection (so the connection is only
ever used by the thread that made it) and then runs, in order, the callables given to `run`:
`fn(connection, *args)`. Each result (or exception, with its own type) comes back to the awaiting
coroutine through an asyncio future completed with `loop.call_soon_threadsafe`. One unit of work is
one thread hop, however many statements it runs: a ledger group commit or an edge batch is one
callable, not one hop per statement.

`run_here(fn, *args)` runs a unit on the calling thread instead, when the connection's thread is
idle (nothing queued, nothing running) and the connection was opened with `here=True` (made with
`check_same_thread=False`): for short units that the caller waits for anyway, where the hop costs
more than the unit. The thread hop is a queue put, a wake-up of the thread, and a wake-up of the
event loop to hand the result back; and between its statements the committing thread waits for the
GIL while the event loop runs, which doubled a ledger commit's time as the event loop saw it
(docs/decisions/sqlite-commits-on-the-event-loop.md). A lock taken around every unit, in the thread
and in `run_here`, keeps the two from ever using the connection at once; otherwise busy, `run_here`
queues the unit like `run`.

`write_transaction(connection)` is the one way units write: `BEGIN IMMEDIATE`, then `COMMIT`, or
`ROLLBACK` on any exception (which is raised on), for connections in autocommit mode.

`close()` lets every unit queued before it run, then closes the connection in its thread; `run`
after `close()` raises `SqliteThreadClosed`. A caller cancelled while its unit runs stops waiting,
not the unit: SQLite statements cannot be interrupted half-way from here, and a commit that was
handed over may still land (callers that care reload what is stored).

Only the standard library: `sqlite3`, `threading`, `queue`, `asyncio`.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeVar

import structlog

log = structlog.get_logger("croupier.sqlite")

P = ParamSpec("P")
T = TypeVar("T")


class SqliteThreadClosed(RuntimeError):
    """Work was handed to a connection thread that is closed (or closing)."""


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on a connection in autocommit mode (`isolation_level=None`): taken
    with `BEGIN IMMEDIATE` (the write lock first, so it never fails half-way on an upgrade),
    committed at the end, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class _Work(NamedTuple):  # a tuple: built once per unit of work, on the hot path
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: asyncio.Future[Any]


class _Stop(NamedTuple):
    future: asyncio.Future[None]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: complete `future` unless its waiter gave up (cancelled) meanwhile."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _hand_back(future: asyncio.Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    """From the thread: complete `future` on its loop. A loop already closed has nobody waiting."""
    if isinstance(error, StopIteration):  # a future refuses StopIteration (it would end a generator)
        error = RuntimeError(f"StopIteration raised in a SQLite thread: {error!r}")
    try:
        future.get_loop().call_soon_threadsafe(_settle, future, result, error)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        return


class SqliteThread:
    """A SQLite connection and the one thread that uses it (see the module docstring)."""

    def __init__(self, name: str, *, here: bool = False) -> None:
        self.name = name
        self._inbox: queue.SimpleQueue[_Work | _Stop] = queue.SimpleQueue()
        self._closing = False
        self._closed: asyncio.Future[None] | None = None
        self._thread: threading.Thread | None = None
        self._here = here  # `run_here` may use the connection on the caller's thread
        self._conn: sqlite3.Connection | None = None  # set while the thread serves
        self._busy = threading.Lock()  # held while a unit runs, in the thread or in `run_here`

    @classmethod
    async def open(cls, connect: Callable[[], sqlite3.Connection], *, name: str, here: bool = False) -> SqliteThread:
        """Start the thread, create the connection in it with `connect()` and return once it is
        ready; an error of `connect` is raised here (and the thread is gone). `here`: `run_here`
        may run units on its caller's thread (`connect` must then pass `check_same_thread=False`)."""
        self = cls(name, here=here)
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._thread = threading.Thread(target=self._serve, args=(connect, opened), name=name, daemon=True)
        self._thread.start()
        try:
            await opened
        except BaseException:  # a failed connect ended the thread; a cancelled wait must end it too
            self._closing = True
            self._inbox.put(_Stop(asyncio.get_running_loop().create_future()))
            raise
        return self

    async def run(self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(connection, *args, **kwargs)` in the connection's thread; its result, or its exception."""
        if self._closing or self._thread is None:
            raise SqliteThreadClosed(f"the SQLite connection {self.name} is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._inbox.put(_Work(fn, args, kwargs, future))
        return await future

    async def run_here(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`fn(connection, *args, **kwargs)` on the calling thread if the connection's thread is idle
        (and the connection was opened with `here`), else in its thread like `run`; its result, or
        its exception."""
        conn = self._conn
        # The lock, not only an empty queue: the thread may have taken a unit and be running it.
        if (
            self._here
            and conn is not None
            and not self._closing
            and self._inbox.empty()
            and self._busy.acquire(blocking=False)
        ):
            try:
                return fn(conn, *args, **kwargs)
            finally:
                self._busy.release()
        return await self.run(fn, *args, **kwargs)

    async def close(self) -> None:
        """Run everything queued so far, then close the connection in its thread. Idempotent."""
        if self._thread is None:
            return
        if self._closed is None:
            if self._closing:  # `open` failed: the thread has already ended
                return
            self._closing = True
            self._closed = asyncio.get_running_loop().create_future()
            self._inbox.put(_Stop(self._closed))
        await asyncio.shield(self._closed)

    def _serve(self, connect: Callable[[], sqlite3.Connection], opened: asyncio.Future[None]) -> None:
        try:
            conn = connect()
        except BaseException as e:  # noqa: BLE001  raised by `open`, in the loop
            _hand_back(opened, error=e)
            return
        self._conn = conn
        _hand_back(opened)
        stop = self._work_until_stopped(conn)
        self._conn = None
        self._refuse_the_rest()
        try:
            conn.close()
        except BaseException as e:  # noqa: BLE001  raised by `close`, in the loop
            log.error("sqlite_close_failed", connection=self.name, error=repr(e))
            _hand_back(stop.future, error=e)
        else:
            _hand_back(stop.future)

    def _work_until_stopped(self, conn: sqlite3.Connection) -> _Stop:
        while True:
            item = self._inbox.get()
            if isinstance(item, _Stop):
                return item
            try:
                with self._busy:
                    result = item.fn(conn, *item.args, **item.kwargs)
            except BaseException as e:  # noqa: BLE001  raised to its waiter, with its type; the thread serves on
                _hand_back(item.future, error=e)
            else:
                _hand_back(item.future, result)

    def _refuse_the_rest(self) -> None:
        """Work queued behind the stop (only possible from another thread or loop) is refused, so
        no waiter is left hanging."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Work):
                _hand_back(item.future, error=SqliteThreadClosed(f"the SQLite connection {self.name} is closed"))
