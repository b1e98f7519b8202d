"""Game servers betting through a failover: the workload of the failover tests (a ledger pair, a
standby promotion, a Patroni leader change).

Each worker bets on its own rounds through the given targets in turn (edges, or the ledger
itself); a 503 or a lost connection is retried with the same id until it is answered or the
traffic stops. Every acknowledged id is recorded, so a test can check it is journaled exactly
once; after `mark()` (the fault), the first acknowledgement, per target and overall, and their
count are recorded too, which gives the failover time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp

RETRY_PAUSE_S = 0.1  # a game server's pause before retrying a 503 with the same id
TRAFFIC_BEFORE_S = 1.5  # bets flow at least this long before the fault
ACKS_BEFORE = 5  # ... and until this many were acknowledged (a stalled machine can take longer)
TRAFFIC_BEFORE_MAX_S = 30.0  # ... at most this long in all
BETS_PER_WORKER_MAX = 100_000  # bounded; the stop event ends a worker long before


class Bettor:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        url_of: Callable[[str], str],
        targets: tuple[str, ...],
        *,
        players: int,
        acks_wanted_after: int = 0,
        retry_after_required: bool = False,
        connection_errors_allowed: bool = True,
    ) -> None:
        self.http, self.url_of, self.targets = http, url_of, targets
        self.players = players
        self.acks_wanted_after = acks_wanted_after  # `enough_after` is set once this many came after the mark
        self.retry_after_required = retry_after_required  # a 503 without Retry-After fails the test
        self.connection_errors_allowed = connection_errors_allowed  # else no answer at all fails the test
        self.acked: list[str] = []
        self.unanswered: list[str] = []  # still refused when the traffic stopped: may or may not be journaled
        self.refusals: Counter[str] = Counter()  # problem code (or the connection error) of each retried answer
        self.marked_at: float | None = None
        self.first_ack_after: float | None = None
        self.first_ack_after_by_target: dict[str, float] = {}
        self.acks_after = 0
        self.enough_before = asyncio.Event()  # ACKS_BEFORE were acknowledged
        self.enough_after = asyncio.Event()
        self.stop = asyncio.Event()

    async def traffic_before(self) -> int:
        """Let bets flow TRAFFIC_BEFORE_S, then until ACKS_BEFORE were acknowledged (at most
        TRAFFIC_BEFORE_MAX_S in all): the count acknowledged before the fault. A fixed pause alone
        saw no acknowledgement at all when the disk stalled beside the test (seen in CI)."""
        await asyncio.sleep(TRAFFIC_BEFORE_S)
        with contextlib.suppress(TimeoutError):  # the caller asserts something was acknowledged
            await asyncio.wait_for(self.enough_before.wait(), TRAFFIC_BEFORE_MAX_S - TRAFFIC_BEFORE_S)
        return len(self.acked)

    def mark(self) -> float:
        """The fault happens now: acknowledgements from here on count as after it."""
        self.marked_at = time.monotonic()
        return self.marked_at

    async def worker(self, w: int) -> None:
        for n in range(BETS_PER_WORKER_MAX):
            if self.stop.is_set():
                return
            target = self.targets[(w + n) % len(self.targets)]
            bet_id = f"w{w}-b{n}"
            body: dict[str, Any] = {
                "id": bet_id,
                "player_id": f"p{w % self.players + 1:03d}",
                "currency": "EUR",
                "amount_minor": 100,
                "round_id": f"w{w}-r{n}",
                "game_id": "slots-1",
            }
            while True:
                status, code = await self._post(target, body)
                if status in (200, 201):
                    self._acknowledged(target, bet_id)
                    break
                allowed = (0, 503) if self.connection_errors_allowed else (503,)
                assert status in allowed, f"{bet_id} answered {status} {code}"
                self.refusals[code] += 1
                if self.stop.is_set():
                    self.unanswered.append(bet_id)
                    return
                await asyncio.sleep(RETRY_PAUSE_S)

    def _acknowledged(self, target: str, bet_id: str) -> None:
        self.acked.append(bet_id)
        if len(self.acked) >= ACKS_BEFORE:
            self.enough_before.set()
        if self.marked_at is None:
            return
        now = time.monotonic()
        self.acks_after += 1
        self.first_ack_after = self.first_ack_after or now
        self.first_ack_after_by_target.setdefault(target, now)
        if self.acks_after >= self.acks_wanted_after:
            self.enough_after.set()

    async def _post(self, target: str, body: dict[str, Any]) -> tuple[int, str]:
        """The answer's status and, for a 503, its problem code; (0, error) when no answer came."""
        try:
            async with self.http.post(self.url_of(target) + "/v1/bets", json=body) as r:
                if r.status != 503:
                    return r.status, ""
                if self.retry_after_required:
                    assert r.headers.get("Retry-After"), "a 503 without Retry-After"
                problem = await r.json(content_type=None)
                return 503, str(problem.get("code")) if isinstance(problem, dict) else ""
        except (TimeoutError, aiohttp.ClientError) as e:
            return 0, type(e).__name__
