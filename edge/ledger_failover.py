"""Which ledger the edge talks to, and which epoch it claims (no I/O: the client reports outcomes).

The client knows every ledger URL (`ledger_urls`, the primary first) and keeps using the one that
last worked. An attempt that fails (unreachable, timeout, 5xx) or is answered 503 (`not_primary`;
`standby_unavailable` from a primary whose standby was promoted) moves it to the next URL; the
action is retried there within the same deadline, with the same id. Each URL has its own breaker;
`not_primary` is an answer, not a failure, so it does not open the standby's breaker before its
promotion. Breakers opening and closing and moves to another URL are logged.

Every request carries `X-Ledger-Epoch`, the highest epoch any ledger announced to this client
(learned only from ledger answers, never from a game server's request): a primary of a lower epoch
that receives it asks its peer ledgers and fences itself if one proves that epoch (it lost a failover).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import structlog

from shared.contract import headers

from edge.breaker import Breaker
from edge.config import Limits
from edge.ledger_problems import AttemptFailed

log = structlog.get_logger("croupier.edge.ledger")

EPOCH_HEADER = headers.LEDGER_EPOCH


class LedgerFailover:
    def __init__(self, urls: Sequence[str], limits: Limits, clock: Callable[[], float]) -> None:
        self.urls = list(urls)
        assert self.urls, "at least one ledger URL"
        self.current = 0  # index of the URL in use: the last one that worked
        self.epoch_seen = 0  # the highest epoch a ledger announced (sent back on every request)
        self._limits = limits
        self._breakers = [Breaker(limits.breaker_failures, limits.breaker_open_s, clock) for _ in self.urls]

    # --- state ----------------------------------------------------------------------------------

    @property
    def breaker(self) -> Breaker:
        """The breaker of the URL in use."""
        return self._breakers[self.current]

    def breaker_open(self, index: int) -> bool:
        """Whether the breaker of the `index`-th ledger URL is open (calls to it fail at once)."""
        return self._breakers[index].is_open()

    def any_closed(self) -> bool:
        """Some URL would take a call now."""
        return not all(b.is_open() for b in self._breakers)

    def retry_after_s(self) -> int:
        return min(b.retry_after_s() for b in self._breakers)

    # --- choosing a URL -------------------------------------------------------------------------

    def pick(self) -> int:
        """The URL to try: the one in use, else the next whose breaker lets a call through."""
        for step in range(len(self.urls)):
            index = (self.current + step) % len(self.urls)
            if self._breakers[index].allow():
                self._switch(index, "circuit open")
                return index
        raise AttemptFailed("the circuit is open for every ledger")

    def move_on(self, index: int, reason: str) -> None:
        """The URL at `index` failed or is not the primary: the next attempt goes to the next one."""
        if index == self.current:
            self._switch((index + 1) % len(self.urls), reason)

    def _switch(self, index: int, reason: str) -> None:
        if index != self.current:
            log.warning("ledger_url_switched", from_url=self.urls[self.current], to_url=self.urls[index], reason=reason)
            self.current = index

    def unjudged(self, index: int) -> None:
        """An attempt that says nothing of the link (cut short by its caller's deadline): a probe ends
        undecided, no failure is counted."""
        self._breakers[index].release()

    def record(self, index: int, outcome: str, operation: str) -> None:
        """The outcome of an attempt at the `index`-th URL (`ok`, `rejected`: it answered; `not_primary`:
        a healthy ledger, not the one to use; `busy`: a ledger that refused one more connection;
        anything else: a failure of the link). Neither `not_primary` nor `busy` counts against the
        breaker; each moves the next attempt on to the next URL (a busy primary is back after one
        `not_primary` of its standby, and a copy that only ever says busy cannot keep the edge from
        a promoted one)."""
        breaker = self._breakers[index]
        if outcome in ("ok", "rejected"):
            if breaker.success():
                log.info("ledger_breaker_closed", url=self.urls[index])
            return
        if outcome in ("not_primary", "busy"):  # it answered: not a failure of the link (a busy
            breaker.release()  # ledger's open connections still serve; the circuit stays closed)
        elif breaker.failure():
            log.warning(
                "ledger_breaker_open",
                url=self.urls[index],
                failures=self._limits.breaker_failures,
                open_s=self._limits.breaker_open_s,
                last_outcome=outcome,
                operation=operation,
            )
        self.move_on(index, outcome)

    # --- epochs ---------------------------------------------------------------------------------

    def epoch_headers(self) -> dict[str, str]:
        """The epoch header to send (none before any ledger announced one)."""
        return {EPOCH_HEADER: str(self.epoch_seen)} if self.epoch_seen else {}

    def learn_epoch(self, answer_headers: Mapping[str, str]) -> None:
        """Follow the epoch a ledger announced in its answer (epochs only grow)."""
        epoch = headers.epoch_of(answer_headers.get(EPOCH_HEADER, ""))  # anything else is ignored
        if epoch is not None:
            self.epoch_seen = max(self.epoch_seen, epoch)
