"""The pure rules of every transaction family as tables: (setup, command, expected postings or code).

Each case starts from `domain_world.base_world()` (p1: 1000 EUR and a GBP account, bonus b1 worth
500 once 300 are wagered; p2: 200 EUR; jackpot j1 on game g1, 1% of EUR bets, seeded 1000), runs
its setup commands, then decides one command. Expected: the postings (account, amount) of the
committed transaction, a `RejectCode` (journaled, no postings) or a `RefusalCode` (not journaled).
"""

from __future__ import annotations

from typing import Any

import pytest

from core_ledger.domain import ADMIN_SCOPE, Command, Draft, Refusal, RefusalCode, RejectCode, decide
from core_ledger.domain.accounts import jackpot_account, player_account, system_account
from core_ledger.domain.journal import postings_balanced
from core_ledger.domain.reports import REPORT_SUM_ABS_MAX as REPORT_MAX
from tests.support import domain_world as w

P1, P2 = player_account("p1", "EUR"), player_account("p2", "EUR")
HOUSE, CASHIER, BONUS = system_account("house", "EUR"), system_account("cashier", "EUR"), system_account("bonus", "EUR")
J1, J2 = jackpot_account("j1"), jackpot_account("j2")

Expected = list[tuple[str, int]] | RejectCode | RefusalCode
Case = tuple[str, list[Command], Command, Expected]


def judge(setup: list[Command], cmd: Command) -> Any:
    world = w.base_world()
    for step in setup:
        world.run(step)
    try:
        outcome = decide(world.state, cmd, w.CTX)
    except Refusal as refusal:
        return refusal.code
    assert isinstance(outcome, Draft)
    tx = outcome.transaction
    if tx["outcome"] == "rejected":
        assert outcome.postings == [] and tx["result"] == {}
        return RejectCode(tx["code"])
    assert tx["outcome"] == "committed" and postings_balanced(outcome.postings)
    return [(p["account"], p["amount_minor"]) for p in outcome.postings]


BETS: list[Case] = [
    (
        "the stake goes to the house, 1% on to the jackpot",
        [],
        w.bet("t1", "p1", 200),
        [(P1, -200), (HOUSE, 200), (HOUSE, -2), (J1, 2)],
    ),
    ("a game without a jackpot: the stake only", [], w.bet("t1", "p1", 50, game_id="g2"), [(P1, -50), (HOUSE, 50)]),
    ("a contribution that rounds to 0 is no posting", [], w.bet("t1", "p1", 99), [(P1, -99), (HOUSE, 99)]),
    ("more than the balance", [], w.bet("t1", "p2", 201), RejectCode.INSUFFICIENT_FUNDS),
    ("a currency the player has no account in", [], w.bet("t1", "p2", 1, currency="GBP"), RejectCode.CURRENCY_MISMATCH),
    ("a frozen player", [w.freeze("p2")], w.bet("t1", "p2", 1), RejectCode.ACCOUNT_FROZEN),
    (
        "a closed round",
        [w.bet("t0", "p1", 10), w.win("t0w", "p1", 0, close=True)],
        w.bet("t1", "p1", 10),
        RejectCode.ROUND_CLOSED,
    ),
    ("a round of another game", [w.bet("t0", "p1", 10)], w.bet("t1", "p1", 10, game_id="g2"), RefusalCode.INVALID),
    (
        "a round in another currency",
        [w.bet("t0", "p1", 10)],
        w.bet("t1", "p1", 10, currency="GBP"),
        RefusalCode.INVALID,
    ),
    (
        "rolled back before it arrived",
        [w.rollback("t0", "p1", "t1")],
        w.bet("t1", "p1", 10),
        RejectCode.BET_ROLLED_BACK,
    ),
    ("an unknown player", [], w.bet("t1", "p9", 10), RefusalCode.NOT_FOUND),
    (
        "an id used for another request",
        [w.bet("t1", "p1", 10)],
        w.bet("t1", "p1", 11),
        RefusalCode.IDEMPOTENCY_KEY_REUSED,
    ),
]

WINS: list[Case] = [
    ("the house pays the player", [w.bet("t0", "p1", 100)], w.win("t1", "p1", 30), [(HOUSE, -30), (P1, 30)]),
    ("a zero win posts nothing", [w.bet("t0", "p1", 100)], w.win("t1", "p1", 0, close=True), []),
    ("a round without a bet of the player", [], w.win("t1", "p1", 30), RefusalCode.NOT_FOUND),
    (
        "another client's round is not this client's",
        [w.bet("t0", "p1", 100, client="other")],
        w.win("t1", "p1", 30),
        RefusalCode.NOT_FOUND,
    ),
    (
        "a closed round",
        [w.bet("t0", "p1", 100), w.win("t0w", "p1", 1, close=True)],
        w.win("t1", "p1", 30),
        RejectCode.ROUND_CLOSED,
    ),
    (
        "a round whose every bet was rolled back",
        [w.bet("t0", "p1", 100), w.rollback("t0r", "p1", "t0")],
        w.win("t1", "p1", 30),
        RejectCode.ROUND_REFUNDED,
    ),
    (
        "another currency than the round's",
        [w.bet("t0", "p1", 100)],
        w.win("t1", "p1", 30, currency="GBP"),
        RefusalCode.INVALID,
    ),
    ("a frozen player", [w.bet("t0", "p1", 100), w.freeze("p1")], w.win("t1", "p1", 30), RejectCode.ACCOUNT_FROZEN),
]

ROLLBACKS: list[Case] = [
    (
        "a bet refused on arrival for its currency is rolled back without moving anything",
        [w.bet("t0", "p2", 100, currency="GBP")],  # p2 has no GBP account
        w.rollback("t1", "p2", "t0"),
        [],
    ),
    (
        "a frozen player's bet rolled back already is rolled back again without moving anything",
        [w.bet("t0", "p1", 200), w.rollback("t0r", "p1", "t0"), w.freeze("p1")],
        w.rollback("t1", "p1", "t0"),
        [],
    ),
    (
        "the stake comes back, the contribution leaves the pool",
        [w.bet("t0", "p1", 200)],
        w.rollback("t1", "p1", "t0"),
        [(HOUSE, -200), (P1, 200), (J1, -2), (HOUSE, 2)],
    ),
    (
        "after a payout the house alone refunds",
        [w.bet("t0", "p1", 200), w.payout("t0p", "p1")],
        w.rollback("t1", "p1", "t0"),
        [(HOUSE, -200), (P1, 200)],
    ),
    ("an unknown bet: nothing to reverse (a marker refuses it later)", [], w.rollback("t1", "p1", "nope"), []),
    (
        "twice: nothing left to reverse",
        [w.bet("t0", "p1", 200), w.rollback("t0r", "p1", "t0")],
        w.rollback("t1", "p1", "t0"),
        [],
    ),
    ("a refused bet: nothing was charged", [w.bet("t0", "p2", 999)], w.rollback("t1", "p2", "t0"), []),
    (
        "a round with a win",
        [w.bet("t0", "p1", 200), w.win("t0w", "p1", 5)],
        w.rollback("t1", "p1", "t0"),
        RejectCode.ROUND_CLOSED,
    ),
    ("another player's bet", [w.bet("t0", "p1", 200)], w.rollback("t1", "p2", "t0"), RefusalCode.INVALID),
    (
        "another round than the bet's",
        [w.bet("t0", "p1", 200)],
        w.rollback("t1", "p1", "t0", round_id="r2"),
        RefusalCode.INVALID,
    ),
    ("an unknown player", [], w.rollback("t1", "p9", "t0"), RefusalCode.NOT_FOUND),
]

BONUS_CASES: list[Case] = [
    (
        "wagering met: the bonus account pays",
        [w.bet("t0", "p1", 300, game_id="g2")],
        w.claim("t1", "p1"),
        [(BONUS, -500), (P1, 500)],
    ),
    ("wagering not met", [w.bet("t0", "p1", 299, game_id="g2")], w.claim("t1", "p1"), RejectCode.WAGERING_NOT_MET),
    (
        "expired",
        [w.grant_bonus("g-b2", "p1", "b2", requirement=0, expires_at=w.EARLIER)],
        w.claim("t1", "p1", "b2"),
        RejectCode.BONUS_EXPIRED,
    ),
    (
        "claimed already",
        [w.bet("t0", "p1", 300, game_id="g2"), w.claim("t0c", "p1")],
        w.claim("t1", "p1"),
        RejectCode.ALREADY_CLAIMED,
    ),
    ("an unknown bonus", [], w.claim("t1", "p1", "b9"), RefusalCode.NOT_FOUND),
    (
        "a rollback cannot take back wagering a claim was paid for",
        [w.bet("t0", "p1", 300, game_id="g2"), w.claim("t0c", "p1")],
        w.rollback("t1", "p1", "t0"),
        RejectCode.WAGERING_ALREADY_CLAIMED,
    ),
    (
        "a round refund cannot take back, bet after bet, wagering a claim was paid for",
        [
            w.bet("t0", "p1", 200, game_id="g2"),
            w.bet("t00", "p1", 200, game_id="g2"),
            w.bet("t000", "p1", 100, game_id="g2", round_id="r2"),
            w.claim("t0c", "p1"),  # wagered 500 of 300: r1's two bets hold 400 of it
        ],
        w.settle("refund", "p1"),
        RejectCode.WAGERING_ALREADY_CLAIMED,
    ),
    (
        "a rollback may take back wagering a claim did not need",
        [
            w.bet("t0", "p1", 300, game_id="g2"),
            w.bet("t00", "p1", 50, game_id="g2", round_id="r2"),
            w.claim("t0c", "p1"),
        ],
        w.rollback("t1", "p1", "t00"),
        [(HOUSE, -50), (P1, 50)],
    ),
]

JACKPOTS: list[Case] = [
    (
        "the pool goes to the player, the house reseeds it",
        [w.bet("t0", "p1", 200)],
        w.payout("t1", "p1"),
        [(J1, -1002), (P1, 1002), (HOUSE, -1000), (J1, 1000)],
    ),
    (
        "a pool seeded with 0 that no bet reached pays out 0 (it has no account yet)",
        [w.create_jackpot("j0", ["g3"], seed=0, ppm=0), w.bet("t0", "p1", 200, game_id="g3")],
        w.payout("t1", "p1", "j0"),
        [],
    ),
    ("a round without a bet of the player", [], w.payout("t1", "p1"), RefusalCode.NOT_FOUND),
    ("an unknown jackpot", [w.bet("t0", "p1", 200)], w.payout("t1", "p1", "j9"), RefusalCode.NOT_FOUND),
    (
        "a refunded round",
        [w.bet("t0", "p1", 200), w.rollback("t0r", "p1", "t0")],
        w.payout("t1", "p1"),
        RejectCode.ROUND_REFUNDED,
    ),
    ("a frozen player", [w.bet("t0", "p1", 200), w.freeze("p1")], w.payout("t1", "p1"), RejectCode.ACCOUNT_FROZEN),
]

CASHIER_CASES: list[Case] = [
    ("a deposit moves money from the cashier", [], w.deposit("t1", "p1", 100), [(CASHIER, -100), (P1, 100)]),
    ("a withdrawal moves it back", [], w.withdrawal("t1", "p1", 100), [(P1, -100), (CASHIER, 100)]),
    ("a withdrawal beyond the balance", [], w.withdrawal("t1", "p2", 201), RejectCode.INSUFFICIENT_FUNDS),
    (
        "a currency the player has no account in",
        [],
        w.deposit("t1", "p2", 1, currency="USD"),
        RejectCode.CURRENCY_MISMATCH,
    ),
    ("a frozen player", [w.freeze("p2")], w.deposit("t1", "p2", 1), RejectCode.ACCOUNT_FROZEN),
    ("an unknown player", [], w.deposit("t1", "p9", 1), RefusalCode.NOT_FOUND),
    ("an id used for another amount", [], w.deposit("d1", "p1", 999), RefusalCode.IDEMPOTENCY_KEY_REUSED),
]

ADMIN_CASES: list[Case] = [
    ("an adjustment up comes from the house", [], w.adjust("t1", "p1", 50), [(HOUSE, -50), (P1, 50)]),
    ("an adjustment down goes to the house", [], w.adjust("t1", "p1", -50), [(HOUSE, 50), (P1, -50)]),
    ("an adjustment below zero", [], w.adjust("t1", "p2", -201), RejectCode.INSUFFICIENT_FUNDS),
    ("a frozen account is adjusted too", [w.freeze("p2")], w.adjust("t1", "p2", 5), [(HOUSE, -5), (P2, 5)]),
    ("an adjustment of a stale version", [], w.adjust("t1", "p2", 5, expected_version=0), RejectCode.VERSION_CONFLICT),
    (
        "an adjustment beyond what a balance may hold",
        [],
        w.adjust("t1", "p1", 2**62),
        RejectCode.BALANCE_LIMIT_EXCEEDED,
    ),
    (
        "a day's adjustments beyond what a report sum may hold",
        [w.adjust("t0", "p1", REPORT_MAX - 10)],
        w.adjust("t1", "p1", 11),
        RejectCode.REPORT_LIMIT_EXCEEDED,
    ),
    (
        "a day's adjustments up to that bound",
        [w.adjust("t0", "p1", REPORT_MAX - 10)],
        w.adjust("t1", "p1", 10),
        [(HOUSE, -10), (P1, 10)],
    ),
    ("a new player", [], w.create_player("p3", "EUR", "USD"), []),
    ("a new jackpot is seeded by the house", [], w.create_jackpot("j2", ["g2"]), [(HOUSE, -1000), (J2, 1000)]),
    ("a freeze", [], w.freeze("p1"), []),
    ("a freeze of an unknown player", [], w.freeze("p9"), RefusalCode.NOT_FOUND),
    ("an unfreeze", [w.freeze("p1")], w.freeze("p1", frozen=False), []),
    ("a bonus offer", [], w.grant_bonus("t1", "p2", "b2"), []),
    ("a bonus id granted twice", [], w.grant_bonus("t1", "p1", "b1"), RefusalCode.INVALID),
    (
        "a bonus in a currency the player has none of",
        [],
        w.grant_bonus("t1", "p2", "b2", currency="GBP"),
        RejectCode.CURRENCY_MISMATCH,
    ),
    ("an unfence", [], w.unfence(), []),
]

FAMILIES = {
    "bets": BETS,
    "wins": WINS,
    "rollbacks": ROLLBACKS,
    "bonus": BONUS_CASES,
    "jackpot": JACKPOTS,
    "cashier": CASHIER_CASES,
    "admin": ADMIN_CASES,
}
ALL = [(family, *case) for family, cases in FAMILIES.items() for case in cases]


@pytest.mark.parametrize(("family", "name", "setup", "cmd", "expected"), ALL, ids=[f"{c[0]}: {c[1]}" for c in ALL])
def test_rule(family: str, name: str, setup: list[Command], cmd: Command, expected: Expected) -> None:
    assert judge(setup, cmd) == expected


def test_every_code_the_rules_give_appears_in_the_tables() -> None:
    expected = {case[3] for cases in FAMILIES.values() for case in cases if not isinstance(case[3], list)}
    assert set(RejectCode) | set(RefusalCode) <= expected


def test_setups_themselves_are_accepted_where_they_should_be() -> None:
    """Guards the tables: a setup that silently failed would make a case test something else."""
    world = w.base_world()
    for step in [w.bet("t0", "p1", 300, game_id="g2"), w.claim("t0c", "p1")]:
        entry = world.run(step)
        assert entry["transaction"]["outcome"] == "committed"


def test_two_rounds_never_share_a_settlement_key() -> None:
    """Ids may hold ":": joined by ":" alone, client "gs:x" with player "p" and client "gs" with
    player "x:p" named one key, and the second round's refund was refused as a reused id for good."""
    first, second = w.settle("refund", "p", "r", client="gs:x"), w.settle("refund", "x:p", "r", client="gs")
    assert first.key != second.key
    # Ids without ":" keep the key they always had: a settlement journaled before is still found.
    assert w.settle("refund", "p1", "r1").key == (ADMIN_SCOPE, "round_refund:gs:p1:r1")
    assert w.settle("close", "p1", "r1", client=None).key == (ADMIN_SCOPE, "round_close:-:p1:r1")
