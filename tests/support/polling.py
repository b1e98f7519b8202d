"""Waiting for a condition, always bounded in time: a failed wait is an assertion, never a hang."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

CATCH_UP_TIMEOUT_S = 20.0  # how long a standby may take to catch up with its primary in a test


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0, every_s: float = 0.05, *, what: str = "condition"
) -> None:
    """Poll the coroutine `check` until it is true; `what` names it in the failure."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        await asyncio.sleep(every_s)


async def wait_for(predicate: Callable[[], Any], timeout_s: float = CATCH_UP_TIMEOUT_S) -> None:
    """Poll the plain function `predicate` until it is true."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)
