"""Hash-chain audits: on demand (POST /admin/v1/audit/verify) and periodically in the background.
Both publish `ledger_audit_chain_ok` and `ledger_audit_last_verified_timestamp_seconds`. A periodic
audit that fails (a read error, not a broken chain) is retried with backoff (`TaskHealth`).

An on-demand audit walks the whole journal. A periodic one walks only the entries after the head
the last audit verified (linked to that head's hash), so its cost follows what was written since,
not the journal's length; every `AUDIT_FULL_EVERY`-th periodic audit walks the whole journal again
(an old entry changed on disk is found within that many intervals).

A whole walk of a long journal (periodic: the first after start-up, then every
`AUDIT_FULL_EVERY`-th; and on demand) runs in a child process at the lowest CPU priority
(`core_ledger.audit_walk.ChildWalk`) wherever another process can open the store: it takes nothing
from the event loop, and as much of the machine as serving leaves (a 10M journal: minutes on an
idle ledger). One child walks at a time. A short journal, or a store only this process can read (in
memory), is walked here instead; so is an on-demand audit whose child failed (the operator gets
an answer; the periodic audit counts the child's failures).

Walks in this process go in small pages (`core_ledger.pace.Pace`), so checking never holds the event
loop for long; a periodic one also pauses between its pages (AUDIT_PACE) so that it takes little of
the loop from the bets the ledger serves meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from shared.tasks import OwnedTask

from core_ledger.audit_walk import AuditWalkFailed, ChildWalk, PriorityRefused
from core_ledger.metrics import LedgerMetrics
from core_ledger.pace import Pace
from core_ledger.reads import LedgerReads
from core_ledger.service import LedgerService
from core_ledger.store import Head
from core_ledger.task_health import TaskHealth

log = structlog.get_logger("croupier.audit")

AUDIT_INTERVAL_S = 3600.0  # the stale-audit alert fires after 6 hours without one
AUDIT_RETRY_S = 5.0  # after a failed audit (not a broken chain: a read that failed), doubling up to the interval
AUDIT_FULL_EVERY = 24  # periodic audits: one in this many walks the whole journal (daily at the default interval)
# A periodic walk in this process checks for at most this share of its time, pausing between its
# pages (a whole walk here: 10M entries take ~3 min of CPU, ~30 min at this share). An on-demand
# audit runs at full speed, in small pages too.
AUDIT_PACE = Pace(loop_share=0.1)
PRIORITY_FIELDS = ("niceness", "sched_idle")  # the child's report says how it ran (logged), not what it found


class Auditor:
    def __init__(
        self,
        service: LedgerService,
        reads: LedgerReads,
        metrics: LedgerMetrics,
        clock: Callable[[], datetime],
        interval_s: float = AUDIT_INTERVAL_S,
        child_walk: ChildWalk | None = None,
    ) -> None:
        self.service = service
        self.child_walk = child_walk  # None: whole periodic walks run in this process too
        self.reads = reads
        self.metrics = metrics
        self._clock = clock
        self.interval_s = interval_s
        self._task = OwnedTask("ledger-audit")
        self.health = TaskHealth("audit", metrics, base_delay_s=min(AUDIT_RETRY_S, interval_s), max_delay_s=interval_s)
        self.full_every = AUDIT_FULL_EVERY
        self.verified: Head | None = None  # the head the last audit that passed verified up to
        self._since_full = 0  # periodic audits since the last whole walk
        self._one_child = asyncio.Lock()  # a walk waits for the child before it: one walks at a time

    async def verify(self) -> dict[str, Any]:
        """Verify the whole journal up to the current head and publish the outcome."""
        up_to = self.service.head.sequence
        try:
            walked = await self._whole_walk_in_child(up_to)
        except AuditWalkFailed as e:  # the periodic audit counts these; someone waits for this answer
            log.warning("audit_walk_failed", reason=str(e), on_demand=True)
            walked = None
        return self._publish(walked or await self.reads.verify(up_to), None)

    async def audit(self) -> dict[str, Any]:
        """The periodic audit: what was journaled since the last verified head, or (first, after a
        failure, and every `full_every`-th time) the whole journal."""
        since = self.verified if self._since_full + 1 < self.full_every else None
        up_to = self.service.head.sequence
        walked = await self._whole_walk_in_child(up_to) if since is None else None
        report = self._publish(walked or await self.reads.verify(up_to, since, pace=AUDIT_PACE), since)
        self._since_full = 0 if since is None else self._since_full + 1
        return report

    async def _whole_walk_in_child(self, up_to: int) -> dict[str, Any] | None:
        """The child's report of a whole walk; None when this journal is walked here instead (no
        child for this store, a short journal, or a sandbox that refused the child its priority)."""
        if self.child_walk is None or up_to < self.child_walk.min_entries:
            return None
        async with self._one_child:
            if self.child_walk is None:  # the walk before this one found the child refused its priority
                return None
            try:
                report = await self.child_walk.walk(up_to)
            except PriorityRefused as e:  # walk here from now on, as before there were children
                log.warning("audit_walk_in_process", reason=str(e))
                self.child_walk = None
                return None
        return {name: value for name, value in report.items() if name not in PRIORITY_FIELDS}

    def _publish(self, report: dict[str, Any], since: Head | None) -> dict[str, Any]:
        # Only a head this walk reached, linked all the way, may start the next incremental walk.
        self.verified = Head(report["head_sequence"], report["head_hash"]) if report["ok"] else None
        self.metrics.audit_chain_ok.set(1 if report["ok"] else 0)
        self.metrics.audit_last_verified_timestamp_seconds.set(self._clock().timestamp())
        if not report["ok"]:
            log.error(
                "audit_chain_broken", first_bad_sequence=report["first_bad_sequence"], whole_journal=since is None
            )
        return report

    def start(self) -> None:
        self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        await self.health.repeat(self.audit, self.interval_s, event="audit_failed")
