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

import dataclasses
from collections.abc import Callable
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from shared.errors import Unprocessable

from core_ledger import overlay as overlay_module
from core_ledger.domain import Command, Draft, Refusal, RejectCode, decide
from core_ledger.domain import reports as domain_reports
from core_ledger.domain.reports import (
    CASH_TABLE,
    PLAY_TABLE,
    REPORT_SUM_ABS_MAX,
    REPORT_UNIT_ROWS_MAX,
    SUMS_OF,
    report_deltas,
)
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


def test_a_writer_view_that_does_not_hold_the_unit_is_a_bug_not_a_pass() -> None:
    """The writer holds the units a group may add to before judging it: a view without one raises
    (fail-stop), rather than judging against sums it does not know."""
    world = world_after([])
    view = world.restricted(w.bet("t1", "p1", 200))
    view.release_report_units("9999-12-31")
    with pytest.raises(Exception, match=r"report rows of .* were not held"):
        decide(view, w.bet("t1", "p1", 200), w.CTX)


def test_a_unit_takes_no_new_row_past_its_bound_and_its_rows_go_on() -> None:
    """Game ids are the game servers' own: a client opening rows without end is refused a new one
    once its day holds REPORT_UNIT_ROWS_MAX; its existing rows, and other clients, go on."""
    setup = [w.bet("t0", "p1", 10)]  # the row of game g1 through client gs exists
    full = (PLAY_TABLE, w.CTX.now_text[:10], "gs")

    def judged_beside_a_full_unit(command: Command) -> Draft:
        view = world_after(setup).restricted(command)
        view.report_units[full] = REPORT_UNIT_ROWS_MAX  # as if it held that many rows
        outcome = decide(view, command, w.CTX)
        assert isinstance(outcome, Draft)
        return outcome

    refused = judged_beside_a_full_unit(w.bet("t1", "p1", 10, round_id="r2", game_id="g-new"))
    assert refused.transaction.get("code") == RejectCode.REPORT_LIMIT_EXCEEDED and refused.postings == []
    assert "no new game today" in refused.transaction["detail"]
    assert judged_beside_a_full_unit(w.bet("t1", "p1", 10)).postings  # g1's round: its row is there
    other_client = w.bet("t1", "p1", 10, round_id="r3", game_id="g-new", client="gs2")
    assert judged_beside_a_full_unit(other_client).postings


def test_a_full_unit_still_settles_stakes_and_an_unread_one_takes_nothing() -> None:
    """Only a bet brings a game in: a win on a round of a game not played today (its row new) is
    paid beside a full unit. A unit too large to read takes nothing: its sums are unknown."""
    setup = [w.bet("t0", "p1", 10, game_id="g2")]
    win = w.win("t1", "p1", 5)
    yesterday = (w.CTX.now - timedelta(days=1)).isoformat()[:10]
    world = world_after(setup)
    for table in (PLAY_TABLE,):  # as if the round were opened yesterday: today's row of g2 is new
        world.state.tables[table] = {(yesterday, *k[1:]): v for k, v in world.state.tables[table].items()}
    unit = (PLAY_TABLE, w.CTX.now_text[:10], "gs")
    view = world.restricted(win)
    assert view.report_total(PLAY_TABLE, (unit[1], "EUR", "g2", "gs")) is None
    view.report_units[unit] = REPORT_UNIT_ROWS_MAX
    assert committed(view, win).postings
    unread = world_after(setup).restricted(win)
    del unread.report_units[unit]
    unread.hold_unread_report_unit(unit)
    refused = decide(unread, win, w.CTX)
    assert isinstance(refused, Draft) and refused.transaction.get("code") == RejectCode.REPORT_LIMIT_EXCEEDED
    assert "than the ledger reads" in refused.transaction["detail"]


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


async def started(store: Store, clock: FakeClock, registry: CollectorRegistry | None = None) -> LedgerService:
    metrics = LedgerMetrics(registry or CollectorRegistry())
    service = LedgerService(store, WriterLimits(), clock=clock, metrics=metrics)
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
    registry = CollectorRegistry()
    service = await started(store, clock, registry)  # a fresh writer reads the day's rows from storage
    try:
        # One group: the first bet reaches MAX - 50, the second would pass the bound and is
        # refused, the third reaches it exactly; the refusal binds its id like any other.
        results = await service.submit([bet(1, 100), bet(2, 100), bet(3, 50)])
        assert [code_of(r) for r in results] == [201, "report_limit_exceeded", 201]
        assert [code_of(r) for r in await service.submit([bet(2, 100)])] == ["report_limit_exceeded"]
        assert [code_of(r) for r in await service.submit([bet(4, 1)])] == ["report_limit_exceeded"]
        rows = await store.dump(PLAY_TABLE)
        assert rows[SLOTS_EUR]["bets_minor"] == REPORT_SUM_ABS_MAX
        refusals = registry.get_sample_value("ledger_conflicts_total", {"reason": "report_limit_exceeded"})
        assert refusals == 2  # counted once each, the replay not (CroupierLedgerLimitRefusals)
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


async def test_the_overlay_holds_the_units_a_group_names_and_lets_older_days_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = MemoryStore()
    await store.open()
    days, clients = ("2026-11-23", "2026-11-24"), ("gs", "gs2")
    rows = {PLAY_TABLE: [((d, "EUR", g, c), {"bets_minor": 7}) for d in days for g in "ab" for c in clients]}
    await store.commit([], rows, await store.head())
    overlay = Overlay(store)
    await overlay.hold_report_units([bet(1, 1)], "2026-11-23")  # client "gs": its play, and the cash
    await overlay.hold_report_units([bet(2, 1)], "2026-11-24")  # the day before stays held (in flight?)
    held = overlay.rows.report_units
    assert held == {
        (PLAY_TABLE, "2026-11-23", "gs"): 2,
        (CASH_TABLE, "2026-11-23", ""): 0,
        (PLAY_TABLE, "2026-11-24", "gs"): 2,
        (CASH_TABLE, "2026-11-24", ""): 0,
    }
    total = overlay.rows.report_total(PLAY_TABLE, ("2026-11-24", "EUR", "b", "gs"))
    assert total == dict.fromkeys(SUMS_OF[PLAY_TABLE], 0) | {"bets_minor": 7}
    assert ("2026-11-24", "EUR", "b", "gs2") not in overlay.rows.tables[PLAY_TABLE]  # another client's unit
    await overlay.hold_report_units([bet(3, 1)], "2026-11-26")
    assert {unit[1] for unit in held} == {"2026-11-26"}
    assert not [key for key in overlay.rows.tables[PLAY_TABLE] if key[0] != "2026-11-26"]
    monkeypatch.setattr(overlay_module, "REPORT_UNIT_READ_MAX", 1)  # a unit of more rows is not read
    await overlay.hold_report_units([bet(4, 1)], "2026-11-23")
    assert (PLAY_TABLE, "2026-11-23", "gs") not in held
    assert overlay.rows.report_unit_unread((PLAY_TABLE, "2026-11-23", "gs"))


async def test_the_writer_bounds_the_rows_a_client_opens_in_a_day_through_a_restart(
    storage: Callable[[], Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(domain_reports, "REPORT_UNIT_ROWS_MAX", 3)
    clock = FakeClock()
    store = storage()
    await store.open()
    service = await started(store, clock)
    try:
        for command in traffic()[:4]:
            await service.submit([command])

        def on_game(i: int, game: str) -> Command:
            return cmd(
                "bet",
                f"gb{i}",
                id=f"gb{i}",
                player_id="p1",
                currency="EUR",
                game_id=game,
                amount_minor=1,
                round_id=f"rg{i}",
            )

        # Client "gs" opens rows for games a and b (slots has none yet); a third game is refused.
        results = await service.submit([on_game(1, "a"), on_game(2, "b"), on_game(3, "c"), on_game(4, "d")])
        assert [code_of(r) for r in results] == [201, 201, 201, "report_limit_exceeded"]
    finally:
        await service.stop()
    await store.close()

    store = storage()
    await store.open()
    service = await started(store, clock)  # the unit's rows counted again from storage
    try:
        results = await service.submit([on_game(5, "e"), on_game(6, "a")])
        assert [code_of(r) for r in results] == ["report_limit_exceeded", 201]
        other_client = cmd(
            "bet", "gb7", id="gb7", player_id="p1", currency="EUR", game_id="e", amount_minor=1, round_id="rg7"
        )
        other_client = dataclasses.replace(other_client, key=("gs2", "gb7"))
        assert [code_of(r) for r in await service.submit([other_client])] == [201]
    finally:
        await service.stop()
        await store.close()
