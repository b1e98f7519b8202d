"""The edge's ledger client against real in-process ledgers: it moves past an unreachable URL
and a standby (without opening the standby's breaker), learns the epoch from answers, follows a
promotion within its deadline, and its epoch header fences the old primary once the promoted
peer proves that epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from shared.errors import Unavailable

from core_ledger.app import create_app
from core_ledger.app_keys import SERVICE, STANDBY
from core_ledger.standby_tailer import StandbySettings
from edge.config import Limits
from edge.ledger_client import LedgerClient
from edge.metrics import EdgeMetrics
from harness.cluster import free_port
from tests.support.clock import FakeClock
from tests.support.ledger import TOKENS, Api, bet, ledger_config

LIMITS = Limits(breaker_failures=3, breaker_open_s=5.0, ledger_retry_backoff_s=0.02)


def client_of(urls: list[str]) -> LedgerClient:
    return LedgerClient(
        urls,
        TOKENS["edge"],
        attempt_timeout_s=1.0,
        deadline_s=3.0,
        limits=LIMITS,
        metrics=EdgeMetrics(CollectorRegistry()),
    )


def url_of(server: Any) -> str:
    return str(server.make_url("")).rstrip("/")


async def pair(
    aiohttp_server: Any, aiohttp_client: Any, root: Path, standby_port: int | None = None, **primary: Any
) -> tuple[Any, Any, Any, Api]:
    """A primary (with `primary` config overrides) and its standby (on `standby_port` if given),
    both served; and an admin Api on the primary with a funded player p1."""
    primary_app = create_app(ledger_config(root / "a", **primary), clock=FakeClock())
    primary_server = await aiohttp_server(primary_app)
    settings = StandbySettings(url_of(primary_server), TOKENS["replica"], poll_interval_s=0.05)
    standby_server = await aiohttp_server(
        create_app(ledger_config(root / "b"), clock=FakeClock(), standby=settings), port=standby_port
    )
    api = Api(await aiohttp_client(primary_server))
    await api.player(deposit=10_000)
    return primary_server, standby_server, primary_app, api


async def test_client_skips_a_dead_url_and_a_standby_and_learns_the_epoch(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    primary, standby, _, _ = await pair(aiohttp_server, aiohttp_client, tmp_path)
    client = client_of([f"http://127.0.0.1:{free_port()}", url_of(standby), url_of(primary)])
    await client.start()
    try:
        for i in range(5):
            status, body = await client.money("bet", bet(f"b{i}", 10, via="eu"))
            assert status == 201 and body.transaction.id == f"b{i}"
        assert client.ledger_url == url_of(primary) and client.epoch_seen == 1
        client.failover.current = 1  # back to the standby: it answers not_primary, which is not a link failure
        for i in range(5, 10):
            assert (await client.money("bet", bet(f"b{i}", 10, via="eu")))[0] == 201
            client.failover.current = 1
        assert not client.breaker_open(1)
    finally:
        await client.close()


async def test_client_follows_a_promotion_and_its_epoch_fences_the_old_primary(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    port = free_port()  # the standby's: the primary names it as its peer (the one that can prove an epoch)
    primary, standby, primary_app, _ = await pair(
        aiohttp_server,
        aiohttp_client,
        tmp_path,
        standby_port=port,
        synchronous_standby=True,
        standby_ack_timeout_s=0.3,
        peers=(f"http://127.0.0.1:{port}",),
        peer_check_interval_s=600.0,
        epoch_claim_recheck_s=0.01,
    )
    client = client_of([url_of(primary), url_of(standby)])
    await client.start()
    try:
        assert (await client.money("bet", bet("b1", 10, via="eu")))[0] == 201
        standby_api = Api(await aiohttp_client(standby))
        assert (await standby_api.post("admin_write", "/admin/v1/promote"))[1]["epoch"] == 2
        # The old primary no longer has a standby to confirm its commits (503): the client moves on.
        status, body = await client.money("bet", bet("b2", 10, via="eu"))
        assert status == 201 and body.transaction.epoch == 2 and client.epoch_seen == 2
        assert primary_app[SERVICE].fenced_by == 0  # not told yet (no periodic check in this test)
        client.failover.current = 0  # back to the old primary: its header claims epoch 2, which the peer proves
        status, body = await client.money("bet", bet("b3", 10, via="eu"))
        assert status == 201 and body.transaction.epoch == 2  # answered by the new primary...
        assert primary_app[SERVICE].fenced_by == 2  # ...after the old one fenced itself on that proof
        await standby.close()  # the new primary goes away too: the fenced old one acknowledges nothing
        with pytest.raises(Unavailable):
            await client.money("bet", bet("b4", 10, via="eu"))
    finally:
        await client.close()


async def test_money_is_read_from_the_primary_never_from_a_standby_behind_it(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    """After one failed read at the primary the client used the standby for every later read,
    and a standby behind its primary answered an old balance for as long as no write moved the
    client back. A standby's answer now says what it is, and the read goes on to the primary."""
    primary, standby, primary_app, api = await pair(aiohttp_server, aiohttp_client, tmp_path)
    standby_app = standby.app
    await standby_app[STANDBY].stop()  # behind from here on
    await api.post("edge", "/v1/bets", bet("b1", 500))
    client = client_of([url_of(primary), url_of(standby)])
    await client.start()
    try:
        for _ in range(3):
            client.failover.current = 1  # as after a blip on the link to the primary
            body = await client.get("/v1/players/p1/balances", "balances")
            assert body["balances"][0]["balance_minor"] == 9_500, "read from the standby behind"
        assert not client.breaker_open(1)  # a standby's answer is not a link failure
        primary_app[SERVICE].failover.fenced_by = 99  # the primary lost a failover: nobody to read from
        with pytest.raises(Unavailable):
            await client.get("/v1/players/p1/balances", "balances")
    finally:
        await client.close()
