"""The edge parses ledger answers into the contract's models: an answer outside the contract is
never half-read. A read answers 500 (a bug on one side, not a retryable 503); a money batch is a
failed attempt, retried with the same ids; both are logged and counted."""

from __future__ import annotations

import asyncio
import gzip
from types import SimpleNamespace
from typing import cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from shared.client_reads import read_capped
from shared.contract.answers import RoundsAnswer
from shared.errors import CroupierError, Unavailable, status_for

from edge.config import Limits
from edge.health import TaskHealth
from edge.jackpots import JackpotCatalog
from edge.ledger_client import LedgerClient
from edge.metrics import EdgeMetrics
from edge.reconcile import Reconciler
from edge.state import EdgeState
from tests.support.polling import eventually


async def _serve(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_a_read_outside_the_contract_is_a_logged_counted_500():
    async def rounds(request: web.Request) -> web.Response:
        return web.json_response({"rounds": [{"round_id": "r1"}]})  # most members missing

    app = web.Application()
    app.router.add_get("/v1/players/p1/rounds", rounds)
    server = await _serve(app)
    registry = CollectorRegistry()
    client = LedgerClient(
        str(server.make_url("")).rstrip("/"),
        "t",
        attempt_timeout_s=1.0,
        deadline_s=2.0,
        limits=Limits(),
        metrics=EdgeMetrics(registry),
    )
    await client.start()
    try:
        with capture_logs() as logs, pytest.raises(CroupierError) as raised:
            await client.read("/v1/players/p1/rounds", "rounds", RoundsAnswer)
    finally:
        await client.close()
        await server.close()
    assert not isinstance(raised.value, Unavailable) and status_for(raised.value) == 500
    assert registry.get_sample_value("edge_ledger_answers_malformed_total", {"operation": "rounds"}) == 1.0
    assert any(e["event"] == "ledger_answer_malformed" and e["operation"] == "rounds" for e in logs)


async def test_a_batch_answer_outside_the_contract_is_retried_then_unavailable():
    seen = []

    async def batch(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.json_response({"results": [{"status": 201, "body": {"transaction": {"id": "b1"}}}]})

    app = web.Application()
    app.router.add_post("/v1/batch", batch)
    server = await _serve(app)
    registry = CollectorRegistry()
    client = LedgerClient(
        str(server.make_url("")).rstrip("/"),
        "t",
        attempt_timeout_s=0.5,
        deadline_s=0.5,
        limits=Limits(ledger_retry_backoff_s=0.05),
        metrics=EdgeMetrics(registry),
    )
    await client.start()
    body = {"id": "b1", "player_id": "p1", "currency": "EUR", "amount_minor": 1, "round_id": "r", "game_id": "g"}
    try:
        with pytest.raises(Unavailable):
            await client.money("bet", body)
    finally:
        await client.close()
        await server.close()
    assert len(seen) >= 2 and all(s["actions"][0]["body"]["id"] == "b1" for s in seen)  # same id every time
    assert registry.get_sample_value("edge_ledger_answers_malformed_total", {"operation": "batch"}) >= 2


async def test_ledger_truths_outside_the_contract_are_counted_never_half_read_and_fail_the_round():
    """The jackpot lookup, the jackpot and bonus reconciliation read typed answers: members missing
    is a counted malformed answer (a bug), never a partly read truth nor a postponed key."""

    async def jackpot(request: web.Request) -> web.Response:
        return web.json_response({"jackpot_id": "j1", "epoch": 2})  # pool, seed, per-edge truth, as_of missing

    async def bonuses(request: web.Request) -> web.Response:
        return web.json_response({"player_id": "p1", "bonuses": [{"bonus_id": "b1"}], "as_of_sequence": 3})

    app = web.Application()
    app.router.add_get("/v1/jackpots/j1", jackpot)
    app.router.add_get("/v1/players/p1/bonuses", bonuses)
    server = await _serve(app)
    registry = CollectorRegistry()
    metrics = EdgeMetrics(registry)
    limits = Limits(reconcile_interval_s=0.05)
    client = LedgerClient(
        str(server.make_url("")).rstrip("/"), "t", attempt_timeout_s=1.0, deadline_s=2.0, limits=limits, metrics=metrics
    )
    catalog = JackpotCatalog(client, lookup_interval_s=60.0)
    health = TaskHealth(metrics, unready_after=1)
    state = cast(EdgeState, SimpleNamespace(metrics=metrics, children=lambda kind: []))  # never reached otherwise
    reconciler = Reconciler(state, client, limits, catalog=catalog, health=health)
    await client.start()
    try:
        await catalog.learn(["j1"])
        assert catalog.epoch("j1") is None  # the old code took `epoch` from the partial answer
        for call in (reconciler.jackpot("j1"), reconciler.bonuses("p1")):
            with pytest.raises(CroupierError) as raised:
                await call
            assert status_for(raised.value) == 500
        reconciler.mark_dirty(["jackpot/j1"])
        run = asyncio.create_task(reconciler.run())
        try:
            await eventually(lambda: asyncio.sleep(0, health.failing() == ["reconcile"]), timeout_s=5.0)
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
    finally:
        await client.close()
        await server.close()
    assert registry.get_sample_value("edge_ledger_answers_malformed_total", {"operation": "jackpot"}) >= 3.0
    assert registry.get_sample_value("edge_ledger_answers_malformed_total", {"operation": "bonuses"}) == 1.0
    assert registry.get_sample_value("edge_background_failures_total", {"task": "reconcile"}) >= 1.0


async def test_a_ledger_answer_is_read_within_a_bound_even_when_it_inflates() -> None:
    """aiohttp reads and decompresses a whole answer into memory: 200 KB of gzip made 200 MB."""
    inflated = b"0" * 2_000_000
    squeezed = gzip.compress(inflated)

    async def bomb(request: web.Request) -> web.Response:
        return web.Response(body=squeezed, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    async def plain(request: web.Request) -> web.Response:
        return web.Response(body=b'{"ok": true}', content_type="application/json")

    app = web.Application()
    app.router.add_get("/bomb", bomb)
    app.router.add_get("/plain", plain)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            assert len(squeezed) < 10_000
            async with http.get(server.make_url("/bomb")) as resp:
                with pytest.raises(aiohttp.ClientPayloadError):  # a failed attempt: retried, then 503
                    await read_capped(resp, limit=100_000)
            async with http.get(server.make_url("/plain")) as resp:
                assert await read_capped(resp, limit=100_000) == b'{"ok": true}'
    finally:
        await server.close()


async def test_a_round_the_unavailable_ledger_stops_keeps_every_name_it_had_not_done() -> None:
    """A round stopped at the first `ledger_unavailable` and put back only that document: this
    edge's other marks (a payout, an effect that failed) were dropped and waited for the sweep."""
    unavailable = Unavailable("the ledger is unavailable")

    class DownLedger:
        async def read(self, *args: object, **kwargs: object) -> object:
            raise unavailable

    limits = Limits()
    state = cast(EdgeState, SimpleNamespace(children=lambda kind: ["p9"] if kind == "bonus" else []))
    health = cast(TaskHealth, SimpleNamespace(ok=lambda task: None, failed=lambda task, error: None))
    reconciler = Reconciler(state, cast(LedgerClient, DownLedger()), limits, health=health)
    reconciler.mark_dirty(["bonus/p1", "bonus/p2", "jackpot/mega"])
    assert await reconciler.round() is None  # the ledger being down is no failure of the task
    assert list(reconciler._dirty) == ["bonus/p1", "bonus/p2", "jackpot/mega"]
    assert reconciler._next_round() == ["bonus/p1", "bonus/p2", "jackpot/mega", "bonus/p9"]  # the sweep kept too
