"""Report sums are bounded as balances are: a transaction that would take a sum of its day's
finance report beyond ±REPORT_SUM_ABS_MAX is refused (journaled, sticky), and nothing else is.

Each amount is bounded (10^15), but a day's sums are not: bets won back on one game by one client
pass 2^63 in under ten thousand actions. Before the bound, SQLite turned such a sum into a float
and PostgreSQL failed every commit holding the row (a retryable outage for every bet sharing its
group, until midnight). The domain tests find each transaction type's report rows through the
real fold and push each sum to the bound; the writer tests show the writer holds the day's stored
rows (after a restart too), adds what each group judged, and starts afresh on the next day.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from shared.errors import Unprocessable

from core_ledger import overlay as overlay_module
from core_ledger.domain import Command, Draft, Refusal, RejectCode, decide
from core_ledger.domain.reports import PLAY_TABLE, REPORT_SUM_ABS_MAX, SUMS_OF, report_deltas
from core_ledger.domain.specs import spec_of
from core_ledger.domain.state import State
from core_ledger.metrics import LedgerMetrics
from core_ledger.overlay import Overlay
from core_ledger.reports import LedgerReports
from core_ledger.service import LedgerService
from core_ledger.store import MemoryStore, Store
from core_ledger.writer import Result, WriterLimits
from tests.support import domain_world as w
from tests.support.clock import FakeClock
from tests.support.journal_commands import cmd, traffic

# (name, setup, the command whose report sums are pushed to the bound)
EVERY_TYPE: list[tuple[str, list[Command], Command]] = [
    ("bet", [], w.bet("t1", "p1", 200)),
    ("win", [w.bet("t0", "p1", 10)], w.win("t1", "p1", 5)),
    ("rollback", [w.bet("t0", "p1", 200)], w.rollback("t1", "p1", "t0")),
    ("jackpot payout", [w.bet("t0", "p1", 10)], w.payout("t1", "p1")),
    ("round refund (binds nothing)", [w.bet("t0", "p1", 200)], w.settle("refund", "p1")),
    ("bonus claim", [w.bet("t0", "p1", 300)], w.claim("t1", "p1")),
    ("deposit", [], w.deposit("t1", "p1", 100)),
    ("withdrawal", [], w.withdrawal("t1", "p1", 100)),
    ("adjustment down", [], w.adjust("t1", "p1", -50)),
    ("jackpot creation", [], w.create_jackpot("j2", ["g2"])),
]


def world_after(setup: list[Command]) -> w.World:
    world = w.base_world()
    for step in setup:
        world.run(step)
    return world


def committed(state: State, command: Command) -> Draft:
    draft = decide(state, command, w.CTX)
    assert isinstance(draft, Draft) and draft.transaction["outcome"] == "committed", draft
    return draft


def with_sum_at(setup: list[Command], table: str, key: tuple[str, ...], name: str, total: int) -> State:
    """The world after `setup`, with one report sum set to `total` (as if the day held more)."""
    state = world_after(setup).state
    held = state.report_total(table, key)
    state.add(table, key, {name: total - (held.get(name, 0) if held else 0)}, SUMS_OF[table])
    return state


@pytest.mark.parametrize(("setup", "command"), [c[1:] for c in EVERY_TYPE], ids=[c[0] for c in EVERY_TYPE])
def test_each_report_sum_a_transaction_adds_is_bounded_to_the_unit(setup: list[Command], command: Command) -> None:
    draft = committed(world_after(setup).state, command)
    deltas = report_deltas(world_after(setup).state, draft.transaction, draft.postings)
    sums = [(table, key, name, value) for table, key, added in deltas for name, value in added.items() if value]
    assert sums, "a money transaction adds to a report"
    for table, key, name, value in sums:
        sign = 1 if value > 0 else -1
        at_bound = with_sum_at(setup, table, key, name, sign * REPORT_SUM_ABS_MAX - value)
        assert committed(at_bound, command).postings == draft.postings  # reaching the bound is allowed
        beyond = with_sum_at(setup, table, key, name, sign * REPORT_SUM_ABS_MAX - value + sign)
        if not spec_of(command.type).sticky:  # a settlement: refused, the id stays free (see `rounds`)
            with pytest.raises(Refusal) as refusal:
                decide(beyond, command, w.CTX)
            assert refusal.value.code == RejectCode.REPORT_LIMIT_EXCEEDED and name in refusal.value.detail
            continue
        refused = decide(beyond, command, w.CTX)
        assert isinstance(refused, Draft) and refused.postings == [], (table, key, name)
        tx = refused.transaction
        assert (tx["outcome"], tx["code"], tx["result"]) == ("rejected", RejectCode.REPORT_LIMIT_EXCEEDED, {})
        assert name in tx["detail"] and str(REPORT_SUM_ABS_MAX) in tx["detail"]


def test_a_row_of_another_day_another_game_or_another_client_is_not_the_one_bounded() -> None:
    day = w.CTX.now_text[:10]
    others = [
        ("2026-01-01", "EUR", "g1", "gs"),  # another day
        (day, "EUR", "g2", "gs"),  # another game
        (day, "EUR", "g1", "gs-other"),  # another client
        (day, "GBP", "g1", "gs"),  # another currency
    ]
    for key in others:
        state = world_after([]).state
        state.add(PLAY_TABLE, key, {"bets_minor": REPORT_SUM_ABS_MAX}, SUMS_OF[PLAY_TABLE])
        committed(state, w.bet("t1", "p1", 200))


def test_a_writer_view_that_does_not_hold_the_day_is_a_bug_not_a_pass() -> None:
    """The writer holds the group's day before judging it: a view without it raises (fail-stop),
    rather than judging against sums it does not know."""
    world = world_after([])
    view = world.restricted(w.bet("t1", "p1", 200))
    view.release_report_days(set())
    with pytest.raises(Exception, match="report rows of day"):
        decide(view, w.bet("t1", "p1", 200), w.CTX)


# --- the writer, on every backend ---------------------------------------------------------------

DAY = FakeClock().now.date().isoformat()
SLOTS_EUR = (DAY, "EUR", "slots", "gs")  # the report row of `traffic()`'s bets (scope "gs")


def bet(i: int, amount: int, round_id: str = "rl") -> Command:
    return cmd(
        "bet",
        f"lb{i}",
        id=f"lb{i}",
        player_id="p1",
        currency="EUR",
        game_id="slots",
        amount_minor=amount,
        round_id=round_id,
    )


def code_of(result: Result) -> int | str:
    assert isinstance(result, tuple), result
    status, body = result
    return status if status < 400 else str(body["code"])


async def started(store: Store, clock: FakeClock) -> LedgerService:
    service = LedgerService(store, WriterLimits(), clock=clock, metrics=LedgerMetrics(CollectorRegistry()))
    await service.start()
    return service


async def test_the_writer_bounds_a_day_s_sums_from_storage_through_a_restart_and_starts_afresh_the_next_day(
    storage: Callable[[], Store],
) -> None:
    clock = FakeClock()
    store = storage()
    await store.open()
    service = await started(store, clock)
    try:
        for command in traffic()[:4]:  # the player, a jackpot on slots (5%), a deposit of 5000
            await service.submit([command])
        # As if the day had already seen that much play on slots through client "gs".
        await store.commit(
            [], {PLAY_TABLE: [(SLOTS_EUR, {"bets_minor": REPORT_SUM_ABS_MAX - 150})]}, await store.head()
        )
    finally:
        await service.stop()
    await store.close()

    store = storage()
    await store.open()
    service = await started(store, clock)  # a fresh writer reads the day's rows from storage
    try:
        # One group: the first bet reaches MAX - 50, the second would pass the bound and is
        # refused, the third reaches it exactly; the refusal binds its id like any other.
        results = await service.submit([bet(1, 100), bet(2, 100), bet(3, 50)])
        assert [code_of(r) for r in results] == [201, "report_limit_exceeded", 201]
        assert [code_of(r) for r in await service.submit([bet(2, 100)])] == ["report_limit_exceeded"]
        assert [code_of(r) for r in await service.submit([bet(4, 1)])] == ["report_limit_exceeded"]
        rows = await store.dump(PLAY_TABLE)
        assert rows[SLOTS_EUR]["bets_minor"] == REPORT_SUM_ABS_MAX
        clock.advance(timedelta(days=1).total_seconds())  # the next day has a row of its own
        assert [code_of(r) for r in await service.submit([bet(5, 100, round_id="rl2")])] == [201]
        next_day = ((clock.now.date()).isoformat(), "EUR", "slots", "gs")
        assert (await store.dump(PLAY_TABLE))[next_day]["bets_minor"] == 100
    finally:
        await service.stop()
        await store.close()


# --- reading sums of many rows at the bound -------------------------------------------------------


async def test_sums_of_rows_at_the_bound_are_exact_on_every_store_and_a_figure_past_64_bits_is_refused(
    store: Store,
) -> None:
    """Five days at the bound sum to 5 * 2^61 (past 2^63: SQLite's sum() would fail) and a
    negative sum to as far below: the stores add them exactly; an answer holding such a figure is
    refused with `report_too_large` (narrow it), a day's answer is not."""
    days = [f"2026-11-{d:02}" for d in range(20, 25)]
    at_bound = {"bets_minor": REPORT_SUM_ABS_MAX, "bet_count": 1, "jackpot_contributions_minor": -REPORT_SUM_ABS_MAX}
    rows = {PLAY_TABLE: [((day, "EUR", "slots", "gs"), at_bound) for day in days]}
    await store.commit([], rows, await store.head())
    members = ("bets_minor", "bet_count", "jackpot_contributions_minor")
    found, _ = await store.report_sums(
        PLAY_TABLE,
        day_from=days[0],
        day_to=days[-1],
        equals={},
        group_by=("currency",),
        members=members,
        limit=10,
    )
    assert found == [(("EUR",), {"bets_minor": 5 * 2**61, "bet_count": 5, "jackpot_contributions_minor": -5 * 2**61})]

    reports = LedgerReports(store)
    with pytest.raises(Unprocessable, match="bets_minor of a row would pass") as refused:
        await reports.ggr(day_from=days[0], day_to=days[-1], equals={}, group_by=("currency",))
    assert refused.value.code == "report_too_large"
    by_day = await reports.ggr(day_from=days[0], day_to=days[-1], equals={}, group_by=("day", "currency"))
    assert [row["bets_minor"] for row in by_day.rows] == [REPORT_SUM_ABS_MAX] * 5
    assert {row["ggr_minor"] for row in by_day.rows} == {2 * REPORT_SUM_ABS_MAX}  # less negative contributions


async def test_the_overlay_holds_the_days_it_judges_and_lets_older_ones_go(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()
    await store.open()
    rows = {
        PLAY_TABLE: [
            ((day, "EUR", game, "gs"), {"bets_minor": 7}) for day in ("2026-11-23", "2026-11-24") for game in "ab"
        ]
    }
    await store.commit([], rows, await store.head())
    overlay = Overlay(store)
    await overlay.hold_report_day("2026-11-23")
    await overlay.hold_report_day("2026-11-24")  # the day before stays held (a group of it may be in flight)
    assert overlay.rows.report_days == {"2026-11-23", "2026-11-24"}
    assert overlay.rows.report_total(PLAY_TABLE, ("2026-11-24", "EUR", "b", "gs")) == dict.fromkeys(
        SUMS_OF[PLAY_TABLE], 0
    ) | {"bets_minor": 7}
    await overlay.hold_report_day("2026-11-26")
    assert overlay.rows.report_days == {"2026-11-26"}
    assert not [key for key in overlay.rows.tables[PLAY_TABLE] if key[0] != "2026-11-26"]
    monkeypatch.setattr(overlay_module, "REPORT_DAY_ROWS_MAX", 1)  # a day of more rows is not held
    with pytest.raises(overlay_module.ReportDayTooLarge, match="more than 1 rows of day 2026-11-23"):
        await overlay.hold_report_day("2026-11-23")
    assert overlay.rows.report_days == {"2026-11-26"}
