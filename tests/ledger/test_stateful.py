"""Hypothesis stateful test: random money traffic (with exact and conflicting retries and rollbacks
of unknown bets) against a simple model. Checked after every step: balances equal the model,
postings sum to zero, no player goes negative, replays are identical, the chain verifies."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from prometheus_client import CollectorRegistry

from shared.errors import CroupierError

from core_ledger.domain import ADMIN_SCOPE, Command
from core_ledger.domain.accounts import is_player_account, player_account
from core_ledger.journal_checks import rebuild_differences, verify_store
from core_ledger.metrics import LedgerMetrics
from core_ledger.reads import LedgerReads
from core_ledger.service import LedgerService
from core_ledger.store import MemoryStore
from core_ledger.writer import WriterLimits
from tests.support.clock import FakeClock

PLAYERS = ("p0", "p1")
ROUNDS = ("r0", "r1", "r2")
VIAS = ("eu", "us")
CLIENTS = ("gs", "gs2")  # game-server clients: ids and rounds are scoped by them
SEED, PPM, REQUIREMENT, BONUS = 100, 10_000, 300, 50
amounts = st.integers(min_value=1, max_value=400)


@dataclass
class Bet:
    client: str
    player: str
    amount: int
    round: str
    via: str
    contribution: int
    epoch: int
    wagered: bool
    state: str = "committed"


@dataclass
class Model:
    balances: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PLAYERS, 0))
    rounds: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # closed, won, stake
    bets: dict[str, Bet] = field(default_factory=dict)
    refused_bets: set[str] = field(default_factory=set)
    markers: set[str] = field(default_factory=set)
    pool: int = SEED
    epoch: int = 1
    by_edge: dict[str, int] = field(default_factory=dict)
    wagered: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PLAYERS, 0))
    claimed: set[str] = field(default_factory=set)


class LedgerMachine(RuleBasedStateMachine):
    limits = WriterLimits(commit_batch_max=8)

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.store = MemoryStore()
        self.clock = FakeClock()
        self.service = LedgerService(
            self.store, self.limits, clock=self.clock, metrics=LedgerMetrics(CollectorRegistry())
        )
        self.reads = LedgerReads(self.store, clock=self.clock)
        self.loop.run_until_complete(self.service.start())
        self.model = Model()
        self.sent: list[tuple[Command, tuple[int, dict[str, Any]]]] = []  # journaled commands
        self.counter = 0
        setup = [
            Command(
                "jackpot_create",
                {
                    "jackpot_id": "j",
                    "currency": "EUR",
                    "seed_minor": SEED,
                    "contribution_ppm": PPM,
                    "game_ids": ["slots"],
                },
                "admin",
                (ADMIN_SCOPE, "jackpot:j"),
            )
        ]
        for p in PLAYERS:
            setup += [
                Command(
                    "player_create", {"player_id": p, "currencies": ["EUR"]}, "admin", (ADMIN_SCOPE, f"player:{p}")
                ),
                Command(
                    "bonus_grant",
                    {
                        "id": f"g-{p}",
                        "player_id": p,
                        "bonus_id": "welcome",
                        "currency": "EUR",
                        "amount_minor": BONUS,
                        "wagering_requirement_minor": REQUIREMENT,
                        "expires_at": "2030-01-01T00:00:00Z",
                    },
                    "admin",
                    ("admin", f"g-{p}"),
                ),
            ]
        assert all(isinstance(r, tuple) and r[0] == 201 for r in self.submit_many(setup))

    def teardown(self) -> None:
        try:
            assert self.loop.run_until_complete(rebuild_differences(self.store)) == []
        finally:
            self.loop.run_until_complete(self.service.stop())
            self.loop.close()

    def submit_many(self, commands: list[Command]) -> list[Any]:
        return self.loop.run_until_complete(self.service.submit(commands))

    def send(self, kind: str, via: str = "eu", client: str = "gs", **request: Any) -> tuple[int, dict[str, Any]]:
        self.counter += 1
        request = {"id": f"{kind}-{self.counter}", **request}
        command = Command(kind, request, "edge-1", (client, request["id"]), via)
        [result] = self.submit_many([command])
        if isinstance(result, CroupierError):
            return 0, {"code": result.code}
        self.sent.append((command, result))
        return result

    def expect(self, result: tuple[int, dict[str, Any]], status: int, code: str | None = None) -> None:
        assert result[0] == status, (result, status, code)
        if code is not None:
            assert result[1]["code"] == code, result

    @rule(player=st.sampled_from(PLAYERS), amount=amounts)
    def deposit(self, player: str, amount: int) -> None:
        self.expect(self.send("deposit", player_id=player, currency="EUR", amount_minor=amount), 201)
        self.model.balances[player] += amount

    @rule(
        player=st.sampled_from(PLAYERS),
        round_id=st.sampled_from(ROUNDS),
        amount=amounts,
        via=st.sampled_from(VIAS),
        late=st.booleans(),
        client=st.sampled_from(CLIENTS),
    )
    def bet(self, player: str, round_id: str, amount: int, via: str, late: bool, client: str) -> None:
        m = self.model
        request = {
            "player_id": player,
            "currency": "EUR",
            "amount_minor": amount,
            "round_id": round_id,
            "game_id": "slots",
        }
        if late and m.markers:
            request["id"] = sorted(m.markers)[0]
            m.markers.discard(request["id"])
            self.expect(self.send("bet", via, **request), 409, "bet_rolled_back")
            m.refused_bets.add(request["id"])
            return
        result = self.send("bet", via, client, **request)
        bet_id = result[1].get("transaction", {}).get("id") or f"bet-{self.counter}"
        round_ = m.rounds.get((client, player, round_id))
        if round_ is not None and round_["closed"]:
            self.expect(result, 409, "round_closed")
        elif m.balances[player] < amount:
            self.expect(result, 422, "insufficient_funds")
        else:
            self.expect(result, 201)
            share = amount * PPM // 1_000_000
            wagered = player not in m.claimed
            m.bets[bet_id] = Bet(client, player, amount, round_id, via, share, m.epoch, wagered)
            m.balances[player] -= amount
            m.pool += share
            m.by_edge[via] = m.by_edge.get(via, 0) + share
            if wagered:
                m.wagered[player] += amount
            played = m.rounds.setdefault((client, player, round_id), {"closed": False, "won": False, "stake": 0})
            played["stake"] += amount
            return
        m.refused_bets.add(bet_id)

    @rule(
        player=st.sampled_from(PLAYERS),
        round_id=st.sampled_from(ROUNDS),
        amount=st.integers(0, 300),
        close=st.booleans(),
        client=st.sampled_from(CLIENTS),
    )
    def win(self, player: str, round_id: str, amount: int, close: bool, client: str) -> None:
        result = self.send(
            "win",
            client=client,
            player_id=player,
            currency="EUR",
            amount_minor=amount,
            round_id=round_id,
            close_round=close,
        )
        round_ = self.model.rounds.get((client, player, round_id))  # another client's round is not this one
        if round_ is None:
            assert result == (0, {"code": "not_found"})
        elif round_["closed"]:
            self.expect(result, 409, "round_closed")
        elif round_["stake"] == 0:  # every bet rolled back: nothing to win
            self.expect(result, 409, "round_refunded")
        else:
            self.expect(result, 201)
            self.model.balances[player] += amount
            round_["won"], round_["closed"] = True, close

    @precondition(lambda self: self.model.bets)
    @rule(pick=st.integers(0, 10**6))
    def rollback_known(self, pick: int) -> None:
        m = self.model
        bet_id = sorted(m.bets)[pick % len(m.bets)]
        bet = m.bets[bet_id]
        result = self.send("rollback", client=bet.client, player_id=bet.player, bet_id=bet_id, round_id=None)
        round_ = m.rounds[(bet.client, bet.player, bet.round)]
        if bet.state == "rolled_back":
            self.expect(result, 201)
            assert result[1]["transaction"]["reversed"] is False
        elif round_["won"] or round_["closed"]:
            self.expect(result, 409, "round_closed")
        elif bet.wagered and bet.player in m.claimed and m.wagered[bet.player] - bet.amount < REQUIREMENT:
            self.expect(result, 409, "wagering_already_claimed")  # the claimed bonus needs this bet
        else:
            self.expect(result, 201)
            bet.state = "rolled_back"
            round_["stake"] -= bet.amount
            m.balances[bet.player] += bet.amount
            if bet.epoch == m.epoch:
                m.pool -= bet.contribution
                m.by_edge[bet.via] -= bet.contribution
            if bet.wagered:
                m.wagered[bet.player] -= bet.amount

    @rule(player=st.sampled_from(PLAYERS))
    def rollback_unknown(self, player: str) -> None:
        ghost = f"ghost-{self.counter}"
        result = self.send("rollback", player_id=player, bet_id=ghost, round_id=None)
        self.expect(result, 201)
        assert result[1]["transaction"]["bet_found"] is False
        self.model.markers.add(ghost)

    @rule(player=st.sampled_from(PLAYERS), round_id=st.sampled_from(ROUNDS), client=st.sampled_from(CLIENTS))
    def payout(self, player: str, round_id: str, client: str) -> None:
        m = self.model
        result = self.send("jackpot_payout", client=client, jackpot_id="j", player_id=player, round_id=round_id)
        round_ = m.rounds.get((client, player, round_id))
        if round_ is None:  # a payout needs a round of the player's
            assert result == (0, {"code": "not_found"})
            return
        if round_["stake"] == 0:
            self.expect(result, 409, "round_refunded")
            return
        self.expect(result, 201)
        assert result[1]["transaction"]["amount_minor"] == m.pool
        m.balances[player] += m.pool
        m.pool, m.epoch, m.by_edge = SEED, m.epoch + 1, {}

    @rule(player=st.sampled_from(PLAYERS))
    def claim(self, player: str) -> None:
        m = self.model
        result = self.send("bonus_claim", player_id=player, bonus_id="welcome")
        if player in m.claimed:
            self.expect(result, 409, "already_claimed")
        elif m.wagered[player] < REQUIREMENT:
            self.expect(result, 422, "wagering_not_met")
        else:
            self.expect(result, 201)
            m.balances[player] += BONUS
            m.claimed.add(player)

    @precondition(lambda self: self.sent)
    @rule(pick=st.integers(0, 10**6), via=st.sampled_from(VIAS))
    def exact_retry(self, pick: int, via: str) -> None:
        command, first = self.sent[pick % len(self.sent)]
        [again] = self.submit_many([Command(command.type, command.request, command.principal, command.key, via)])
        assert again[0] == (200 if first[0] == 201 else first[0])
        assert again[1] == {**first[1], "replayed": True}

    @precondition(lambda self: any("amount_minor" in c.request for c, _ in self.sent))
    @rule(pick=st.integers(0, 10**6))
    def conflicting_retry(self, pick: int) -> None:
        candidates = [c for c, _ in self.sent if "amount_minor" in c.request]
        command = candidates[pick % len(candidates)]
        changed = {**command.request, "amount_minor": command.request["amount_minor"] + 1}
        [result] = self.submit_many([Command(command.type, changed, command.principal, command.key, command.via)])
        assert isinstance(result, CroupierError) and result.code == "idempotency_key_reused"
        assert result.extra["field"] == "amount_minor"

    @invariant()
    def ledger_matches_model(self) -> None:
        accounts = self.loop.run_until_complete(self.store.dump("accounts"))
        assert sum(a["balance_minor"] for a in accounts.values()) == 0  # postings sum to zero
        for (name,), account in accounts.items():
            if is_player_account(name):
                assert account["balance_minor"] >= 0
        for p in PLAYERS:
            assert accounts[(player_account(p, "EUR"),)]["balance_minor"] == self.model.balances[p]
        jackpot = self.loop.run_until_complete(self.reads.jackpot("j"))
        assert (jackpot["pool_minor"], jackpot["epoch"]) == (self.model.pool, self.model.epoch)
        assert accounts[("jackpot:j",)]["balance_minor"] == self.model.pool
        assert {k: v for k, v in jackpot["contributions_by_edge"].items() if v} == {
            k: v for k, v in self.model.by_edge.items() if v
        }
        report = self.loop.run_until_complete(verify_store(self.store))
        assert report["ok"] and report["entries_checked"] == report["head_sequence"]


LedgerMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestLedgerStateful = LedgerMachine.TestCase


class ColdCacheLedgerMachine(LedgerMachine):
    """The same traffic with the writer's overlay dropped before every group: each command loads
    every row it needs from storage (rows named by rows found in an earlier pass included)."""

    limits = WriterLimits(commit_batch_max=8, cache_rows_max=0)


ColdCacheLedgerMachine.TestCase.settings = LedgerMachine.TestCase.settings
TestColdCacheLedgerStateful = ColdCacheLedgerMachine.TestCase
