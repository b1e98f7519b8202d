"""A circuit breaker for one ledger URL (pure: no I/O, the clock is given).

It opens after `failures_max` consecutive failed attempts: while open, calls fail at once; after
`open_s` one probe is let through (half-open), and its outcome closes or reopens the circuit. An
answer that says nothing about the link's health (`release`) ends a probe without deciding.
"""

from __future__ import annotations

import math
from collections.abc import Callable


class Breaker:
    def __init__(self, failures_max: int, open_s: float, clock: Callable[[], float]) -> None:
        self._failures_max, self._open_s, self._clock = failures_max, open_s, clock
        self._failures = 0
        self._open_until = 0.0
        self._probing = False

    def is_open(self) -> bool:
        """Calls would fail at once (no side effect, unlike `allow`)."""
        return self._failures >= self._failures_max and (self._clock() < self._open_until or self._probing)

    def allow(self) -> bool:
        if self._failures < self._failures_max:
            return True
        if self._clock() < self._open_until or self._probing:
            return False
        self._probing = True  # half-open: one attempt decides
        return True

    def retry_after_s(self) -> int:
        return max(1, math.ceil(self._open_until - self._clock()))

    def success(self) -> bool:
        """Reset; True if the circuit was open (it closes now)."""
        was_open = self._failures >= self._failures_max
        self._failures, self._probing = 0, False
        return was_open

    def release(self) -> None:
        """The call got an answer that says nothing about the link's health (a half-open probe ends)."""
        self._probing = False

    def failure(self) -> bool:
        """Count a failure; True if it opened the circuit (not when a half-open probe failed)."""
        self._failures += 1
        self._probing = False
        if self._failures >= self._failures_max:
            self._open_until = self._clock() + self._open_s
        return self._failures == self._failures_max
