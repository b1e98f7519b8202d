"""What failover needs on top of the writer: a waitable watermark and the standbys' acknowledgements
(synchronous replication). The peer epoch checks that fence a primary are in core_ledger/fencing.py.

The journal endpoint advances nothing itself: the writer advances `commits` after every durable
commit (long polls wait on it) and each standby's poll `after_sequence=N&after_hash=H` acknowledges
N once H is the primary's own hash at N (`LedgerService.acknowledge`), which advances `acks`
(answers of a synchronous primary wait on it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from shared.contract import headers

log = structlog.get_logger("croupier.replication")

EPOCH_HEADER = headers.LEDGER_EPOCH  # on every ledger answer; edges send back the highest they saw
STANDBYS_MAX = 64  # acknowledgements remembered (one per replica credential in practice)


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
                await asyncio.wait_for(asyncio.shield(self._changed), remaining)
            except TimeoutError:
                return self.value >= target
        return True


@dataclass
class StandbyAck:
    acked_sequence: int
    seen_at: float  # loop time of its last poll


class Acks:
    """Per standby (credential name): the sequence it has durably applied, from its polls."""

    def __init__(self) -> None:
        self.best = Watermark()
        self.by_name: dict[str, StandbyAck] = {}

    def record(self, name: str, sequence: int, now: float) -> None:
        if name not in self.by_name and len(self.by_name) >= STANDBYS_MAX:
            oldest = min(self.by_name, key=lambda n: self.by_name[n].seen_at)
            del self.by_name[oldest]
        previous = self.by_name.get(name)
        self.by_name[name] = StandbyAck(max(sequence, previous.acked_sequence if previous else 0), now)
        self.best.advance(sequence)

    def report(self, head_sequence: int, now: float) -> list[dict[str, object]]:
        return [{"name": name, "acked_sequence": a.acked_sequence,
                 "lag_sequences": max(0, head_sequence - a.acked_sequence),
                 "last_poll_age_s": round(now - a.seen_at, 3)} for name, a in sorted(self.by_name.items())]

