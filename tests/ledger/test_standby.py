"""Standby: tails the primary's journal, verifies and applies it, refuses writes, reports lag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from core_ledger.app import create_app
from core_ledger.app_keys import SERVICE, STANDBY
from core_ledger.domain.state import TABLES
from core_ledger.replica_apply import ReplicationError
from core_ledger.standby_tailer import StandbySettings
from tests.support.clock import FakeClock
from tests.support.ledger import TOKENS, Api, bet, ledger_config, standby_of
from tests.support.polling import wait_for


async def test_standby_replicates_refuses_writes_and_reports_lag(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    primary_app = create_app(ledger_config(tmp_path / "primary"), clock=clock)
    primary_server = await aiohttp_server(primary_app)
    primary = Api(await aiohttp_client(primary_server))
    settings = StandbySettings(
        str(primary_server.make_url("")).rstrip("/"), TOKENS["replica"], page_limit=7, poll_interval_s=0.05
    )
    standby_app = create_app(ledger_config(tmp_path / "standby"), clock=clock, standby=settings)
    standby = Api(await aiohttp_client(standby_app))
    assert TOKENS["replica"] not in repr(settings)

    await primary.player(deposit=1000)
    await primary.post(
        "admin_write",
        "/admin/v1/jackpots",
        {"jackpot_id": "j", "currency": "EUR", "seed_minor": 10, "contribution_ppm": 20_000, "game_ids": ["slots"]},
    )
    for i in range(20):
        await primary.post("edge", "/v1/bets", bet(f"b{i}", 10 + i, round_id=f"r{i // 4}", via="eu"))
    await primary.post("edge", "/v1/rollbacks", {"id": "rb", "bet_id": "b19", "player_id": "p1"})
    head = primary_app[SERVICE].head
    await wait_for(lambda: standby_app[SERVICE].head == head)

    for table in TABLES:
        assert await standby_app[SERVICE].store.dump(table) == await primary_app[SERVICE].store.dump(table), table
    assert await standby.get("edge", "/v1/players/p1/balances") == await primary.get("edge", "/v1/players/p1/balances")
    status, body = await standby.post("edge", "/v1/bets", bet("x", 1))
    assert status == 503 and body["code"] == "not_primary"
    status, repl = await standby.get("admin_read", "/admin/v1/replication")
    assert repl["role"] == "standby" and repl["primary"]["lag_sequences"] == 0 and repl["head"]["hash"] == head.hash
    _, metrics = await standby.get("admin_read", "/metrics")
    assert "ledger_replica_lag_sequences 0.0" in metrics and "ledger_replica_lag_seconds 0.0" in metrics
    status, ready = await standby.get("", "/readyz")
    assert status == 200 and ready["role"] == "standby"
    _, report = await standby.post("admin_read", "/admin/v1/audit/verify")
    assert report["ok"] and report["head_hash"] == head.hash


async def test_standby_refuses_a_journal_that_does_not_chain(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    app = create_app(
        ledger_config(tmp_path / "s"),
        clock=clock,
        standby=StandbySettings("http://127.0.0.1:9", "t", poll_interval_s=10),
    )
    await aiohttp_client(app)
    await app[STANDBY].stop()  # drive it by hand
    forged = {"sequence": 1, "epoch": 1, "transaction": {}, "postings": [], "prev_hash": "0" * 64, "hash": "ab" * 32}
    try:
        await app[SERVICE].apply_replicated([(1, orjson.dumps(forged).decode())])
    except ReplicationError as e:
        assert e.first_bad_sequence == 1
    else:
        raise AssertionError("a forged entry was applied")
    assert app[SERVICE].head.sequence == 0


async def test_promoted_standby_takes_writes_in_a_higher_epoch(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    primary_app = create_app(ledger_config(tmp_path / "primary"), clock=clock)
    primary_server = await aiohttp_server(primary_app)
    primary = Api(await aiohttp_client(primary_server))
    standby_app = standby_of(primary_server, tmp_path / "standby", clock)
    standby = Api(await aiohttp_client(standby_app))
    await primary.player(deposit=500)
    head = primary_app[SERVICE].head
    await wait_for(lambda: standby_app[SERVICE].head == head)
    status, promoted = await standby.post("admin_write", "/admin/v1/promote")
    assert status == 200 and promoted["epoch"] == head.epoch + 1 and promoted["head"]["sequence"] == head.sequence
    status, body = await standby.post("edge", "/v1/bets", bet("b1", 100))
    assert status == 201 and body["transaction"]["epoch"] == head.epoch + 1
    assert body["balance"]["balance_minor"] == 400
    _, report = await standby.post("admin_read", "/admin/v1/audit/verify")
    assert report["ok"] and report["head_sequence"] == head.sequence + 1
    assert (await standby.get("", "/readyz"))[0] == 200
    assert (await standby.post("admin_write", "/admin/v1/promote"))[1]["epoch"] == head.epoch + 1  # no-op now
