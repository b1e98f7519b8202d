"""A small in-process stand-in for the core ledger: just the routes the edge uses, with faults.

It keeps idempotency by (client_id, id) and answers like the real ledger (transaction with via,
sequence, jackpot_contributions, bonus_wagering; per-edge truths with as_of_sequence), so the
edge's forwarding, retries and exactly-once effects can be tested without a real ledger. Every
answer is built from the contract's answer models (shared/contract/answers.py), the ones the real
ledger's answers are checked against: the fake cannot drift from the real ledger's shapes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from shared.contract.answers import (
    BalancesAnswer,
    BatchAnswer,
    BatchResult,
    BonusWagering,
    JackpotContribution,
    LedgerBonus,
    LedgerBonuses,
    LedgerJackpot,
    LedgerReady,
    Limits,
    Problem,
    Round,
    RoundsAnswer,
    Transaction,
    TransactionAnswer,
)

SEED_MINOR, PPM = 1000, 10_000  # the jackpot "mega" on game "slots", 1% contributions


@dataclass
class FakeLedger:
    sequence: int = 0
    epoch: int = 1
    by_edge: dict[str, int] = field(default_factory=dict)
    wagered: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)  # (player, bonus) -> by edge
    answers: dict[tuple[str, str], TransactionAnswer] = field(default_factory=dict)
    bets: dict[tuple[str, str], Transaction] = field(default_factory=dict)
    fail_after_commit: int = 0  # batches that commit and whose answer is lost (a proxy's 502)
    reorder_results: int = 0  # batches answered with their results in reverse order (a broken proxy)
    refuse_ids: set[str] = field(default_factory=set)  # a batch holding one of these is refused whole (400)
    bug_ids: set[str] = field(default_factory=set)  # a batch holding one of these answers 500 internal_error
    delay_s: float = 0.0
    read_delay_s: float = 0.0  # each balance read takes this long (a slow ledger under reads)
    batches: list[int] = field(default_factory=list)
    limits: Limits | None = None  # what GET /v1/limits answers (None: an older ledger without the route)
    limits_asked: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/batch", self.batch)
        app.router.add_get("/v1/jackpots/{jid}", self.jackpot)
        app.router.add_get("/v1/players/{pid}/bonuses", self.bonuses)
        app.router.add_get("/v1/players/{pid}/balances", self.balances)
        app.router.add_get("/v1/players/{pid}/rounds", self.rounds)
        app.router.add_get("/v1/transactions/{id}", self.transaction)
        app.router.add_get("/readyz", self.readyz)
        if self.limits is not None:
            app.router.add_get("/v1/limits", self.get_limits)
        return app

    def grant(self, player_id: str, bonus_id: str) -> None:
        self.sequence += 1
        self.wagered[(player_id, bonus_id)] = {}

    def pool_minor(self) -> int:
        return SEED_MINOR + sum(self.by_edge.values())

    async def batch(self, request: web.Request) -> web.Response:
        assert request.headers["Authorization"].startswith("Bearer ")
        actions = (await request.json())["actions"]
        self.batches.append(len(actions))
        if any(a["body"]["id"] in self.refuse_ids for a in actions):  # as a ledger that cannot read one action
            return _problem(400, "validation_error", "actions: an action this ledger cannot read")
        if any(a["body"]["id"] in self.bug_ids for a in actions):  # as a ledger with a bug for one action
            return _problem(500, "internal_error", "an internal error occurred; it has been logged")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        results = [self._one(a["op"], a["body"]) for a in actions]
        if self.fail_after_commit > 0:
            self.fail_after_commit -= 1
            return web.Response(status=502, text="bad gateway: the ledger's answer was lost")
        if self.reorder_results > 0 and len(results) > 1:
            self.reorder_results -= 1
            results.reverse()
        return _json(BatchAnswer(results=results))

    def _one(self, op: str, body: dict[str, Any]) -> BatchResult:
        key = (body["client_id"], body["id"])
        if key in self.answers:
            return BatchResult(status=200, body=self.answers[key].model_copy(update={"replayed": True}))
        self.sequence += 1
        fields = {k: v for k, v in body.items() if k not in ("id", "via", "client_id")}
        tx = Transaction(
            id=body["id"],
            type=op,
            sequence=self.sequence,
            epoch=1,
            ledger_epoch=1,
            committed_at="2026-11-23T10:00:00.000000Z",
            via=body["via"],
            client_id=body["client_id"],
            outcome="committed",
            **fields,
        )
        if op == "bet":
            share = body["amount_minor"] * PPM // 1_000_000 if body["game_id"] == "slots" else 0
            tx.jackpot_contributions = (
                [JackpotContribution(jackpot_id="mega", amount_minor=share, epoch=self.epoch)] if share else []
            )
            tx.bonus_wagering = [
                BonusWagering(bonus_id=b, amount_minor=body["amount_minor"])
                for (p, b) in self.wagered
                if p == body["player_id"]
            ]
            self._count(body["via"], tx, 1)
            self.bets[(body["client_id"], body["id"])] = tx
        elif op == "rollback":
            bet = self.bets.get((body["client_id"], body["bet_id"]))
            tx.reversed = bet is not None
            if bet is not None:
                live = [c for c in bet.jackpot_contributions if c.epoch == self.epoch]
                tx.reversed_contributions = live
                tx.bonus_wagering = bet.bonus_wagering
                self._count(bet.via or "", bet.model_copy(update={"jackpot_contributions": live}), -1)
        elif op == "jackpot_payout":
            self.epoch += 1
            self.by_edge = {}
            tx.epoch, tx.seed_minor, tx.currency = self.epoch, SEED_MINOR, "EUR"
        answer = TransactionAnswer(transaction=tx, replayed=False)
        self.answers[key] = answer
        return BatchResult(status=201, body=answer)

    def _count(self, via: str, bet: Transaction, sign: int) -> None:
        for c in bet.jackpot_contributions:
            self.by_edge[via] = self.by_edge.get(via, 0) + sign * c.amount_minor
        for w in bet.bonus_wagering:
            slot = self.wagered[(str(bet.player_id), w.bonus_id)]
            slot[via] = slot.get(via, 0) + sign * w.amount_minor

    async def readyz(self, request: web.Request) -> web.Response:
        return _json(
            LedgerReady(
                status="ready", role="primary", epoch=1, fenced=False, head_sequence=self.sequence, head_hash="0" * 64
            )
        )

    async def get_limits(self, request: web.Request) -> web.Response:
        assert self.limits is not None
        self.limits_asked += 1
        return _json(self.limits)

    async def jackpot(self, request: web.Request) -> web.Response:
        if request.match_info["jid"] != "mega":
            return _problem(404, "not_found", "no such jackpot")
        return _json(
            LedgerJackpot(
                jackpot_id="mega",
                currency="EUR",
                pool_minor=self.pool_minor(),
                seed_minor=SEED_MINOR,
                epoch=self.epoch,
                contributions_by_edge=self.by_edge,
                as_of_sequence=self.sequence,
                as_of_epoch=1,
            )
        )

    async def bonuses(self, request: web.Request) -> web.Response:
        pid = request.match_info["pid"]
        out = [
            LedgerBonus(bonus_id=b, currency="EUR", wagered_minor=sum(by.values()), wagered_by_edge=by, status="active")
            for (p, b), by in self.wagered.items()
            if p == pid
        ]
        return _json(LedgerBonuses(player_id=pid, bonuses=out, as_of_sequence=self.sequence, as_of_epoch=1))

    async def balances(self, request: web.Request) -> web.Response:
        if self.read_delay_s:
            await asyncio.sleep(self.read_delay_s)
        return _json(BalancesAnswer(player_id=request.match_info["pid"], balances=[]))

    async def rounds(self, request: web.Request) -> web.Response:
        pid, client_id = request.match_info["pid"], request.query.get("client_id")
        return _json(
            RoundsAnswer(
                rounds=[
                    Round(
                        player_id=pid,
                        round_id=str(b.round_id),
                        client_id=b.client_id,
                        game_id=(b.model_extra or {})["game_id"],
                        currency=str(b.currency),
                        status="open",
                        bets_minor=int(b.amount_minor or 0),
                        wins_minor=0,
                    )
                    for b in self.bets.values()
                    if b.player_id == pid and client_id in (None, b.client_id)
                ]
            )
        )

    async def transaction(self, request: web.Request) -> web.Response:
        bet = self.bets.get((request.query["client_id"], request.match_info["id"]))
        if bet is None:
            return _problem(404, "not_found", "no such transaction")
        return _json(bet)


def _json(answer: Any) -> web.Response:
    return web.json_response(answer.dump())


def _problem(status: int, code: str, detail: str) -> web.Response:
    problem = Problem(
        type=f"https://croupier.dev/problems/{code}",
        title=code,
        status=status,
        detail=detail,
        code=code,
        request_id="fake",
    )
    return web.Response(body=orjson.dumps(problem.dump()), status=status, content_type="application/problem+json")
