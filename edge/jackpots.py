"""What this edge learned from the ledger about jackpots: which exist, and their current epoch.

Peers' jackpot updates are admitted only for jackpots the ledger confirmed and only up to the
epoch the ledger reported (`edge.crdt.admission`). Facts come from every ledger answer the edge
already reads (reconciliation, money answers) and, for an id a peer mentions first, from
`GET /v1/jackpots/{id}` asked at most once per `lookup_interval_s` per id, a bounded number of ids
at a time. A 404 marks the id missing until the next lookup; an unreachable ledger leaves it
unconfirmed (its updates are deferred, not counted as hostile).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog

from shared.contract.answers import LedgerJackpot
from shared.errors import CroupierError, NotFound
from shared.ids import is_id

from edge.ledger_client import LedgerClient

log = structlog.get_logger("croupier.edge.jackpots")

IDS_MAX = 10_000  # ids remembered (confirmed, missing or asked); least recently used first out
LOOKUPS_PER_CALL_MAX = 8
LOOKUP_DEADLINE_S = 1.0  # sync waits for these lookups: a slow ledger must not stall it for long


class JackpotCatalog:
    def __init__(
        self, ledger: LedgerClient | None, lookup_interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ledger = ledger
        self._interval = lookup_interval_s
        self._clock = clock
        self._epochs: OrderedDict[str, int] = OrderedDict()
        self._missing: OrderedDict[str, float] = OrderedDict()  # id -> when the ledger said 404
        self._asked: OrderedDict[str, float] = OrderedDict()  # id -> last lookup

    # --- JackpotFacts (edge.crdt.admission) ---------------------------------------------------

    def epoch(self, jackpot_id: str) -> int | None:
        return self._epochs.get(jackpot_id)

    def missing(self, jackpot_id: str) -> bool:
        return jackpot_id in self._missing and jackpot_id not in self._epochs

    def asked_recently(self, jackpot_id: str) -> bool:
        return not self.due(jackpot_id)

    # --- learning -----------------------------------------------------------------------------

    def note(self, jackpot_id: str, epoch: int) -> None:
        """The ledger reported `jackpot_id` at `epoch` (epochs only grow)."""
        if not is_id(jackpot_id) or epoch < 1:
            return
        self._epochs[jackpot_id] = max(epoch, self._epochs.get(jackpot_id, 0))
        self._epochs.move_to_end(jackpot_id)
        self._missing.pop(jackpot_id, None)
        _bound(self._epochs)

    def note_missing(self, jackpot_id: str) -> None:
        """The ledger answered 404 for `jackpot_id`."""
        if jackpot_id in self._epochs or not is_id(jackpot_id):
            return
        self._missing[jackpot_id] = self._clock()
        self._missing.move_to_end(jackpot_id)
        _bound(self._missing)

    def due(self, jackpot_id: str) -> bool:
        """Not asked of the ledger within the lookup interval."""
        asked = self._asked.get(jackpot_id)
        return asked is None or self._clock() - asked >= self._interval

    async def learn(self, jackpot_ids: list[str]) -> None:
        """Ask the ledger about ids that are due (a bounded number); never raises for the ledger."""
        if self._ledger is None:
            return
        for jackpot_id in [j for j in dict.fromkeys(jackpot_ids) if is_id(j) and self.due(j)][:LOOKUPS_PER_CALL_MAX]:
            self._asked[jackpot_id] = self._clock()
            self._asked.move_to_end(jackpot_id)
            _bound(self._asked)
            try:
                answer = await self._ledger.read(
                    f"/v1/jackpots/{jackpot_id}",
                    "jackpot",
                    LedgerJackpot,
                    deadline_s=min(LOOKUP_DEADLINE_S, self._ledger.deadline_s),
                )
                self.note(jackpot_id, answer.epoch)
            except NotFound:
                self.note_missing(jackpot_id)
            except CroupierError as e:  # unavailable, or an answer off the contract (counted by the client)
                log.info("jackpot lookup postponed", jackpot_id=jackpot_id, error=repr(e))
                return  # the ledger is unavailable: the others wait for their next turn too


def _bound(d: OrderedDict[str, Any]) -> None:
    while len(d) > IDS_MAX:
        d.popitem(last=False)
