"""Synchronous standby (in process): a commit is answered only after a standby applied it; with
no standby it is answered 503 after the bounded wait, stays journaled, and a retry with the same
id replays it once a standby has it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core_ledger.app import create_app
from core_ledger.app_keys import SERVICE
from tests.support.clock import FakeClock
from tests.support.ledger import Api, bet, ledger_config, standby_of


async def test_answers_wait_for_the_standby_and_time_out_without_one(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    clock = FakeClock()
    config = ledger_config(tmp_path / "p", synchronous_standby=True, standby_ack_timeout_s=0.3)
    primary_app = create_app(config, clock=clock)
    primary_server = await aiohttp_server(primary_app)
    primary = Api(await aiohttp_client(primary_server))

    status, problem = await primary.post("admin_write", "/admin/v1/players", {"player_id": "p1", "currencies": ["EUR"]})
    assert status == 503 and problem["code"] == "standby_unavailable"  # no standby confirmed it
    assert primary_app[SERVICE].head.sequence == 1  # ... but it is journaled here
    _, metrics = await primary.get("admin_read", "/metrics")
    assert "ledger_standby_ack_timeouts_total 1.0" in metrics

    standby_app = standby_of(primary_server, tmp_path / "s", clock)
    await aiohttp_client(standby_app)
    status, body = await primary.post("admin_write", "/admin/v1/players", {"player_id": "p1", "currencies": ["EUR"]})
    assert status == 200 and body["replayed"] is True  # the retry replays it, once a standby has it
    assert standby_app[SERVICE].head.sequence >= 1

    status, body = await primary.post(
        "cashier", "/v1/deposits", {"id": "d1", "player_id": "p1", "currency": "EUR", "amount_minor": 500}
    )
    assert status == 201
    assert standby_app[SERVICE].head.sequence >= body["transaction"]["sequence"]  # applied before the answer
    status, body = await primary.post("edge", "/v1/bets", bet("b1", 100))
    assert status == 201 and standby_app[SERVICE].head.sequence >= body["transaction"]["sequence"]
    _, repl = await primary.get("admin_read", "/admin/v1/replication")
    assert repl["synchronous_standby"] is True
    assert [s["name"] for s in repl["standbys"]] == ["replica-1"] and repl["standbys"][0]["acked_sequence"] >= 2
