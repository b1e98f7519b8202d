"""Against a live cluster (a ledger, its synchronous standby and three edges as real processes, with traffic):
every metric name that rules and dashboards use is exported, and a real Prometheus scraping the
cluster returns data for every dashboard and recording-rule query."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import aiohttp
import pytest
import pytest_asyncio

from harness.cluster import STANDBY, Cluster, free_port, seed
from monitoring import contract
from monitoring.prom import expressions_without_data, running_prometheus, scraped_names, wait_targets_up
from monitoring.promql import all_expressions, recorded_names, unexported_names

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


async def traffic(cluster: Cluster, stop: asyncio.Event) -> None:
    """Bets, wins, exact replays, conflicting reuses and rollbacks through every edge until stopped."""
    gs = cluster.headers("game_server")
    n = itertools.count()
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            i = next(n)
            edge = cluster.url(cluster.edge_ids[i % 3])
            bet = {
                "id": f"m-bet-{i}",
                "player_id": f"p{i % 5 + 1:03d}",
                "currency": "EUR",
                "amount_minor": 50,
                "round_id": f"m-r-{i}",
                "game_id": "slots-1",
            }
            for body in (bet, bet, {**bet, "amount_minor": 51}):  # first, replay, conflicting reuse
                async with http.post(f"{edge}/v1/bets", json=body, headers=gs) as r:
                    await r.read()
            if i % 4 == 0:
                async with http.post(
                    f"{edge}/v1/rollbacks",
                    headers=gs,
                    json={"id": f"m-rb-{i}", "bet_id": bet["id"], "player_id": bet["player_id"]},
                ) as r:
                    await r.read()
            else:
                async with http.post(
                    f"{edge}/v1/wins",
                    headers=gs,
                    json={
                        "id": f"m-win-{i}",
                        "player_id": bet["player_id"],
                        "currency": "EUR",
                        "amount_minor": 20,
                        "round_id": bet["round_id"],
                        "close_round": True,
                    },
                ) as r:
                    await r.read()
            await asyncio.sleep(0.02)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("live"), standby=True)  # a standby exports the replica gauges
    stop = asyncio.Event()
    task = None
    try:
        await cluster.start()
        cluster.write_info(await seed(cluster, players=5))
        task = asyncio.create_task(traffic(cluster, stop))
        await asyncio.sleep(2.0)
        async with (
            aiohttp.ClientSession() as http,  # the audit gauges are set by a verification
            http.post(f"{cluster.url('ledger')}/admin/v1/audit/verify", headers=cluster.headers("admin_write")) as r,
        ):
            assert r.status == 200
        async with (  # a named event consumer: its lag and dead-letter series exist from then on
            aiohttp.ClientSession() as http,
            http.put(
                f"{cluster.url('ledger')}/admin/v1/consumers/live-test",
                json={"description": "live metrics"},
                headers=cluster.headers("admin_write"),
            ) as r,
        ):
            assert r.status == 201, await r.text()
        yield cluster
    finally:
        stop.set()
        if task is not None:
            with contextlib.suppress(Exception):
                await task
        await cluster.stop()


async def test_every_metric_named_in_rules_and_dashboards_is_exported_by_a_live_process(live):
    targets = [live.url("ledger"), live.url(STANDBY), *(live.url(e) for e in live.edge_ids)]
    names = await scraped_names(targets, live.tokens["metrics"])
    assert unexported_names(all_expressions(), names, recorded_names(), contract.PROMETHEUS_SERIES) == {}


async def test_every_dashboard_and_recording_query_returns_data_from_prometheus_on_the_live_cluster(live):
    async with running_prometheus(live.root, free_port()) as prom:
        await wait_targets_up(prom, expected=5)
        # Alerts and annotations are conditions, false on a healthy cluster.
        exprs = [e for e in all_expressions() if "alerts" not in e.source and ":annotation:" not in e.source]
        assert await expressions_without_data(prom, exprs) == []
