"""The operations metrics carry the values they claim: process and build series on both services,
the ledger's queue, file sizes, free space and liabilities, the edge's breaker per URL index, its
store files and its money errors by stable code."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from shared.logs import version

from core_ledger.app import create_app as create_ledger
from core_ledger.app_keys import LIABILITIES
from core_ledger.domain import Command
from core_ledger.liabilities import LiabilitiesSampler, liabilities
from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.store import MemoryStore
from core_ledger.writer import WriterLimits
from edge.app import create_app as create_edge
from edge.metrics import error_code_label
from harness.cluster import free_port
from tests.support.edges import GS, edge_config
from tests.support.ledger import TOKENS, bet, ledger_config
from tests.support.polling import eventually

DEADLINE_S = 5.0


class Servers:
    def __init__(self) -> None:
        self.servers: list[TestServer] = []

    async def start(self, app: web.Application, port: int | None = None) -> str:
        server = TestServer(app, host="127.0.0.1", port=port or free_port())
        await server.start_server()
        self.servers.append(server)
        return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    s = Servers()
    try:
        yield s
    finally:
        for server in reversed(s.servers):
            await server.close()


async def post(http: aiohttp.ClientSession, url: str, token: str, body: Any) -> tuple[int, Any]:
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json(content_type=None)


def test_liabilities_are_minus_the_other_accounts_per_currency():
    system = {"cashier:EUR": -10_000, "house:EUR": 3_000, "bonus:EUR": -500, "cashier:GBP": -700}
    out = liabilities(system, [("EUR", 1_200), ("EUR", 300)])
    # players hold what the cashier paid in and the bonus granted, minus what house and pools hold
    assert out == {
        ("player_balances", "EUR"): 10_000 - 3_000 + 500 - 1_500,
        ("jackpot_pools", "EUR"): 1_500,
        ("bonus_granted", "EUR"): 500,
        ("player_balances", "GBP"): 700,
        ("jackpot_pools", "GBP"): 0,
        ("bonus_granted", "GBP"): 0,
    }


async def test_ledger_exports_build_process_disk_and_liabilities(servers, tmp_path):
    registry = CollectorRegistry()
    app = create_ledger(ledger_config(tmp_path / "ledger"), registry=registry)
    url = await servers.start(app)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for player, currency, amount in (("p1", "EUR", 100_000), ("p2", "GBP", 700)):
            assert (
                await post(
                    http,
                    url + "/admin/v1/players",
                    TOKENS["admin_write"],
                    {"player_id": player, "currencies": [currency]},
                )
            )[0] == 201
            assert (
                await post(
                    http,
                    url + "/v1/deposits",
                    TOKENS["cashier"],
                    {"id": f"d-{player}", "player_id": player, "currency": currency, "amount_minor": amount},
                )
            )[0] == 201
        assert (
            await post(
                http,
                url + "/admin/v1/jackpots",
                TOKENS["admin_write"],
                {
                    "jackpot_id": "mega",
                    "currency": "EUR",
                    "seed_minor": 1000,
                    "contribution_ppm": 10_000,
                    "game_ids": ["slots"],
                },
            )
        )[0] == 201
        assert (await post(http, url + "/v1/bets", TOKENS["edge"], bet("b1", 5000)))[0] == 201
        await app[LIABILITIES].sample()
    value = registry.get_sample_value
    assert value("croupier_build_info", {"version": version(), "service": "ledger"}) == 1
    assert value("process_resident_memory_bytes") > 0 and value("process_open_fds") > 0
    assert value("process_cpu_seconds_total") >= 0 and value("python_gc_collections_total", {"generation": "0"}) >= 0
    assert value("ledger_db_bytes", {"file": "db"}) > 0
    assert value("ledger_db_bytes", {"file": "wal"}) >= 0
    assert value("ledger_data_dir_free_bytes") > 0
    assert value("ledger_write_queue_depth") == 0
    assert value("ledger_liabilities_minor", {"kind": "player_balances", "currency": "EUR"}) == 95_000
    assert value("ledger_liabilities_minor", {"kind": "jackpot_pools", "currency": "EUR"}) == 1050
    assert value("ledger_liabilities_minor", {"kind": "player_balances", "currency": "GBP"}) == 700
    assert value("ledger_liabilities_minor", {"kind": "jackpot_pools", "currency": "GBP"}) == 0
    assert value("ledger_task_failing", {"task": "liabilities"}) == 0


async def test_write_queue_depth_counts_commands_waiting_for_the_writer():
    gate = asyncio.Event()

    class SlowStore(MemoryStore):
        async def load(self, wanted: Any) -> Any:
            await gate.wait()  # the writer holds its first group here; the rest stays queued
            return await super().load(wanted)

    registry = CollectorRegistry()
    metrics = LedgerMetrics(registry)
    service = LedgerService(
        SlowStore(), WriterLimits(commit_batch_max=1), clock=lambda: datetime.now(UTC), metrics=metrics
    )
    metrics.write_queue_depth.set_function(lambda: service.queue_depth)
    await service.start()

    def deposit(i: int) -> Command:
        return Command(
            "deposit",
            {"id": f"d{i}", "player_id": "nobody", "currency": "EUR", "amount_minor": 1},
            "cashier-1",
            ("c", f"d{i}"),
        )

    jobs = [asyncio.create_task(service.submit([deposit(i)])) for i in range(5)]

    async def queued() -> bool:
        return registry.get_sample_value("ledger_write_queue_depth") >= 3

    try:
        await eventually(queued, DEADLINE_S, 0.01)
        gate.set()
        await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), DEADLINE_S)
        assert registry.get_sample_value("ledger_write_queue_depth") == 0
    finally:
        gate.set()
        for job in jobs:
            job.cancel()
        await service.stop()


async def test_a_failing_liabilities_sampling_is_counted_and_retried():
    class BrokenStore(MemoryStore):
        calls = 0

        async def select(self, *args: Any, **kwargs: Any) -> Any:
            BrokenStore.calls += 1
            raise OSError("disk gone")

    registry = CollectorRegistry()
    sampler = LiabilitiesSampler(BrokenStore(), LedgerMetrics(registry), interval_s=0.01)

    async def retried() -> bool:
        return BrokenStore.calls >= 3

    sampler.start()
    try:
        await eventually(retried, DEADLINE_S, 0.02)
    finally:
        await sampler.stop()
    assert registry.get_sample_value("ledger_task_failures_total", {"task": "liabilities"}) >= 3


def test_error_codes_outside_the_stable_set_are_labelled_other():
    assert error_code_label("insufficient_funds") == "insufficient_funds"
    assert error_code_label("internal_error") == "internal_error"
    assert error_code_label("made-up-by-someone") == "other"
    assert error_code_label(None) == "other"


async def test_edge_exports_breaker_per_url_index_store_files_and_error_codes(servers, tmp_path):
    ledger = await servers.start(create_ledger(ledger_config(tmp_path / "ledger")))
    dead = f"http://127.0.0.1:{free_port()}"
    registry = CollectorRegistry()
    port = free_port()
    cfg = edge_config(tmp_path, "eu", 1, ledger, port, {}, ledger_token=TOKENS["edge"])
    edge_url = await servers.start(create_edge(cfg, registry=registry), port)
    dead_registry = CollectorRegistry()
    dead_port = free_port()
    dead_url = await servers.start(
        create_edge(edge_config(tmp_path, "us", 2, dead, dead_port, {}), registry=dead_registry), dead_port
    )
    value = registry.get_sample_value
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        assert (
            await post(
                http, ledger + "/admin/v1/players", TOKENS["admin_write"], {"player_id": "p1", "currencies": ["EUR"]}
            )
        )[0] == 201
        status, body = await post(http, edge_url + "/v1/bets", GS, bet("b1", 10))
        assert (status, body["code"]) == (422, "insufficient_funds")
        assert value("edge_money_errors_total", {"operation": "bet", "code": "insufficient_funds"}) == 1
        assert value("edge_ledger_breaker_open", {"url_index": "0"}) == 0
        opened = False
        deadline = time.monotonic() + DEADLINE_S
        for i in range(20):
            status, body = await post(http, dead_url + "/v1/bets", GS, bet(f"d{i}", 10))
            assert (status, body["code"]) == (503, "ledger_unavailable")
            opened = dead_registry.get_sample_value("edge_ledger_breaker_open", {"url_index": "0"}) == 1
            if opened or time.monotonic() > deadline:
                break
    assert opened, "the breaker of the unreachable ledger URL never showed open"
    assert (
        dead_registry.get_sample_value("edge_money_errors_total", {"operation": "bet", "code": "ledger_unavailable"})
        >= 1
    )
    assert value("edge_db_bytes", {"file": "db"}) > 0
    assert value("croupier_build_info", {"version": version(), "service": "edge"}) == 1
    assert value("process_max_fds") > 0
