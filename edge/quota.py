"""Byte quotas: a token bucket per peer on the update bytes it makes this edge store."""

from __future__ import annotations

import time
from collections.abc import Callable


class ByteBucket:
    """`rate` bytes per second sustained, up to `burst` at once (a catch-up after a partition)."""

    def __init__(self, rate: int, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        assert rate > 0 and burst > 0
        self._rate, self._burst, self._clock = rate, burst, clock
        self._level = float(burst)
        self._at = clock()

    def take(self, n: int) -> bool:
        """Spend `n` bytes if the bucket holds them; False (nothing spent) if not."""
        if not self.holds(n):
            return False
        self._level -= n
        return True

    def holds(self, n: int) -> bool:
        """Whether `n` bytes could be spent now (nothing is spent)."""
        self._refill()
        return n <= self._level

    def spend(self, n: int) -> None:
        """Spend `n` bytes, or all the bucket holds if fewer: work done for nothing is paid too."""
        self._refill()
        self._level = max(0.0, self._level - n)

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self._burst, self._level + (now - self._at) * self._rate)
        self._at = now
