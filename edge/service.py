"""The edge's use cases: money forwarded to the ledger (then its CRDT effects), and state reads.

Money is answered only with the ledger's own answer, after it committed. The CRDT effects of a
committed transaction are applied here iff it went through this edge (see `edge.crdt.effects`);
a failure to apply one never fails the money answer (reconciliation repairs the slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from pycrdt import Doc

from shared.contract.answers import BalancesAnswer, RoundsAnswer, Transaction, TransactionAnswer
from shared.contract.requests import MoneyWrite
from shared.errors import BadRequest, Conflict, CroupierError, NotFound, PayloadTooLarge, Unavailable, status_for

from edge.config import EdgeConfig
from edge.crdt import BONUS, JACKPOT, SESSION, BonusSlot, Effect, JackpotSlot, SessionRecord, doc_name
from edge.crdt.effects import effect_documents, effects_of, position, reported_epochs
from edge.crdt.slots import (
    JackpotView,
    bonus_progress,
    bonus_slots,
    decoded,
    jackpot_slots,
    jackpot_view,
    latest_session,
    session_latest,
    write_slot,
)
from edge.jackpots import JackpotCatalog
from edge.ledger_client import LedgerClient
from edge.metrics import MONEY_OPERATIONS, EdgeMetrics, error_code_label
from edge.reconcile import Reconciler
from edge.state import EdgeState

log = structlog.get_logger("croupier.edge.service")

Hint = Callable[[str, list[str]], None]  # (peer edge id, document names): ask it to reconcile


RFC3339_SECONDS_MAX = 253402300799  # 9999-12-31T23:59:59Z


def rfc3339(ts: float) -> str:
    """`ts` as RFC 3339 UTC text to the millisecond (truncated), as `datetime.isoformat` writes it;
    the text up to the second is made once per second (every session save writes one)."""
    seconds = math.floor(ts)
    micros = round((ts - seconds) * 1e6)  # as datetime.fromtimestamp rounds (half to even)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    if not 0 <= seconds <= RFC3339_SECONDS_MAX:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"{_rfc3339_second(seconds)}.{micros // 1000:03d}Z"


@functools.lru_cache(maxsize=16)
def _rfc3339_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _jackpot_body(jackpot_id: str, view: JackpotView) -> dict[str, Any]:
    return {
        "jackpot_id": jackpot_id,
        "currency": view.currency,
        "display_minor": view.display_minor,
        "epoch": view.epoch,
        "seed_minor": view.seed_minor,
        "by_edge": view.by_edge,
        "as_of": rfc3339(view.as_of_ts),
    }


EDGE_MONEY_OPS = MONEY_OPERATIONS  # what game servers send here
SESSION_STORED_WAIT_S = 5.0  # a game state save waits this long for its local commit, then 503
SESSION_GAMES_READ_FACTOR = 2  # a session reads up to this many times session_games_max games


class EdgeService:
    def __init__(
        self,
        cfg: EdgeConfig,
        state: EdgeState,
        ledger: LedgerClient,
        reconciler: Reconciler,
        metrics: EdgeMetrics,
        hint: Hint = lambda peer, names: None,
        catalog: JackpotCatalog | None = None,
    ) -> None:
        self.cfg = cfg
        self.catalog = catalog or reconciler.catalog
        for kind in (JACKPOT, BONUS, SESSION):  # every series exists from the start: a first failure is an increase
            metrics.crdt_invalid_slots_total.labels(kind)
        self.state = state
        self.ledger = ledger
        self.reconciler = reconciler
        self.metrics = metrics
        self.hint = hint
        self._peer_ids = frozenset(peer.id for peer in cfg.peers)
        ledger.batcher.on_late = self._answered_late

    def _answered_late(self, op: str, answer: TransactionAnswer) -> None:
        """A committed action whose answer came after its caller's deadline: its effects were not
        applied here (the caller got a 503 and may roll it back), so the documents they touch are
        reconciled from the ledger, whose truth holds it."""
        tx = answer.transaction
        if tx.via == self.edge_id and tx.outcome == "committed":
            self.reconciler.mark_dirty(effect_documents(op, tx))
            log.warning("ledger_answer_after_deadline", op=op, id=tx.id, sequence=tx.sequence)

    @property
    def edge_id(self) -> str:
        return self.cfg.id

    # --- money --------------------------------------------------------------------------------

    async def money(self, op: str, body: MoneyWrite, client_id: str) -> tuple[int, dict[str, Any]]:
        payload = {**body.model_dump(mode="json", exclude_none=True), "via": self.edge_id, "client_id": client_id}
        try:
            status, answer = await self.ledger.money(op, payload)
        except CroupierError as e:
            self.metrics.money_requests_total.labels(op, str(status_for(e))).inc()
            self.metrics.money_errors_total.labels(op, error_code_label(e.code)).inc()
            raise
        except Exception:  # a bug here: counted as the money SLO's error, then re-raised: the web layer
            # logs it with its traceback and answers 500 internal_error (never a retryable 503)
            self.metrics.money_requests_total.labels(op, "500").inc()
            self.metrics.money_errors_total.labels(op, error_code_label("internal_error")).inc()
            raise
        self.metrics.money_requests_total.labels(op, str(status)).inc()
        tx = answer.transaction
        try:
            await self._apply_effects(op, tx, replayed=status == 200)
        except Exception as e:  # noqa: BLE001 (any bug included: the ledger committed, so the answer stands)
            self.metrics.effect_failures_total.labels(op).inc()
            names = effect_documents(op, tx)
            self.reconciler.mark_dirty(names)
            log.error("effect_failed", op=op, sequence=tx.sequence, id=tx.id, docs=names, error=repr(e))
        return status, answer.dump()

    async def _apply_effects(self, op: str, tx: Transaction, *, replayed: bool = False) -> None:
        self._note_epochs(op, tx)
        if tx.via != self.edge_id or tx.outcome != "committed":
            if replayed and tx.outcome == "committed" and tx.via in self._peer_ids:
                # A retry of an action that first went through that edge, whose caller gave up: its
                # answer may never have reached that edge, which then never applied the effects.
                # Its reconciliation checks (a hint, as for a rollback of a bet taken there).
                self.hint(tx.via, effect_documents(op, tx))
            return  # another edge owns these effects (or nothing was committed)
        seq = position(tx.ledger_epoch, tx.sequence)
        effects = effects_of(op, tx, self.edge_id)  # op: the transaction type the edge forwarded
        for slot in effects.slots:
            await self._effect(op, Effect(slot.doc, seq, slot.delta), slot.currency)
        names = list(effects.reconcile)
        if effects.reconcile_everywhere:
            self.reconciler.mark_dirty(names)
            for peer in self.cfg.peers:
                self.hint(peer.id, names)
        elif effects.reconcile_at is not None:
            self.hint(effects.reconcile_at, names)
        if effects.slots:
            # The effects queued are written at the next turn of the loop, before this resumes:
            # the answer leaves after them, as after a write of its own.
            await asyncio.sleep(0)

    def _note_epochs(self, op: str, tx: Transaction) -> None:
        """The ledger's answer says which jackpots exist and at which epoch (admission uses it)."""
        for jackpot_id, epoch in reported_epochs(op, tx):
            self.catalog.note(jackpot_id, epoch)

    async def _effect(self, op: str, effect: Effect, currency: str | None) -> None:
        """Queue an effect for its document's next write: every money answer of a ledger batch
        resumes at one turn of the loop, and one write then takes all their effects on a document
        (a jackpot: every bet's contribution), instead of one write, one stored update and one
        push to the peers per bet."""
        name = effect.key
        if not self.state.replica.known(name):
            try:  # first sight: start from the ledger's truth (seed, epoch, our share so far)
                await self.reconciler.reconcile(name)
            except CroupierError:
                self.reconciler.mark_dirty([name])
        await self.state.doc(name)  # live from here, and pinned while its effects wait (no await until queued)
        waiting = self.state.effects_waiting
        if not waiting:
            asyncio.get_running_loop().call_soon(self.write_waiting_effects)
        waiting.setdefault(name, []).append((op, effect, currency))

    def write_waiting_effects(self) -> None:
        """Write every effect queued since the last turn of the loop: one write per document. The
        book decides here, at the write, which still apply (a reconciliation in between may
        hold some already). A failure is counted per effect and its document reconciled; the
        ledger committed, so the answers stand."""
        waiting, self.state.effects_waiting = self.state.effects_waiting, {}
        for name, queued in waiting.items():
            try:
                self._write_effects(name, queued)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:  # noqa: BLE001 (any bug, and pycrdt's Rust panics, which are not
                # Exceptions: the other documents' effects are still written; reconciliation repairs this one)
                by_position = {effect.sequence: op for op, effect, _ in queued}  # a retry answered twice: once
                for op in by_position.values():
                    self.metrics.effect_failures_total.labels(op).inc()
                self.reconciler.mark_dirty([name])
                log.error("effect_failed", doc=name, positions=sorted(by_position), error=repr(e))

    def _write_effects(self, name: str, queued: list[tuple[str, Effect, str | None]]) -> None:
        doc = self.state.replica.live(name)
        if doc is None:
            raise RuntimeError(f"document {name} was evicted while effects waited for it")
        book, fresh, seen = self.state.book, [], set()
        for _, effect, currency in queued:  # an id retried while in flight: one effect, twice
            if effect.sequence not in seen and book.should_apply(name, effect.sequence):
                seen.add(effect.sequence)
                fresh.append((effect, currency))
        if not fresh:
            return
        now = self.state.clock()
        if name.startswith(JACKPOT + "/"):
            slot = self._own_jackpot(name, doc, fresh[0][0].delta, fresh[0][1])
            for effect, _ in fresh:
                slot = self._jackpot_after(name, slot, effect.delta, now)
            encoded = slot.encode()
        else:
            bonus = bonus_slots(doc).get(self.edge_id) or BonusSlot({}, 0.0)
            for effect, _ in fresh:
                bonus = bonus.add(effect.delta, now)
            encoded = bonus.encode()
        self.state.write(name, lambda d: write_slot(d, self.edge_id, encoded), tuple(e for e, _ in fresh))

    def _own_jackpot(self, name: str, doc: Doc, delta: dict[str, int], currency: str | None) -> JackpotSlot:
        """This edge's slot of a jackpot, before a contribution `delta`; a new one if it has none."""
        slots = jackpot_slots(doc)
        own = slots.get(self.edge_id)
        if own is None:
            view = jackpot_view(slots)
            # Seed and currency come from the ledger; until reconciled, a peer's view is the best guess.
            seed_minor = view.seed_minor if view else 0
            own = JackpotSlot(int(delta["epoch"]), 0, 0, seed_minor, currency or (view.currency if view else ""), 0.0)
            self.reconciler.mark_dirty([name])
        return own

    def _jackpot_after(self, name: str, own: JackpotSlot, delta: dict[str, int], now: float) -> JackpotSlot:
        epoch = int(delta["epoch"])
        if epoch > own.epoch and "seed_minor" not in delta:
            self.reconciler.mark_dirty([name])  # a payout elsewhere: confirm the new epoch's seed
        return own.add(epoch, int(delta["amount_minor"]), now, delta.get("seed_minor"))

    # --- reads --------------------------------------------------------------------------------

    async def balances(self, player_id: str) -> dict[str, Any]:
        return (await self.ledger.read(f"/v1/players/{player_id}/balances", "balances", BalancesAnswer)).dump()

    async def jackpot(self, jackpot_id: str) -> dict[str, Any]:
        name = doc_name(JACKPOT, jackpot_id)
        if not self.state.replica.known(name):
            with contextlib.suppress(Unavailable):
                await self.reconciler.jackpot(jackpot_id)  # first sight: learn it from the ledger
        view = self._jackpot_view(jackpot_id, await self.state.doc(name))
        if view is None:
            raise NotFound(f"jackpot {jackpot_id!r} is not known here")
        return _jackpot_body(jackpot_id, view)

    async def jackpots(self) -> dict[str, Any]:
        out = []
        for jackpot_id in self.state.children(JACKPOT)[: self.cfg.limits.jackpots_list_max]:
            if self.catalog.missing(jackpot_id):
                continue  # the ledger has no such jackpot (an id a peer made up before admission existed)
            view = self._jackpot_view(jackpot_id, await self.state.doc(doc_name(JACKPOT, jackpot_id)))
            if view is not None:
                out.append(_jackpot_body(jackpot_id, view))
        return {"jackpots": out}

    def _jackpot_view(self, jackpot_id: str, doc: Doc) -> JackpotView | None:
        """The display from the slots that decode and whose epoch the ledger confirmed (when the
        ledger's epoch is known here); the others are skipped and counted, never a 500."""
        good, bad = decoded(doc, JackpotSlot.decode)
        known = self.catalog.epoch(jackpot_id)
        ahead = [e for e, s in good.items() if known is not None and s.epoch > known]
        self._count_invalid(JACKPOT, len(bad) + len(ahead))
        return jackpot_view({e: s for e, s in good.items() if e not in ahead}, own=self.edge_id)

    def _count_invalid(self, kind: str, n: int) -> None:
        if n:
            self.metrics.crdt_invalid_slots_total.labels(kind).inc(n)

    async def bonus_progress(self, player_id: str) -> dict[str, Any]:
        name = doc_name(BONUS, player_id)
        if not self.state.replica.known(name):
            with contextlib.suppress(Unavailable, NotFound):
                await self.reconciler.bonuses(player_id)
        good, bad = decoded(await self.state.doc(name), BonusSlot.decode)
        self._count_invalid(BONUS, len(bad))
        progress = bonus_progress(good)
        return {
            "player_id": player_id,
            "bonuses": [
                {"bonus_id": b, "wagered_minor": sum(by_edge.values()), "by_edge": by_edge}
                for b, by_edge in sorted(progress.items())
            ],
        }

    async def session(self, player_id: str, client_id: str) -> dict[str, Any]:
        """What a game server (`client_id`) resuming a player is shown: its own saved game states
        (or, per game, one saved before states were kept apart by game server when that is newer:
        an edge of the earlier release acknowledged it during an upgrade), and its own open rounds
        that still hold a stake, from the ledger."""
        # A save beyond `session_games_max` games is refused, but two edges may each take a new
        # game at once: the newest states are shown, among a bounded number read.
        cap = self.cfg.limits.session_games_max
        read_max = cap * SESSION_GAMES_READ_FACTOR
        saved: dict[str, tuple[str, SessionRecord]] = {}  # game -> (edge that saved it, its record)
        own = self.state.children(doc_name(SESSION, player_id, client_id))[:read_max]
        shared = self.state.children(doc_name(SESSION, player_id))[:read_max]
        for game_id, name in [
            *((g, doc_name(SESSION, player_id, client_id, g)) for g in own),
            *((g, doc_name(SESSION, player_id, g)) for g in shared),
        ]:
            doc = await self.state.doc(name)
            self._count_invalid(SESSION, len(decoded(doc, SessionRecord.decode)[1]))
            latest = session_latest(doc)
            if latest is not None and (game_id not in saved or latest[1].ts > saved[game_id][1].ts):
                saved[game_id] = latest  # own first: it wins a tie
        newest = sorted(saved.items(), key=lambda item: (item[1][1].ts, item[0]), reverse=True)[:cap]
        games = {
            game_id: {"state": orjson.loads(rec.state_json), "updated_at": rec.updated_at, "edge": edge}
            for game_id, (edge, rec) in newest
        }
        out: dict[str, Any] = {"player_id": player_id, "open_rounds": [], "open_rounds_available": True, "games": games}
        try:
            rounds = await self.ledger.read(
                f"/v1/players/{player_id}/rounds?status=open&client_id={client_id}",
                "rounds",
                RoundsAnswer,
                deadline_s=self.ledger.deadline_s / 2,
            )
            out["open_rounds"] = rounds.dump()["rounds"]
        except NotFound:
            pass
        except Unavailable:
            out["open_rounds_available"] = False  # the game state is still served while the ledger is away
        return out

    def _refuse_a_game_past_the_cap(self, player_id: str, client_id: str, game_id: str) -> None:
        """A new game for a player who has `session_games_max` games saved by this game server is
        refused: taken, it could never be read back (a session shows at most that many games)."""
        known = self.state.children(doc_name(SESSION, player_id, client_id))
        if game_id not in known and len(known) >= self.cfg.limits.session_games_max:
            raise Conflict(
                f"player {player_id!r} has {len(known)} games saved by this game server, the most a "
                f"session holds (session_games_max): save into one of them",
                code="session_games_full",
            )

    async def _shared_session_ts(self, player_id: str, game_id: str) -> float:
        """The write time of a game's state saved by the earlier release, shared by every game
        server (0.0: none)."""
        shared = doc_name(SESSION, player_id, game_id)
        if not self.state.replica.known(shared):
            return 0.0
        await self.state.doc(shared)
        return self._shared_session_ts_now(player_id, game_id)

    def _shared_session_ts_now(self, player_id: str, game_id: str) -> float:
        """`_shared_session_ts` as the live document holds it now (0.0: none, or not live)."""
        shared = doc_name(SESSION, player_id, game_id)
        if self.state.replica.live(shared) is None:
            return 0.0
        latest = latest_session(self.state.replica.slot_values(shared))
        return latest[1].ts if latest else 0.0

    async def put_session(self, player_id: str, game_id: str, state: dict[str, Any], client_id: str) -> dict[str, Any]:
        """Save a game server's (`client_id`) state of a player's game: in a document of that game
        server's own, which no other game server reads or overwrites."""
        try:
            text = orjson.dumps(state).decode()
        except orjson.JSONEncodeError as e:  # e.g. nested deeper than orjson writes (255 levels)
            raise BadRequest(f"state: cannot be stored: {e}", field="state") from None
        if len(text) > self.cfg.session_state_bytes_max:
            raise PayloadTooLarge(f"session state exceeds {self.cfg.session_state_bytes_max} bytes")
        name = doc_name(SESSION, player_id, client_id, game_id)
        self._refuse_a_game_past_the_cap(player_id, client_id, game_id)
        shared_ts = await self._shared_session_ts(player_id, game_id)
        await self.state.doc(name)
        self._refuse_a_game_past_the_cap(player_id, client_id, game_id)  # again: another save may have come meanwhile
        latest = latest_session(self.state.replica.slot_values(name))
        # Last writer wins by origin time: this write must sort after the one it replaces, which may
        # be a state saved by the earlier release (a session shows the newer of the two).
        shared_ts = max(shared_ts, self._shared_session_ts_now(player_id, game_id))
        ts = max(self.state.clock(), (latest[1].ts if latest else 0.0) + 1e-6, shared_ts + 1e-6)
        record = SessionRecord(text, rfc3339(ts), ts)
        self.state.write(name, lambda d: write_slot(d, self.edge_id, record.encode()))
        # Answered once stored here: a save acknowledged and lost to a crash of this process would
        # give a player who comes back an older state (no ledger copy repairs a session).
        if not await self.state.store.barrier(SESSION_STORED_WAIT_S):
            raise Unavailable("the game state was not stored in time; save it again", code="storage_unavailable")
        return {
            "player_id": player_id,
            "game_id": game_id,
            "state": state,
            "updated_at": record.updated_at,
            "edge": self.edge_id,
        }
