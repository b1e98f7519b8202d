"""An owned background task: started once, cancelled and awaited on stop (never left dangling)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Coroutine


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
