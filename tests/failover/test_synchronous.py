"""Synchronous standby (in process): a commit is answered only after a standby applied it; with
no standby it is answered 503 after the bounded wait, stays journaled, and a retry with the same
id replays it once a standby has it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from core_ledger import checkpoints
from core_ledger.app import create_app
from core_ledger.app_keys import SERVICE, STANDBY
from tests.support.clock import FakeClock
from tests.support.ledger import Api, bet, ledger_config, standby_of
from tests.support.polling import wait_for


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


async def test_a_tail_no_standby_confirmed_is_no_event_even_after_a_restart(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    """A restarted primary counts all it holds as acknowledged (for the promotion guard), and the
    event stream used that count: it served an entry no standby ever had, which the standby's
    promotion then journaled over with another transaction at the same sequence."""
    clock, key_file = FakeClock(), tmp_path / "keys" / "checkpoint.key"
    key_file.parent.mkdir()
    checkpoints.write_new_key(key_file)
    config = ledger_config(
        tmp_path / "p", synchronous_standby=True, standby_ack_timeout_s=0.3, checkpoint_key_file=key_file
    )
    primary_server = await aiohttp_server(create_app(config, clock=clock))
    primary = Api(await aiohttp_client(primary_server))
    standby_app = standby_of(primary_server, tmp_path / "s", clock)
    await aiohttp_client(standby_app)
    await primary.player(deposit=100)  # 1 and 2, confirmed
    await standby_app[STANDBY].stop()
    deposit = {"id": "unconfirmed", "player_id": "p1", "currency": "EUR", "amount_minor": 7}
    assert (await primary.post("cashier", "/v1/deposits", deposit))[0] == 503  # journaled as 3
    await primary_server.close()

    restarted_app = create_app(config, clock=clock)
    restarted = Api(await aiohttp_client(await aiohttp_server(restarted_app)))
    assert restarted_app[SERVICE].acknowledged_sequence == 3  # the promotion guard's bound
    status, events = await restarted.get("admin_read", "/v1/events?after=2")
    assert status == 200 and events == "", events  # never served: a failover may drop it
    status, signed = await restarted.post("admin_write", "/admin/v1/audit/checkpoints")
    assert status == 201 and signed["checkpoint"] is None, signed  # no signature over it either


async def test_a_promoted_copy_serves_the_events_it_inherited_before_any_standby_confirms(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    """What a standby held when it was promoted survived a failover: it is served at once, not
    held back until a new standby confirms it (events and webhooks stalled after every failover)."""
    clock = FakeClock()
    primary_server = await aiohttp_server(create_app(ledger_config(tmp_path / "p"), clock=clock))
    primary = Api(await aiohttp_client(primary_server))
    standby_app = standby_of(primary_server, tmp_path / "s", clock, synchronous_standby=True, standby_ack_timeout_s=0.3)
    standby = Api(await aiohttp_client(standby_app))
    await primary.player(deposit=100)
    await wait_for(lambda: standby_app[SERVICE].head.sequence == 2)
    await primary_server.close()
    assert (await standby.post("admin_write", "/admin/v1/promote"))[0] == 200
    status, events = await standby.get("admin_read", "/v1/events")
    assert status == 200 and [orjson.loads(line)["sequence"] for line in events.splitlines()] == [1, 2]
