"""The edge reads the limits the ledger publishes (`GET /v1/limits`) and sends no batch beyond
them; an older ledger without the route leaves the edge's configured bounds in place."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from shared.contract.answers import Limits as LedgerLimits

from edge.config import Limits
from edge.ledger_client import LedgerClient
from edge.ledger_limits import BODY_MARGIN_BYTES
from edge.metrics import EdgeMetrics
from tests.support.fake_ledger import FakeLedger
from tests.support.polling import eventually

PUBLISHED = LedgerLimits(
    batch_actions_max=3,
    body_bytes_max=8192,
    page_limit_max=100,
    journal_wait_ms_max=1000,
    reason_chars_max=500,
    currencies_max=16,
    game_ids_max=1000,
)


def bet(i: int) -> dict:
    return {
        "id": f"b{i}",
        "player_id": "p1",
        "currency": "EUR",
        "amount_minor": 10,
        "round_id": f"r{i}",
        "game_id": "slots",
        "via": "eu",
        "client_id": "gs",
    }


async def _client_of(ledger: FakeLedger) -> tuple[LedgerClient, TestServer]:
    server = TestServer(ledger.app(), host="127.0.0.1")
    await server.start_server()
    client = LedgerClient(
        str(server.make_url("")).rstrip("/"),
        "t",
        attempt_timeout_s=1.0,
        deadline_s=3.0,
        limits=Limits(ledger_batch_max=50, ledger_batches_in_flight_max=1),
        metrics=EdgeMetrics(CollectorRegistry()),
    )
    await client.start()
    return client, server


async def test_the_edge_sends_no_batch_larger_than_the_ledger_publishes():
    ledger = FakeLedger(limits=PUBLISHED, delay_s=0.05)
    client, server = await _client_of(ledger)
    try:
        await eventually(lambda: asyncio.sleep(0, client.ledger_limits is not None), timeout_s=5.0)
        assert client.batch_max == 3 and client.batch_bytes_max == min(60_000, 8192 - BODY_MARGIN_BYTES)
        answers = await asyncio.gather(*(client.money("bet", bet(i)) for i in range(12)))
    finally:
        await client.close()
        await server.close()
    assert [status for status, _ in answers] == [201] * 12
    assert ledger.limits_asked == 1 and max(ledger.batches) <= 3 and sum(ledger.batches) == 12


async def test_an_older_ledger_without_the_route_leaves_the_configured_bounds():
    ledger = FakeLedger(limits=None, delay_s=0.05)
    client, server = await _client_of(ledger)
    try:
        answers = await asyncio.gather(*(client.money("bet", bet(i)) for i in range(12)))
        assert client.ledger_limits is None and client.batch_max == 50
        assert client.breaker_open(0) is False  # the 404 is an answer, not a failure of the link
    finally:
        await client.close()
        await server.close()
    assert [status for status, _ in answers] == [201] * 12 and max(ledger.batches) > 3
