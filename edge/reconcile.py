"""Reconciliation: repair this edge's own slots from the ledger's per-edge truth.

The ledger says, as of its journal head `as_of_sequence`, how much of a jackpot's current epoch
came through each edge (`contributions_by_edge`) and how much each edge's bets wagered per bonus
(`wagered_by_edge`). The own slot becomes that truth plus the effects already applied above
`as_of_sequence` (see `edge.crdt.effects`), then the watermark rises to `as_of_sequence`.

Keys are reconciled when marked dirty (a payout, a new epoch, a rollback of another edge's bet,
a peer's hint, start-up) and by a slow sweep over every known key, a bounded number per round.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque

import structlog

from shared.contract.answers import LedgerBonuses, LedgerJackpot
from shared.errors import CroupierError, NotFound
from shared.ids import is_id

from edge.config import Limits
from edge.crdt import BONUS, JACKPOT, JackpotTruth, doc_name, reconcile_bonus, reconcile_jackpot
from edge.crdt.effects import position
from edge.crdt.slots import BonusSlot, bonus_progress, bonus_slots, jackpot_slots, jackpot_view, write_slot
from edge.health import TaskHealth
from edge.jackpots import JackpotCatalog
from edge.ledger_client import LedgerClient
from edge.state import EdgeState

log = structlog.get_logger("croupier.edge.reconcile")

SWEEP_KEYS_PER_ROUND = 20  # of every round's budget, kept for the sweep
HINTS_MAX = 1024  # peers' hints waiting at most; beyond, a hint is dropped (the sweep still comes by)
HINT_KEYS_PER_ROUND = 40  # peers' hints reconciled in a round at most
OWN, HINTED, SWEPT = "own", "hinted", "swept"  # where a round's name came from


class Reconciler:
    def __init__(
        self,
        state: EdgeState,
        ledger: LedgerClient,
        limits: Limits,
        *,
        catalog: JackpotCatalog | None = None,
        health: TaskHealth | None = None,
    ) -> None:
        self.state = state
        self.ledger = ledger
        self.limits = limits
        self.catalog = catalog or JackpotCatalog(None, limits.jackpot_lookup_interval_s)
        self.health = health or TaskHealth(state.metrics, limits.background_failures_unready)
        self._dirty: dict[str, None] = {}  # insertion-ordered set of document names
        self._hinted: dict[str, None] = {}  # the same, for what peers asked: never in `_dirty`'s place
        self._sweep: deque[str] = deque()

    def mark_dirty(self, names: list[str]) -> None:
        """This edge's own reasons to reconcile (a payout, an effect that failed, start-up)."""
        for name in names:
            if _reconcilable(name) and len(self._dirty) < self.limits.ledger_queue_max:
                self._dirty[name] = None

    def note_hints(self, names: list[str]) -> None:
        """A peer's hint: reconcile these known documents soon. Peers are not trusted: their hints
        wait apart, bounded (HINTS_MAX), and take at most HINT_KEYS_PER_ROUND of a round, so a
        flood of them neither displaces this edge's own marks nor stops the sweep."""
        for name in names:
            if len(self._hinted) >= HINTS_MAX:
                return
            if _reconcilable(name) and self.state.replica.known(name):
                self._hinted[name] = None

    async def reconcile(self, name: str) -> None:
        kind, _, key = name.partition("/")
        if kind == JACKPOT:
            await self.jackpot(key)
        elif kind == BONUS:
            await self.bonuses(key)

    async def jackpot(self, jackpot_id: str) -> None:
        try:
            answer = await self.ledger.read(f"/v1/jackpots/{jackpot_id}", "jackpot", LedgerJackpot)
        except NotFound:
            self.catalog.note_missing(jackpot_id)  # e.g. an id a peer made up before admission existed
            raise
        name = doc_name(JACKPOT, jackpot_id)
        doc = await self.state.doc(name)  # live from here: no await until the write
        truth = JackpotTruth(
            epoch=answer.epoch,
            seed_minor=answer.seed_minor,
            currency=answer.currency,
            mine_minor=answer.contributions_by_edge.get(self.state.edge_id, 0),
            pool_minor=answer.pool_minor,
            as_of=position(answer.as_of_epoch or 0, answer.as_of_sequence),
        )
        self.catalog.note(jackpot_id, truth.epoch)
        me, book = self.state.edge_id, self.state.book
        if truth.as_of < book.watermark(name):
            return  # an older read than the last reconciliation: nothing to learn
        slot = reconcile_jackpot(truth, book.after(name, truth.as_of), self.state.clock())
        book.raise_watermark(name, truth.as_of)
        own = jackpot_slots(doc).get(me)
        if own is None or (own.epoch, own.p - own.n, own.seed_minor, own.currency) != (
            slot.epoch,
            slot.p - slot.n,
            slot.seed_minor,
            slot.currency,
        ):
            self.state.write(name, lambda d: write_slot(d, me, slot.encode()))
            log.info(
                "reconciliation_repaired",
                doc=name,
                as_of_position=truth.as_of,
                epoch=slot.epoch,
                own_minor_before=None if own is None else own.p - own.n,
                own_minor_after=slot.p - slot.n,
            )
        self.state.store.raise_watermark(name, truth.as_of)
        view = jackpot_view(jackpot_slots(doc), own=me)
        if view is not None:  # at another epoch too: a display ahead of the ledger is drift
            self.state.metrics.display_drift_minor.labels("jackpot").set(view.display_minor - truth.pool_minor)

    async def bonuses(self, player_id: str) -> None:
        answer = await self.ledger.read(f"/v1/players/{player_id}/bonuses", "bonuses", LedgerBonuses)
        name = doc_name(BONUS, player_id)
        doc = await self.state.doc(name)  # live from here: no await until the write
        me, book = self.state.edge_id, self.state.book
        as_of = position(answer.as_of_epoch or 0, answer.as_of_sequence)
        bonuses = answer.bonuses
        if as_of < book.watermark(name) or (not bonuses and not self.state.replica.known(name)):
            return
        mine = {b.bonus_id: b.wagered_by_edge.get(me, 0) for b in bonuses}
        slot = reconcile_bonus(mine, book.after(name, as_of), self.state.clock())
        book.raise_watermark(name, as_of)
        own = bonus_slots(doc).get(me)
        if own is None or _net(own) != _net(slot):  # written once even if zero: the key is then known
            self.state.write(name, lambda d: write_slot(d, me, slot.encode()))
            log.info(
                "reconciliation_repaired",
                doc=name,
                as_of_position=as_of,
                own_wagered_before=None if own is None else _net(own),
                own_wagered_after=_net(slot),
            )
        self.state.store.raise_watermark(name, as_of)
        shown = bonus_progress(bonus_slots(doc))
        drift = sum(sum(shown.get(b.bonus_id, {}).values()) - b.wagered_minor for b in bonuses)
        self.state.metrics.display_drift_minor.labels("bonus").set(drift)

    async def run(self) -> None:
        """Forever: the dirty keys then a slice of the sweep (both bounded), at once (start-up
        after a crash) and then every interval. A key that fails for another reason than the
        ledger is logged and counted (`edge.health`) and the round goes on: nothing ends the loop."""
        while True:
            failure = await self.round()
            if failure is None:
                self.health.ok("reconcile")
            else:
                self.health.failed("reconcile", failure)
            await asyncio.sleep(self.limits.reconcile_interval_s)

    async def round(self) -> Exception | None:
        """One round (`_next_round`); the last failure that was not the ledger's unavailability.
        When the ledger is unavailable the round stops, and its names not done yet go back where
        they came from, for the next round."""
        failure: Exception | None = None
        sources = self._round_sources()
        names = list(sources)
        for done, name in enumerate(names):
            try:
                await self.reconcile(name)
            except NotFound:
                pass  # the ledger does not know it (yet): nothing to repair
            except CroupierError as e:
                if e.code == CroupierError.code:  # the ledger's answer is off the contract: a bug, as below
                    failure = e
                    log.error("reconciliation failed", doc=name, error=repr(e))
                    continue
                self._put_back({later: sources[later] for later in names[done:]})
                log.info("reconciliation_postponed", doc=name, code=e.code, postponed=len(names) - done)
                break
            except Exception as e:  # noqa: BLE001 - a bug in one key must not end the loop
                failure = e  # counted by the caller (`health.failed`: edge_background_failures_total)
                log.error("reconciliation failed", doc=name, error=repr(e))
        return failure

    def _put_back(self, sources: dict[str, str]) -> None:
        """Names of a round not done (name -> where it came from), back there: own marks and hints
        (within HINTS_MAX) in their sets, swept names at the head of the sweep."""
        self._sweep.extendleft(reversed([name for name, source in sources.items() if source == SWEPT]))
        for name, source in sources.items():
            if source == OWN:
                self._dirty[name] = None
            elif source == HINTED and len(self._hinted) < HINTS_MAX:
                self._hinted[name] = None

    def _next_round(self) -> list[str]:
        """The names of the next round, in order (see `_round_sources`)."""
        return list(self._round_sources())

    def _round_sources(self) -> dict[str, str]:
        """The next round, name -> where it came from: this edge's own marks first, then peers'
        hints, then the sweep, whose share of the budget (SWEEP_KEYS_PER_ROUND) nothing else takes."""
        budget = self.limits.reconcile_keys_per_round_max
        sweep_share = min(SWEEP_KEYS_PER_ROUND, budget // 2)
        own = _take(self._dirty, budget - sweep_share)
        hinted = _take(self._hinted, min(HINT_KEYS_PER_ROUND, budget - sweep_share - len(own)))
        if not self._sweep:
            self._sweep.extend(f"{JACKPOT}/{j}" for j in self.state.children(JACKPOT))
            self._sweep.extend(f"{BONUS}/{p}" for p in self.state.children(BONUS))
        swept = [self._sweep.popleft() for _ in range(min(budget - len(own) - len(hinted), len(self._sweep)))]
        sources: dict[str, str] = {}
        for names, source in ((own, OWN), (hinted, HINTED), (swept, SWEPT)):
            for name in names:
                sources.setdefault(name, source)  # a name in two places is done once, as the first
        return sources


def _reconcilable(name: str) -> bool:
    kind, _, key = name.partition("/")
    return kind in (JACKPOT, BONUS) and is_id(key)


def _take(names: dict[str, None], count: int) -> list[str]:
    """The first `count` of an insertion-ordered set, removed from it."""
    taken = list(itertools.islice(names, max(0, count)))
    for name in taken:
        del names[name]
    return taken


def _net(slot: BonusSlot) -> dict[str, int]:
    return {b: p - n for b, (p, n) in slot.wagered.items() if p - n}
