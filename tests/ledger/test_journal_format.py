"""The journal entry format: new entries say `format: 2`; entries without it (format 1, written
before the member existed) still verify, fold to the same state and replicate to a standby."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from core_ledger.app import create_app
from core_ledger.app_keys import SERVICE
from core_ledger.domain import ENTRY_FORMAT, ChainCheck, entry_text
from core_ledger.domain.journal import GENESIS_HASH, chain_hash
from core_ledger.domain.state import TABLES
from core_ledger.journal_checks import rebuild_state, verify_store
from core_ledger.metrics import LedgerMetrics
from core_ledger.replica_apply import ReplicationError
from core_ledger.service import LedgerService
from core_ledger.store import Head, JournalRow, MemoryStore, SqliteStore
from core_ledger.writer import WriterLimits
from tests.support.clock import FakeClock
from tests.support.ledger import Api, bet, ledger_config


def rechained(rows: list[tuple[int, str]], change: Any, prev_hash: str = GENESIS_HASH) -> list[tuple[int, str]]:
    """The same entries after `change(body)`, hashed again onto a chain starting at `prev_hash`."""
    out = []
    for sequence, text in rows:
        body = orjson.loads(text)
        del body["hash"]
        change(body)
        body["prev_hash"] = prev_hash
        body["hash"] = prev_hash = chain_hash(prev_hash, body)
        out.append((sequence, entry_text(body)))
    return out


def as_format_1(body: dict[str, Any]) -> None:
    del body["format"]  # what `seal` wrote before entries carried a format


async def play(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> tuple[list[tuple[int, str]], dict[str, Any]]:
    """A primary's journal after deposits, a jackpot, bets in rounds and a rollback; and its tables."""
    app = create_app(ledger_config(tmp_path / "primary"), clock=clock)
    api = Api(await aiohttp_client(app))
    await api.player(deposit=1000)
    await api.post(
        "admin_write",
        "/admin/v1/jackpots",
        {"jackpot_id": "j", "currency": "EUR", "seed_minor": 10, "contribution_ppm": 20_000, "game_ids": ["slots"]},
    )
    for i in range(8):
        await api.post("edge", "/v1/bets", bet(f"b{i}", 10 + i, round_id=f"r{i // 4}", via="eu"))
    await api.post("edge", "/v1/rollbacks", {"id": "rb", "bet_id": "b7", "player_id": "p1"})
    store = app[SERVICE].store
    rows = await store.journal(0, 1000)
    return rows, {t: await store.dump(t) for t in TABLES}


async def test_new_entries_carry_the_format_and_old_ones_verify_fold_and_replicate_the_same(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    rows, tables = await play(aiohttp_client, tmp_path, clock)
    assert len(rows) >= 10 and all(orjson.loads(t)["format"] == ENTRY_FORMAT == 2 for _, t in rows)
    old = rechained(rows, as_format_1)
    assert all("format" not in orjson.loads(t) for _, t in old)
    check = ChainCheck()
    assert check.feed(old) and check.entries_checked == len(rows)

    # A chain of old entries with new ones after them (a ledger upgraded in place) verifies too.
    half = len(old) // 2
    mixed = old[:half] + rechained(rows[half:], lambda body: None, prev_hash=orjson.loads(old[half - 1][1])["hash"])
    assert ChainCheck().feed(mixed)

    # Offline verify and rebuild of a SQLite ledger holding the old journal: the same state.
    store = SqliteStore(tmp_path / "old.db")
    await store.open()
    try:
        last = orjson.loads(mixed[-1][1])
        await store.commit(
            [JournalRow(s, orjson.loads(t)["transaction"]["id"], t) for s, t in mixed],
            {},
            Head(last["sequence"], last["hash"], last["epoch"]),
        )
        assert (await verify_store(store))["ok"]
        rebuilt = await rebuild_state(store)
        assert {t: rebuilt.rows(t) for t in TABLES} == tables
    finally:
        await store.close()

    # A standby applies old entries with the same fold.
    standby = LedgerService(
        MemoryStore(), WriterLimits(), clock=clock, metrics=LedgerMetrics(CollectorRegistry()), standby=True
    )
    await standby.start()
    try:
        await standby.apply_replicated(old[:half])
        await standby.apply_replicated(mixed[half:])
        assert {t: await standby.store.dump(t) for t in TABLES} == tables
        assert standby.head.hash == orjson.loads(mixed[-1][1])["hash"]
    finally:
        await standby.stop()


@pytest.mark.parametrize("unknown", [3, 0, True, "2"])
async def test_an_entry_of_an_unknown_format_does_not_verify_nor_replicate(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock, unknown: Any
) -> None:
    rows, _ = await play(aiohttp_client, tmp_path, clock)
    rows = rows[:3]

    def from_the_future(body: dict[str, Any]) -> None:
        if body["sequence"] == 2:
            body["format"] = unknown

    bad = rechained(rows, from_the_future)
    check = ChainCheck()
    assert not check.feed(bad) and check.first_bad_sequence == 2
    standby = LedgerService(
        MemoryStore(), WriterLimits(), clock=clock, metrics=LedgerMetrics(CollectorRegistry()), standby=True
    )
    await standby.start()
    try:
        with pytest.raises(ReplicationError):
            await standby.apply_replicated(bad)
        assert standby.head.sequence == 0
    finally:
        await standby.stop()


@pytest.mark.parametrize(
    ("what", "epoch_of_3", "epoch_of_4"),
    [
        ("an epoch that goes down", 3, 2),
        ("an epoch that is text", "x", "x"),
        ("an epoch that is a boolean", True, True),
        ("an epoch past the stores' integers", 2**63, 2**63),
    ],
)
async def test_an_entry_whose_epoch_is_not_the_chains_does_not_verify_nor_replicate(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock, what: str, epoch_of_3: Any, epoch_of_4: Any
) -> None:
    """A lying primary re-hashes what it likes: a standby's head epoch that went down (its promotion
    then picked an epoch the old primary fences), or one that broke the store's integers."""
    rows, _ = await play(aiohttp_client, tmp_path, clock)

    def epochs(body: dict[str, Any]) -> None:
        body["epoch"] = {3: epoch_of_3, 4: epoch_of_4}.get(body["sequence"], body["epoch"])

    first_bad = 4 if what == "an epoch that goes down" else 3
    bad = rechained(rows[:5], epochs)
    check = ChainCheck()
    assert not check.feed(bad) and check.first_bad_sequence == first_bad, what
    standby = LedgerService(
        MemoryStore(), WriterLimits(), clock=clock, metrics=LedgerMetrics(CollectorRegistry()), standby=True
    )
    await standby.start()
    try:
        await standby.apply_replicated(bad[: first_bad - 1])  # what chains is applied, page by page
        with pytest.raises(ReplicationError):
            await standby.apply_replicated(bad[first_bad - 1 :])  # the regression is seen across pages
        assert standby.head.sequence == first_bad - 1
    finally:
        await standby.stop()
    higher = rechained(rows[:5], lambda body: body.update(epoch=body["sequence"]))  # rising: good
    assert ChainCheck().feed(higher)
