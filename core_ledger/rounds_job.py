"""Interrupted rounds: count the stale ones and settle them by the configured policy.

A round is stale when it is open (it holds bets, no closing win, no refund) longer than
`stale_round_after_s`. Every `stale_round_check_interval_s` the job lists them (the `round_openings`
index, oldest first, at most `STALE_COUNT_MAX`), publishes their number (`ledger_stale_rounds`) and,
on a primary, applies `stale_round_policy`: `refund` journals a `round_refund` (a round with a win,
or one from before rounds were scoped by client, is closed instead: its outcome is known, or its
bets cannot be told apart), `close` a `round_close`. Each is an idempotent admin transaction naming
the round (`domain.rounds.settlement`), so a pass that is repeated, or races an operator settling by
hand, journals nothing twice. A failing pass is logged, counted and retried (task_health).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from shared.errors import CroupierError
from shared.tasks import OwnedTask

from core_ledger.domain.rounds import settlement
from core_ledger.domain.state import round_address
from core_ledger.metrics import LedgerMetrics
from core_ledger.reads import LedgerReads
from core_ledger.service import LedgerService
from core_ledger.task_health import TaskHealth

log = structlog.get_logger("croupier.ledger.rounds")

STALE_COUNT_MAX = 10_000  # rounds counted (and settled) per pass at most
PAGE = 200
JOB_PRINCIPAL = "stale-round-job"  # the journaled principal of what the job settles
JOB_REASON = "stale_round_policy"


class StaleRounds:
    def __init__(
        self,
        service: LedgerService,
        reads: LedgerReads,
        metrics: LedgerMetrics,
        *,
        after_s: float,
        policy: str,
        interval_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.service, self.reads, self.metrics = service, reads, metrics
        self.after_s, self.policy, self.interval_s = after_s, policy, interval_s
        self.clock = clock
        self._task = OwnedTask("ledger-stale-rounds")
        self.health = TaskHealth("stale_rounds", metrics, base_delay_s=min(1.0, interval_s), max_delay_s=interval_s)
        metrics.stale_rounds.set(0)

    def start(self) -> None:
        if self.after_s > 0:
            self._task.start(self.health.repeat(self.check, self.interval_s, event="stale_rounds_failed"))

    async def stop(self) -> None:
        await self._task.stop()

    async def check(self) -> int:
        """One pass: count the stale rounds, settle them by the policy (primary only); their number."""
        stale: list[dict[str, Any]] = []
        after, more = 0, True
        while more and len(stale) < STALE_COUNT_MAX:
            page = await self.reads.stale_rounds(self.after_s, after_sequence=after, limit=PAGE)
            stale += page["rounds"]
            after, more = page["next_after_sequence"], page["has_more"]
        self.metrics.stale_rounds.set(len(stale))
        if self.policy != "none" and self.service.role == "primary" and not self.service.fenced:
            for round_ in stale:
                await self.settle(round_)
        return len(stale)

    async def settle(self, round_: dict[str, Any]) -> None:
        policy = self.policy
        if policy == "refund":
            row, _ = await self.reads.store.get(
                *round_address(round_["client_id"], round_["player_id"], round_["round_id"])
            )
            if round_["client_id"] is None or (row is not None and row["win_count"] > 0):
                policy = "close"
        command = settlement(
            policy, round_["player_id"], round_["round_id"], round_["client_id"], JOB_REASON, JOB_PRINCIPAL
        )
        [result] = await self.service.submit([command])
        if isinstance(result, CroupierError):
            # Not binding (the round went away under it, or the writer refused the batch): logged and
            # left for the next pass, which lists the round again if it is still stale.
            log.warning(
                "stale_round_not_settled",
                type=command.type,
                player_id=round_["player_id"],
                round_id=round_["round_id"],
                client_id=round_["client_id"],
                code=result.code,
            )
            return
        status, body = result
        if body.get("replayed"):
            return  # settled (or refused) by an earlier pass or by an operator: nothing new
        outcome = "rejected" if status >= 400 else "committed"
        self.metrics.stale_rounds_settled_total.labels(command.type, outcome).inc()
        tx = body.get("transaction", {})
        log.info(
            "stale_round_settled",
            type=command.type,
            player_id=round_["player_id"],
            round_id=round_["round_id"],
            client_id=round_["client_id"],
            opened_at=round_["opened_at"],
            outcome=outcome,
            code=body.get("code"),
            sequence=tx.get("sequence", body.get("sequence")),
            amount_minor=tx.get("amount_minor"),
        )
