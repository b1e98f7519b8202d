"""Owned background tasks: started, cancelled and awaited on stop, failures reported (never left dangling)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


class OwnedTask:
    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Task[Any] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, coro: Coroutine[Any, Any, Any]) -> None:
        assert not self.running, f"{self.name} already running"
        self._task = asyncio.create_task(coro, name=self.name)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None


class TaskSet:
    """Many short-lived owned tasks: a failure is reported to `on_failure` (a success to
    `on_success`, when given), and `cancel_all` cancels and awaits whatever is still running (on
    shutdown)."""

    def __init__(
        self,
        on_failure: Callable[[asyncio.Task[Any], BaseException], None],
        on_success: Callable[[asyncio.Task[Any]], None] | None = None,
    ) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_failure = on_failure
        self._on_success = on_success

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        failure = task.exception()
        if failure is not None:
            self._on_failure(task, failure)
        elif self._on_success is not None:  # a streak of failures ends with a success
            self._on_success(task)

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def supervise(
    name: str,
    run: Callable[[], Coroutine[Any, Any, Any]],
    on_failure: Callable[[str, BaseException], None],
    *,
    delay_s: float = 1.0,
) -> None:
    """Run a forever-task; if it fails, report the failure and start it again after `delay_s`
    (it never dies silently, and one bug does not stop it for good). Cancellation stops it."""
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 (any bug: reported, then the task goes on)
            on_failure(name, e)
        await asyncio.sleep(delay_s)
