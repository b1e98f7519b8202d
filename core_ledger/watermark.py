"""A sequence that only grows, with bounded waits for it to reach a target.

The ledger keeps two: the committed head (`Overlay.commits`: journal long polls wait on it) and the
best standby acknowledgement (`Acks.best` in core_ledger/failover.py: a synchronous primary's
answers wait on it). Not the edge's per-document reconcile watermark.
"""

from __future__ import annotations

import asyncio


class Watermark:
    """A sequence that only grows, and bounded waits for it to reach a target."""

    def __init__(self, value: int = 0) -> None:
        self.value = value
        self._changed: asyncio.Future[None] | None = None

    def advance(self, value: int) -> None:
        if value <= self.value:
            return
        self.value = value
        if self._changed is not None:
            if not self._changed.done():
                self._changed.set_result(None)
            self._changed = None

    async def reach(self, target: int, timeout_s: float) -> bool:
        """True once the value is >= target; False when `timeout_s` passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.value < target:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            if self._changed is None:
                self._changed = loop.create_future()
            try:
                async with asyncio.timeout(remaining):
                    await asyncio.shield(self._changed)
            except TimeoutError:
                return self.value >= target
        return True
