"""A real Prometheus scrapes (with the metrics bearer token) stand-in ledger and edge processes that
export exactly the contract's metrics, evaluates the shipped rules, and every dashboard and rule
query returns data. The same helpers run against a live `croupier up` cluster.

The stand-in proves only that the queries parse and select what the contract names; that the real
code emits those names and label values is tests/monitoring/test_emitted_labels.py's job."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from harness.cluster import free_port
from monitoring import contract
from monitoring.prom import expressions_without_data, running_prometheus, scraped_names, wait_targets_up
from monitoring.promql import all_expressions

TOKEN = "e2e-metrics-token"


# Label values some rules select (the SLO rules read money routes); every other label is "x".
LABEL_VALUES = {"route": "/v1/bets", "method": "POST", "status": "503", "code": "ledger_unavailable"}


class ContractExporter:
    """Every metric of `specs`, moved on each scrape so that rates and quantiles have data."""

    def __init__(self, specs: tuple[contract.MetricSpec, ...]) -> None:
        self.registry = CollectorRegistry()
        self.metrics = []
        for spec in specs:
            cls = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}[spec.kind]
            name = spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name
            self.metrics.append((spec, cls(name, spec.name, list(spec.labels), registry=self.registry)))

    def step(self) -> None:
        for spec, metric in self.metrics:
            outcomes = ["ok", *contract.EDGE_LEDGER_OUTCOMES_UNANSWERED] if "outcome" in spec.labels else ["ok"]
            for outcome in outcomes:
                values = [outcome if label == "outcome" else LABEL_VALUES.get(label, "x") for label in spec.labels]
                child = metric.labels(*values) if spec.labels else metric
                {"counter": lambda c: c.inc(), "gauge": lambda g: g.set(1), "histogram": lambda h: h.observe(0.01)}[
                    spec.kind
                ](child)

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401)
        self.step()
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")


@pytest.fixture
async def fake_cluster(tmp_path: Path) -> AsyncIterator[Path]:
    runners, urls = [], {}
    specs = {"ledger": contract.LEDGER_METRICS, "eu": contract.EDGE_METRICS}
    try:
        for name, own in specs.items():
            app = web.Application()
            app.router.add_get("/metrics", ContractExporter(own + contract.COMMON_METRICS).handle)
            runner = web.AppRunner(app)
            await runner.setup()
            runners.append(runner)
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            urls[name] = f"http://127.0.0.1:{port}"
        (tmp_path / "secrets").mkdir()
        (tmp_path / "secrets" / "metrics.token").write_text(TOKEN)
        (tmp_path / "cluster.json").write_text(
            json.dumps({"ledger": {"url": urls["ledger"]}, "edges": [{"id": "eu", "url": urls["eu"]}]})
        )
        yield tmp_path
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest.mark.slow
async def test_every_dashboard_and_rule_query_returns_data_from_a_real_prometheus(fake_cluster):
    cluster = json.loads((fake_cluster / "cluster.json").read_text())
    targets = [cluster["ledger"]["url"], *(e["url"] for e in cluster["edges"])]
    assert contract.exported_sample_names() <= await scraped_names(targets, TOKEN)
    async with running_prometheus(fake_cluster, free_port()) as prom:
        await wait_targets_up(prom, expected=2)
        # Alerts and annotations are conditions that should be false on healthy data: check the series
        # they read instead.
        exprs = [e for e in all_expressions() if "alerts" not in e.source and ":annotation:" not in e.source]
        assert await expressions_without_data(prom, exprs) == []
