"""A small in-process stand-in for the core ledger: just the routes the edge uses, with faults.

It keeps idempotency by (client_id, id) and answers like the real ledger (transaction with via,
sequence, jackpot_contributions, bonus_wagering; per-edge truths with as_of_sequence), so the
edge's forwarding, retries and exactly-once effects can be tested without a real ledger.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SEED_MINOR, PPM = 1000, 10_000  # the jackpot "mega" on game "slots", 1% contributions


@dataclass
class FakeLedger:
    sequence: int = 0
    epoch: int = 1
    by_edge: dict[str, int] = field(default_factory=dict)
    wagered: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)  # (player, bonus) -> by edge
    answers: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    bets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    fail_after_commit: int = 0  # batches that commit and then answer 500 (a lost answer)
    delay_s: float = 0.0
    batches: list[int] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/batch", self.batch)
        app.router.add_get("/v1/jackpots/{jid}", self.jackpot)
        app.router.add_get("/v1/players/{pid}/bonuses", self.bonuses)
        app.router.add_get("/v1/players/{pid}/balances", self.balances)
        app.router.add_get("/v1/players/{pid}/rounds", self.rounds)
        app.router.add_get("/v1/transactions/{id}", self.transaction)
        app.router.add_get("/readyz", self.readyz)
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
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        results = [self._one(a["op"], a["body"]) for a in actions]
        if self.fail_after_commit > 0:
            self.fail_after_commit -= 1
            return web.json_response({"code": "boom"}, status=500)
        return web.json_response({"results": results})

    def _one(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        key = (body["client_id"], body["id"])
        if key in self.answers:
            return {"status": 200, "body": {**self.answers[key], "replayed": True}}
        self.sequence += 1
        tx = {**body, "type": op, "sequence": self.sequence, "outcome": "committed"}
        if op == "bet":
            share = body["amount_minor"] * PPM // 1_000_000 if body["game_id"] == "slots" else 0
            tx["jackpot_contributions"] = ([{"jackpot_id": "mega", "amount_minor": share, "epoch": self.epoch}]
                                           if share else [])
            tx["bonus_wagering"] = [{"bonus_id": b, "amount_minor": body["amount_minor"]}
                                    for (p, b) in self.wagered if p == body["player_id"]]
            self._count(body["via"], tx, 1)
            self.bets[(body["client_id"], body["id"])] = tx
        elif op == "rollback":
            bet = self.bets.get((body["client_id"], body["bet_id"]))
            tx["reversed"] = bet is not None
            if bet is not None:
                live = [c for c in bet["jackpot_contributions"] if c["epoch"] == self.epoch]
                tx.update(reversed_contributions=live, bonus_wagering=bet["bonus_wagering"])
                self._count(bet["via"], {**bet, "jackpot_contributions": live}, -1)
        elif op == "jackpot_payout":
            self.epoch += 1
            self.by_edge = {}
            tx.update(epoch=self.epoch, seed_minor=SEED_MINOR, currency="EUR")
        answer = {"transaction": tx, "replayed": False}
        self.answers[key] = answer
        return {"status": 201, "body": answer}

    def _count(self, via: str, bet: dict[str, Any], sign: int) -> None:
        for c in bet["jackpot_contributions"]:
            self.by_edge[via] = self.by_edge.get(via, 0) + sign * c["amount_minor"]
        for w in bet["bonus_wagering"]:
            slot = self.wagered[(bet["player_id"], w["bonus_id"])]
            slot[via] = slot.get(via, 0) + sign * w["amount_minor"]

    async def readyz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    async def jackpot(self, request: web.Request) -> web.Response:
        if request.match_info["jid"] != "mega":
            return web.json_response({"code": "not_found", "detail": "no such jackpot"}, status=404)
        return web.json_response({"jackpot_id": "mega", "currency": "EUR", "pool_minor": self.pool_minor(),
                                  "seed_minor": SEED_MINOR, "epoch": self.epoch,
                                  "contributions_by_edge": self.by_edge, "as_of_sequence": self.sequence})

    async def bonuses(self, request: web.Request) -> web.Response:
        pid = request.match_info["pid"]
        out = [{"bonus_id": b, "currency": "EUR", "wagered_minor": sum(by.values()), "wagered_by_edge": by,
                "status": "active"} for (p, b), by in self.wagered.items() if p == pid]
        return web.json_response({"player_id": pid, "bonuses": out, "as_of_sequence": self.sequence})

    async def balances(self, request: web.Request) -> web.Response:
        return web.json_response({"player_id": request.match_info["pid"], "balances": []})

    async def rounds(self, request: web.Request) -> web.Response:
        pid = request.match_info["pid"]
        return web.json_response({"rounds": [{"round_id": b["round_id"], "game_id": b["game_id"], "status": "open"}
                                             for b in self.bets.values() if b["player_id"] == pid]})

    async def transaction(self, request: web.Request) -> web.Response:
        bet = self.bets.get((request.query["client_id"], request.match_info["id"]))
        if bet is None:
            return web.json_response({"code": "not_found", "detail": "no such transaction"}, status=404)
        return web.json_response(bet)
