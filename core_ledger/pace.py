"""How background work shares the event loop of a serving ledger (`Pace`): in pages, with a pause
after each so that the work takes at most a given share of the loop's time. The chain audit
(`core_ledger.audit`) and the key filter's fill (`core_ledger.overlay`) use it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Pace:
    """Pages of `page` items (checking 100 journal entries holds the loop ~5 ms here, against
    ~50 ms for 1000), and after each page a pause so that the work takes at most `loop_share` of
    its wall time. A walk of a million entries takes about a minute of CPU: run flat out on the loop
    at start-up, it halved the bets a loaded ledger took while it ran (see
    docs/decisions/paced-chain-audits.md)."""

    page: int = 100
    loop_share: float = 1.0  # 1: no pause (yield between pages only)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def __post_init__(self) -> None:
        if self.page < 1 or not 0 < self.loop_share <= 1:
            raise ValueError("a pace needs page >= 1 and 0 < loop_share <= 1")

    async def after_page(self, working_s: float) -> None:
        await self.sleep(working_s * (1 - self.loop_share) / self.loop_share)
