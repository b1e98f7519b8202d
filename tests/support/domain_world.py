"""A small ledger world for the pure domain tests: commands folded into a complete `State`, and a
writer-like view of it restricted to the rows a command's plan names."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from core_ledger.domain import (
    ADMIN_SCOPE,
    GENESIS_HASH,
    PASSES_MAX,
    Command,
    Context,
    Draft,
    State,
    decide,
    evolve,
    rows_needed,
    seal,
)
from core_ledger.domain.records import Entry
from core_ledger.domain.reports import day_of, report_units
from core_ledger.domain.rounds import settlement
from core_ledger.domain.state import ENTRIES, report_unit

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
CTX = Context(NOW)
LATER = (NOW + timedelta(days=7)).isoformat().replace("+00:00", "Z")
EARLIER = (NOW - timedelta(days=1)).isoformat().replace("+00:00", "Z")


class World:
    """A complete state (as a rebuild holds it) plus the journal entries, for replays."""

    def __init__(self) -> None:
        self.state = State(complete=True)
        self.sequence = 0
        self.head = GENESIS_HASH

    def run(self, cmd: Command) -> Any:
        """Decide and, when journaled, fold; returns the Draft's entry, a Replay, or raises."""
        outcome = decide(self.state, cmd, CTX)
        if not isinstance(outcome, Draft):
            return outcome
        return self.fold(outcome)

    def fold(self, draft: Draft) -> Entry:
        self.sequence += 1
        entry = seal(draft.transaction, draft.postings, sequence=self.sequence, epoch=1, prev_hash=self.head)
        self.head = entry["hash"]
        evolve(self.state, entry)
        # a complete state keeps no entries (the journal does): the writer loads them, so do we
        self.state.fill(ENTRIES, (entry["sequence"],), copy.deepcopy(dict(entry)))
        return entry

    def restricted(self, cmd: Command) -> State:
        """What the writer's overlay holds for `cmd`: exactly the planned rows, loaded pass by pass,
        and the report units it may add to on the day it is judged."""
        view = State(complete=False)
        for unit in report_units(cmd, day_of(CTX.now_text)):
            stored = {k: v for k, v in self.state.tables[unit[0]].items() if report_unit(unit[0], k) == unit}
            view.hold_report_unit(unit, {k: v for k, v in stored.items() if v is not None})
        for _ in range(PASSES_MAX):
            unknown = [(t, k) for t, k in rows_needed(view, cmd) if not view.known(t, k)]
            if not unknown:
                return view
            for table, key in unknown:
                row = self.state.tables[table].get(key)
                view.fill(table, key, copy.deepcopy(row))
        assert not [(t, k) for t, k in rows_needed(view, cmd) if not view.known(t, k)], "plan deeper than PASSES_MAX"
        return view


def admin(tx_type: str, request: dict[str, Any], key: tuple[str, str] | None = None) -> Command:
    return Command(tx_type, request, "admin", key)


def create_player(player_id: str, *currencies: str) -> Command:
    return admin(
        "player_create", {"player_id": player_id, "currencies": list(currencies)}, (ADMIN_SCOPE, f"player:{player_id}")
    )


def create_jackpot(
    jackpot_id: str, game_ids: list[str], seed: int = 1000, ppm: int = 10_000, currency: str = "EUR"
) -> Command:
    return admin(
        "jackpot_create",
        {
            "jackpot_id": jackpot_id,
            "currency": currency,
            "seed_minor": seed,
            "contribution_ppm": ppm,
            "game_ids": game_ids,
        },
        (ADMIN_SCOPE, f"jackpot:{jackpot_id}"),
    )


def grant_bonus(
    id_: str,
    player_id: str,
    bonus_id: str,
    amount: int = 500,
    requirement: int = 300,
    expires_at: str = LATER,
    currency: str = "EUR",
) -> Command:
    return admin(
        "bonus_grant",
        {
            "id": id_,
            "player_id": player_id,
            "bonus_id": bonus_id,
            "currency": currency,
            "amount_minor": amount,
            "wagering_requirement_minor": requirement,
            "expires_at": expires_at,
        },
        ("admin", id_),
    )


def adjust(
    id_: str, player_id: str, amount: int, currency: str = "EUR", expected_version: int | None = None
) -> Command:
    return admin(
        "adjustment",
        {
            "id": id_,
            "player_id": player_id,
            "currency": currency,
            "amount_minor": amount,
            "reason": "test",
            "expected_version": expected_version,
        },
        ("admin", id_),
    )


def freeze(player_id: str, frozen: bool = True) -> Command:
    return admin("freeze" if frozen else "unfreeze", {"reason": "test", "player_id": player_id})


def money(tx_type: str, client: str, id_: str, via: str | None = "eu", **request: Any) -> Command:
    return Command(tx_type, {"id": id_, **request}, via or client, (client, id_), via)


def deposit(id_: str, player_id: str, amount: int, currency: str = "EUR") -> Command:
    return money("deposit", "cashier", id_, None, player_id=player_id, currency=currency, amount_minor=amount)


def withdrawal(id_: str, player_id: str, amount: int, currency: str = "EUR") -> Command:
    return money("withdrawal", "cashier", id_, None, player_id=player_id, currency=currency, amount_minor=amount)


def bet(
    id_: str,
    player_id: str,
    amount: int,
    round_id: str = "r1",
    game_id: str = "g1",
    currency: str = "EUR",
    client: str = "gs",
) -> Command:
    return money(
        "bet",
        client,
        id_,
        player_id=player_id,
        currency=currency,
        amount_minor=amount,
        round_id=round_id,
        game_id=game_id,
    )


def win(
    id_: str,
    player_id: str,
    amount: int,
    round_id: str = "r1",
    close: bool = False,
    currency: str = "EUR",
    client: str = "gs",
) -> Command:
    return money(
        "win",
        client,
        id_,
        player_id=player_id,
        currency=currency,
        amount_minor=amount,
        round_id=round_id,
        close_round=close,
    )


def rollback(id_: str, player_id: str, bet_id: str, round_id: str | None = None, client: str = "gs") -> Command:
    return money("rollback", client, id_, bet_id=bet_id, player_id=player_id, round_id=round_id)


def payout(id_: str, player_id: str, jackpot_id: str = "j1", round_id: str = "r1", client: str = "gs") -> Command:
    return money("jackpot_payout", client, id_, jackpot_id=jackpot_id, player_id=player_id, round_id=round_id)


def claim(id_: str, player_id: str, bonus_id: str = "b1", client: str = "gs") -> Command:
    return money("bonus_claim", client, id_, player_id=player_id, bonus_id=bonus_id)


def settle(policy: str, player_id: str, round_id: str = "r1", client: str | None = "gs") -> Command:
    return settlement(policy, player_id, round_id, client, "test", "admin")


def unfence() -> Command:
    return admin("unfence", {"reason": "test", "force": False, "fenced_by_epoch": 2, "peers": []})


def promote() -> Command:
    record = {"force": False, "head_sequence": 7, "primary_acknowledged": 7, "peers": [], "epoch": 2}
    return admin("promote", record)


def base_world() -> World:
    """p1 (EUR, GBP) with 1000 EUR and bonus b1 (needs 300 wagered); p2 (EUR) with 200; jackpot j1
    on game g1 (1% of EUR bets, seeded 1000)."""
    world = World()
    for cmd in (
        create_player("p1", "EUR", "GBP"),
        create_player("p2", "EUR"),
        create_jackpot("j1", ["g1"]),
        deposit("d1", "p1", 1000),
        deposit("d2", "p2", 200),
        grant_bonus("g-b1", "p1", "b1"),
    ):
        world.run(cmd)
    return world
