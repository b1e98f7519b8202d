"""The service side of the active/passive ledger pair on one PostgreSQL (`writer_lease = true`).

Two ledger processes share one database; each holds a `WriterLease` (core_ledger/store/postgres.py:
an advisory lock on a session of its own, checked inside every commit's transaction). The keeper is
one owned task that cycles through:

1. waiting: the copy is `passive` (core_ledger/failover.py): /readyz answers 503 with a reason,
   writes 503 `not_primary` with `Retry-After`; it polls for the lock;
2. taking over: once it holds the lock, `Failover.take_over` reads the head back from the store,
   raises the epoch durably (that commit proves the lease) and the copy takes writes;
3. holding: a heartbeat on the lease's session every `ttl_s / 4`, answered within `ttl_s / 4`.
   A heartbeat that fails or is late makes the copy `passive` at once (fail closed), the lease
   session is dropped, and it goes back to waiting. The server ends a session that stayed quiet
   for `ttl_s` (`idle_session_timeout`), so a copy cut off from the database loses the lock even
   though no connection close ever reaches the server.

A copy that dies (kill -9) closes its sockets: PostgreSQL releases the lock at once and the other
takes over within one poll. Metrics: `ledger_writer_lease_enabled`, `ledger_writer_lease_held`,
`ledger_writer_lease_takeovers_total`, `ledger_writer_lease_losses_total`. A take-over that fails
(the database unreachable) is logged, counted as a task failure and retried: the task never dies.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import structlog

from shared.tasks import OwnedTask

from core_ledger.failover import Failover
from core_ledger.metrics import LedgerMetrics
from core_ledger.task_health import TaskHealth

log = structlog.get_logger("croupier.ledger.lease")

TASK = "writer_lease"
POLL_S_MAX = 0.5  # a waiting copy asks for the lock this often at most (and within a quarter ttl)


class Lease(Protocol):
    """What the keeper needs of a lease (core_ledger/store/postgres.py `WriterLease`)."""

    @property
    def held(self) -> bool: ...
    async def acquire(self, *, poll_s: float = ..., timeout_s: float | None = ...) -> bool: ...
    async def heartbeat(self, timeout_s: float) -> None: ...
    async def release(self) -> None: ...


class LeaseKeeper:
    def __init__(self, lease: Lease, failover: Failover, metrics: LedgerMetrics, *, ttl_s: float) -> None:
        self.lease = lease
        self.failover = failover
        self.metrics = metrics
        self.ttl_s = ttl_s
        self.beat_s = ttl_s / 4
        self.poll_s = min(POLL_S_MAX, self.beat_s)
        self.waiting_since: float | None = time.monotonic()  # None while this copy holds the lease
        self.health = TaskHealth(TASK, metrics, base_delay_s=self.poll_s, max_delay_s=ttl_s)
        self._task = OwnedTask("ledger-writer-lease")
        metrics.writer_lease_enabled.set(1)
        metrics.writer_lease_held.set(0)

    @property
    def reason(self) -> str:
        """Why this copy takes no write (for /readyz of a passive copy)."""
        return "passive: another ledger copy holds the writer lease; this one takes over when it is released"

    def start(self) -> None:
        self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()
        self.failover.step_down("stopping")
        self.metrics.writer_lease_held.set(0)
        await self.lease.release()

    async def _run(self) -> None:
        while True:
            try:
                await self._cycle()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001  logged, counted, retried: the pair never loses its keeper
                self._lost(f"{type(e).__name__}: {e}")
                await self.lease.release()
                delay = self.health.failed()
                log.error(
                    "writer_lease_failed", error=repr(e), failures=self.health.consecutive_failures, retry_in_s=delay
                )
                await asyncio.sleep(delay)

    async def _cycle(self) -> None:
        """Wait for the lease, take over, hold it until a heartbeat fails."""
        await self.lease.acquire(poll_s=self.poll_s)
        started = time.monotonic()
        head = await self.failover.take_over()
        waited = started - self.waiting_since if self.waiting_since is not None else 0.0
        self.waiting_since = None
        self.metrics.writer_lease_held.set(1)
        self.metrics.writer_lease_takeovers_total.inc()
        self.health.succeeded()
        log.warning(
            "writer_lease_taken",
            epoch=head.epoch,
            head_sequence=head.sequence,
            waited_s=round(waited, 3),
            take_over_s=round(time.monotonic() - started, 3),
        )
        while True:
            await asyncio.sleep(self.beat_s)
            try:
                await self.lease.heartbeat(self.beat_s)
            except Exception as e:  # noqa: BLE001  any doubt about the lease: stop writing now
                self._lost(str(e))
                await self.lease.release()
                return

    def _lost(self, reason: str) -> None:
        was_primary = self.failover.role == "primary"
        self.failover.step_down(f"writer lease lost: {reason}")
        self.metrics.writer_lease_held.set(0)
        if was_primary:
            self.metrics.writer_lease_losses_total.inc()
            log.error("writer_lease_lost", reason=reason, epoch=self.failover.epoch)
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
