"""What an edge tells its operator: a background task that fails is logged, counted and started
again (never dead in silence); breakers opening and closing and moves to another ledger URL are
logged; a money action carries its request id to the ledger."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from shared import request_ids
from shared.errors import Unavailable

from edge.app import create_app
from edge.app_keys import SERVICE
from edge.config import Limits
from edge.ledger_client import LedgerClient
from edge.metrics import EdgeMetrics
from harness.cluster import free_port
from tests.support.edges import edge_config
from tests.support.fake_ledger import FakeLedger
from tests.support.polling import eventually


def bet_body(i: int = 1) -> dict:
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


async def test_a_reconciler_that_fails_is_logged_counted_and_started_again(tmp_path, fake_ledger):
    _, ledger_server = fake_ledger
    registry = CollectorRegistry()
    port = free_port()
    app = create_app(
        edge_config(tmp_path, "eu", 1, str(ledger_server.make_url("")).rstrip("/"), port, {}), registry=registry
    )
    reconciler = app[SERVICE].reconciler
    rounds = []
    original = reconciler._round_sources

    def flaky() -> dict[str, str]:
        rounds.append(time.monotonic())
        if len(rounds) == 1:
            raise RuntimeError("a bug in the reconciler")
        return original()

    reconciler._round_sources = flaky  # type: ignore[method-assign]  # a fault injected for this test
    server = TestServer(app, host="127.0.0.1", port=port)
    with capture_logs() as logs:
        await server.start_server()
        try:
            await eventually(lambda: asyncio.sleep(0, len(rounds) >= 2), timeout_s=5.0)
        finally:
            await server.close()
    failed = [e for e in logs if e["event"] == "edge_task_failed"]
    assert failed and failed[0]["task"] == "reconciler" and "a bug in the reconciler" in failed[0]["error"]
    assert registry.get_sample_value("edge_background_failures_total", {"task": "reconciler"}) == 1.0


async def test_breakers_opening_and_urls_switching_are_logged(tmp_path):
    closed = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    client = LedgerClient(
        closed,
        "t",
        attempt_timeout_s=0.2,
        deadline_s=0.6,
        limits=Limits(breaker_failures=2, breaker_open_s=5.0, ledger_retry_backoff_s=0.01),
        metrics=EdgeMetrics(CollectorRegistry()),
    )
    await client.start()
    try:
        with capture_logs() as logs, pytest.raises(Unavailable):
            await client.money("bet", bet_body())
    finally:
        await client.close()
    events = [e["event"] for e in logs]
    assert "ledger_url_switched" in events
    opened = {e["url"] for e in logs if e["event"] == "ledger_breaker_open"}
    assert opened == set(closed)


async def test_a_breaker_that_closes_again_is_logged_and_each_action_carries_its_request_id():
    ledger = FakeLedger(fail_after_commit=1)  # the first batch commits, then its answer is lost (502)
    seen: list[list[str | None]] = []
    original = ledger.batch

    async def recording(request):  # type: ignore[no-untyped-def]  # an aiohttp handler wrapper
        seen.append([a.get("request_id") for a in (await request.json())["actions"]])
        return await original(request)

    ledger.batch = recording  # type: ignore[method-assign]  # a fault injected for this test
    server = TestServer(ledger.app(), host="127.0.0.1")
    await server.start_server()
    client = LedgerClient(
        str(server.make_url("")).rstrip("/"),
        "t",
        attempt_timeout_s=0.5,
        deadline_s=3.0,
        limits=Limits(breaker_failures=1, breaker_open_s=0.1, ledger_retry_backoff_s=0.05),
        metrics=EdgeMetrics(CollectorRegistry()),
    )
    await client.start()
    try:
        with capture_logs() as logs:
            bound = request_ids.bind("gs-req-1")
            try:
                with pytest.raises(Unavailable):  # the answer was lost and the circuit opened
                    await client.money("bet", bet_body())
                await asyncio.sleep(0.15)  # breaker_open_s: the next call is the half-open probe
                status, answer = await client.money("bet", bet_body())  # the game server's retry
            finally:
                request_ids.unbind(bound)
    finally:
        await client.close()
        await server.close()
    assert status == 200 and answer.replayed is True
    events = [e["event"] for e in logs]
    assert events.index("ledger_breaker_open") < events.index("ledger_breaker_closed")
    assert len(seen) >= 2 and all(ids == ["gs-req-1"] for ids in seen)  # kept across the retry


async def test_a_dispatcher_that_fails_is_reported_and_started_again(fake_ledger):
    _, server = fake_ledger
    registry = CollectorRegistry()
    client = LedgerClient(
        str(server.make_url("")).rstrip("/"),
        "t",
        attempt_timeout_s=0.5,
        deadline_s=3.0,
        limits=Limits(),
        metrics=EdgeMetrics(registry),
    )
    original, calls = client.batcher.dispatch, []

    async def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in the dispatcher")
        await original()

    client.batcher.dispatch = flaky  # type: ignore[method-assign]  # a fault injected for this test
    await client.start()
    try:
        with capture_logs() as logs:
            status, _ = await client.money("bet", bet_body())
    finally:
        await client.close()
    assert status == 201 and len(calls) == 2
    assert registry.get_sample_value("edge_background_failures_total", {"task": "ledger_client"}) == 1.0
    assert any(e["event"] == "ledger client task failed" and e["task"] == "ledger_dispatch" for e in logs)
