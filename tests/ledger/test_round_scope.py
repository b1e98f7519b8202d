"""Rounds scoped by client in the writer, over a SQLite journal written before rounds were scoped:
the old entries rebuild to the same rows, and an open round of theirs stays playable by the client
that bet in it (with a cold overlay, so every row is loaded through the planner)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from core_ledger.domain import (
    ADMIN_SCOPE,
    Command,
    Context,
    Replay,
    State,
    decide,
    entry_text,
    evolve,
    seal,
)
from core_ledger.domain.journal import GENESIS_HASH
from core_ledger.journal_checks import rebuild_differences
from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.store import Head, JournalRow, SqliteStore
from core_ledger.writer import WriterLimits
from tests.support.clock import FakeClock

BET = {"player_id": "p", "currency": "EUR", "amount_minor": 100, "game_id": "g"}
WIN = {"player_id": "p", "currency": "EUR", "amount_minor": 30, "close_round": False}


def unscoped_journal() -> tuple[list[JournalRow], dict, Head]:
    """A journal as the code before round scoping wrote it (no round scope in any result)."""
    state, ctx, prev, rows = State(complete=True), Context(FakeClock()()), GENESIS_HASH, []
    commands = [
        Command("player_create", {"player_id": "p", "currencies": ["EUR"]}, "admin", (ADMIN_SCOPE, "player:p")),
        Command("deposit", {"id": "d", "player_id": "p", "currency": "EUR", "amount_minor": 1000}, "c", ("c", "d")),
        Command("bet", {**BET, "id": "a7", "round_id": "7"}, "e", ("gs-a", "a7"), "e"),
    ]
    for sequence, cmd in enumerate(commands, 1):
        draft = decide(state, cmd, ctx)
        assert not isinstance(draft, Replay)
        draft.transaction["result"].pop("round_client_id", None)
        entry = seal(draft.transaction, draft.postings, sequence=sequence, epoch=1, prev_hash=prev)
        evolve(state, entry)
        rows.append(JournalRow(sequence, entry["transaction"]["id"], entry_text(entry)))
        prev = entry["hash"]
    return rows, state.take_dirty(), Head(len(rows), prev, 1)


async def test_an_unscoped_open_round_stays_its_clients_and_the_journal_rebuilds(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "ledger.db")
    await store.open()
    await store.commit(*unscoped_journal())
    await store.close()
    service = LedgerService(
        store, WriterLimits(cache_rows_max=0), clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry())
    )
    await service.start()
    try:
        [stranger] = await service.submit(
            [Command("win", {**WIN, "id": "bw", "round_id": "7"}, "e", ("gs-b", "bw"), "e")]
        )
        assert getattr(stranger, "code", None) == "not_found"
        [own] = await service.submit([Command("win", {**WIN, "id": "aw", "round_id": "7"}, "e", ("gs-a", "aw"), "e")])
        assert isinstance(own, tuple) and own[0] == 201 and own[1]["balance"]["balance_minor"] == 930
        [more] = await service.submit(
            [Command("bet", {**BET, "id": "a7b", "round_id": "7"}, "e", ("gs-a", "a7b"), "e")]
        )
        assert isinstance(more, tuple) and more[0] == 201
    finally:
        await service.stop()
    await store.open()
    try:
        unscoped, _ = await store.get("rounds", ("p", "7"))
        assert unscoped is not None and (unscoped["bets_minor"], unscoped["wins_minor"]) == (200, 30)
        assert await store.dump("client_rounds") == {}
        assert await rebuild_differences(store) == []
    finally:
        await store.close()
