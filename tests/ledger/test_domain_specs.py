"""The transaction specs: one per type of the contract, and each one's plan covers what its rules
and its fold read (decided on exactly the planned rows, a command comes to the same as on the
whole state, and folds into the same rows)."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.models import MONEY_OPS

from core_ledger.domain import (
    SPECS,
    TRANSACTION_TYPES,
    Command,
    Draft,
    InvariantBroken,
    Refusal,
    Replay,
    decide,
    evolve,
    seal,
)
from core_ledger.domain.specs import SPEC_LIST, spec_of
from tests.support import domain_world as w

# The admin writes of the contract (docs/API.md, core_ledger/admin_http.py and fencing.py).
ADMIN_TYPES = {
    "player_create",
    "freeze",
    "unfreeze",
    "adjustment",
    "jackpot_create",
    "bonus_grant",
    "unfence",
    "promote",
    "round_refund",
    "round_close",
}


def money_types() -> set[str]:
    """The transaction type of every money operation of the contract (shared.models)."""
    return {op.tx_type for op in MONEY_OPS.values()}


def test_every_type_of_the_contract_has_exactly_one_spec_and_nothing_else_has_one() -> None:
    assert money_types() | ADMIN_TYPES == TRANSACTION_TYPES
    assert len(SPEC_LIST) == len(SPECS)
    assert {s.type for s in SPEC_LIST if s.family == "money"} == money_types()
    assert {s.type for s in SPEC_LIST if s.family == "admin"} == ADMIN_TYPES


def test_a_type_without_a_spec_is_a_bug_not_a_refusal() -> None:
    try:
        spec_of("teleport")
    except InvariantBroken as e:
        assert "teleport" in str(e)
    else:
        raise AssertionError("no spec, no error")


def judged(state: Any, cmd: Command) -> tuple[Any, ...]:
    """What deciding comes to, comparably: a draft, a replay, or the error raised."""
    try:
        outcome = decide(state, cmd, w.CTX)
    except Exception as e:  # noqa: BLE001 (any error must be the same on both sides)
        return ("raised", type(e).__name__, str(e), getattr(e, "code", None), getattr(e, "field", None))
    if isinstance(outcome, Replay):
        return ("replay", outcome.answer)
    return ("draft", outcome.transaction, outcome.postings)


def check_plan_covers(world: w.World, cmd: Command) -> None:
    """decide on the planned rows == decide on everything; the fold writes the same rows."""
    view = world.restricted(cmd)
    on_plan, on_all = judged(view, cmd), judged(world.state, cmd)
    assert on_plan == on_all, f"{cmd.type}: planned rows {on_plan} != whole state {on_all}"
    if on_all[0] != "draft":
        return
    draft = Draft(copy.deepcopy(on_all[1]), copy.deepcopy(on_all[2]))
    entry = seal(draft.transaction, draft.postings, sequence=world.sequence + 1, epoch=1, prev_hash=world.head)
    whole = copy.deepcopy(world.state)
    whole.take_dirty()
    assert evolve(view, copy.deepcopy(entry)) == evolve(whole, copy.deepcopy(entry))
    assert view.take_dirty() == whole.take_dirty(), f"{cmd.type}: the fold wrote other rows on the plan"


# --- a table of commands per type, on one world ---------------------------------------------------

SCENARIO: list[Command] = [
    w.bet("t1", "p1", 100),
    w.bet("t2", "p1", 50, round_id="r2"),
    w.bet("t1", "p1", 100),  # a replay
    w.bet("t3", "p2", 1000),
    w.bet("t4", "p1", 10, currency="GBP"),
    w.bet("t5", "p1", 10, game_id="g2"),
    w.win("t6", "p1", 30),
    w.win("t7", "p1", 5, round_id="nope"),
    w.win("t8", "p1", 5, round_id="r2", close=True),
    w.bet("t9", "p1", 10, round_id="r2"),
    w.rollback("t10", "p1", "t2"),
    w.rollback("t11", "p1", "t1"),
    w.rollback("t12", "p2", "unseen"),
    w.bet("unseen", "p2", 10),
    w.rollback("t13", "p2", "t3"),
    w.bet("t14", "p1", 400, round_id="r3"),
    w.payout("t15", "p1", round_id="r3"),
    w.payout("t16", "p1", jackpot_id="j9", round_id="r3"),
    w.rollback("t17", "p1", "t14"),
    w.claim("t18", "p1"),
    w.claim("t19", "p1"),
    w.claim("t20", "p1", "b9"),
    w.deposit("t21", "p1", 5),
    w.withdrawal("t22", "p2", 10_000),
    w.withdrawal("t23", "p1", 5, currency="USD"),
    w.freeze("p2"),
    w.bet("t24", "p2", 1),
    w.adjust("t25", "p2", -5),
    w.freeze("p2", frozen=False),
    w.adjust("t26", "p1", 7, expected_version=0),
    w.create_player("p3", "EUR"),
    w.create_jackpot("j2", ["g1", "g3"], currency="GBP"),
    w.grant_bonus("t27", "p2", "b2"),
    w.grant_bonus("t28", "p2", "b2"),
    w.unfence(),
    w.promote(),
    w.bet("t29", "p1", 20, round_id="r4", client="other"),
    w.win("t30", "p1", 20, round_id="r4"),
    w.bet("t31", "p1", 30, round_id="r5"),
    w.bet("t32", "p1", 20, round_id="r5"),
    w.rollback("t33", "p1", "t32"),
    w.settle("refund", "p1", "r5"),
    w.settle("refund", "p1", "r5"),
    w.bet("t34", "p1", 5, round_id="r5"),
    w.settle("close", "p1", "r5"),
    w.settle("refund", "p1", "r4", client="other"),
    w.settle("close", "p1", "r4", client="other"),
    w.settle("close", "p1", "nope"),
    w.bet("t35", "p2", 10, round_id="r6"),
    w.settle("close", "p2", "r6"),
    w.win("t36", "p2", 5, round_id="r6"),
]


def test_every_spec_is_covered_by_the_scenario() -> None:
    assert {cmd.type for cmd in SCENARIO} == TRANSACTION_TYPES


def test_on_the_planned_rows_every_command_decides_and_folds_as_on_the_whole_state() -> None:
    world = w.base_world()
    for cmd in SCENARIO:
        check_plan_covers(world, cmd)
        with contextlib.suppress(Refusal, InvariantBroken):  # nothing to fold (compared above)
            world.run(cmd)


# --- and random ones ------------------------------------------------------------------------------

ids = st.sampled_from([f"x{i}" for i in range(6)])
players = st.sampled_from(["p1", "p2", "p9"])
currencies = st.sampled_from(["EUR", "GBP", "USD"])
rounds = st.sampled_from(["r1", "r2", "r3"])
clients = st.sampled_from(["gs", "gs2"])
amounts = st.integers(min_value=1, max_value=600)

commands = st.one_of(
    st.builds(w.deposit, ids, players, amounts, currencies),
    st.builds(w.withdrawal, ids, players, amounts, currencies),
    st.builds(w.bet, ids, players, amounts, rounds, st.sampled_from(["g1", "g2"]), currencies, clients),
    st.builds(w.win, ids, players, st.integers(0, 300), rounds, st.booleans(), currencies, clients),
    st.builds(w.rollback, ids, players, ids, st.one_of(st.none(), rounds), clients),
    st.builds(w.payout, ids, players, st.sampled_from(["j1", "j9"]), rounds, clients),
    st.builds(w.claim, ids, players, st.sampled_from(["b1", "b9"]), clients),
    st.builds(w.freeze, players, st.booleans()),
    st.builds(w.adjust, ids, players, st.integers(-300, 300), currencies, st.one_of(st.none(), st.integers(0, 4))),
    st.builds(w.create_player, st.sampled_from(["p3", "p4"]), currencies),
    st.builds(
        w.create_jackpot,
        st.sampled_from(["j2", "j3"]),
        st.lists(st.sampled_from(["g1", "g2"]), min_size=1, max_size=2, unique=True),
    ),
    st.builds(
        w.grant_bonus,
        ids,
        players,
        st.sampled_from(["b2", "b3"]),
        amounts,
        amounts,
        st.sampled_from([w.LATER, w.EARLIER]),
    ),
    st.just(w.unfence()),
    st.just(w.promote()),
    st.builds(w.settle, st.sampled_from(["refund", "close"]), players, rounds, clients),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(commands, min_size=1, max_size=25))
def test_random_histories_decide_on_the_planned_rows_as_on_the_whole_state(history: list[Command]) -> None:
    world = w.base_world()
    for cmd in history:
        check_plan_covers(world, cmd)
        with contextlib.suppress(Refusal, InvariantBroken):  # nothing to fold (compared above)
            world.run(cmd)
