"""W3C trace context across edge and ledger (shared/tracing.py): one bet through the edge is one trace
whose ledger span descends from the edge's request span; with tracing off, no span and no `traceparent`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import tracing

from core_ledger.app import create_app as create_ledger_app
from edge.app import create_app as create_edge_app
from harness.cluster import free_port
from tests.support.clock import FakeClock
from tests.support.edges import Edges
from tests.support.ledger import TOKENS, ledger_config
from tests.support.real_ledger_traffic import numbered_bet, post_raw, setup_player

Json = dict[str, Any]


@asynccontextmanager
async def services(
    tmp_path: Path, ledger_tracing: tracing.Tracing, edge_tracing: tracing.Tracing, seen_headers: list[dict[str, str]]
) -> AsyncIterator[tuple[TestServer, str]]:
    """A ledger and an edge in process; `seen_headers` gets the headers of every ledger request."""

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        seen_headers.append({k.lower(): v for k, v in request.headers.items()})
        return await handler(request)

    ledger_app = create_ledger_app(ledger_config(tmp_path / "ledger"), clock=FakeClock(), tracing=ledger_tracing)
    ledger_app.middlewares.insert(0, record)
    ledger = TestServer(ledger_app, host="127.0.0.1")
    await ledger.start_server()
    edges = Edges(tmp_path, str(ledger.make_url("")).rstrip("/"), {"eu": free_port()})
    edge = TestServer(
        create_edge_app(edges.config("eu", ledger_token=TOKENS["edge"]), tracing=edge_tracing),
        host="127.0.0.1",
        port=edges.ports["eu"],
    )
    await edge.start_server()
    try:
        yield ledger, edges.url("eu")
    finally:
        await edge.close()
        await ledger.close()


@pytest.fixture
def as_role_on() -> Callable[[TestServer, aiohttp.ClientSession], Callable[..., Awaitable[tuple[int, Json]]]]:
    def bind(ledger: TestServer, http: aiohttp.ClientSession) -> Callable[..., Awaitable[tuple[int, Json]]]:
        async def call(role: str, path: str, body: Json) -> tuple[int, Json]:
            async with http.post(
                ledger.make_url(path), json=body, headers={"Authorization": f"Bearer {TOKENS[role]}"}
            ) as r:
                return r.status, await r.json()

        return call

    return bind


async def post_raw_headers(
    http: aiohttp.ClientSession, url: str, data: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    async with http.post(url, data=data, headers=headers) as resp:
        return resp.status, await resp.read()


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


async def test_one_bet_through_the_edge_is_one_trace_from_the_edge_request_to_the_ledger_commit(
    tmp_path: Path, http: aiohttp.ClientSession, as_role_on: Any
) -> None:
    ledger_spans, edge_spans = InMemorySpanExporter(), InMemorySpanExporter()
    ledger_tracing = tracing.setup("", "croupier-ledger", 1.0, exporter=ledger_spans)
    edge_tracing = tracing.setup("", "croupier-edge-eu", 1.0, exporter=edge_spans)
    seen: list[dict[str, str]] = []
    async with services(tmp_path, ledger_tracing, edge_tracing, seen) as (ledger, edge_url):
        await setup_player(as_role_on(ledger, http))
        ledger_spans.clear()
        seen.clear()
        status, body = await post_raw(http, edge_url + "/v1/bets", numbered_bet(1, 500), "trace-bet-1")
        assert status == 201, body

    edge_request = by_name(edge_spans.get_finished_spans(), "POST /v1/bets")
    batch_call = by_name(edge_spans.get_finished_spans(), "POST /v1/batch")
    ledger_request = by_name(ledger_spans.get_finished_spans(), "POST /v1/batch")
    assert edge_request.resource.attributes["service.name"] == "croupier-edge-eu"
    assert ledger_request.resource.attributes["service.name"] == "croupier-ledger"
    trace_id = edge_request.context.trace_id
    assert batch_call.context.trace_id == ledger_request.context.trace_id == trace_id
    # The ledger's span → the edge's client span of the batch → the edge's request span (the root).
    assert ledger_request.parent is not None and ledger_request.parent.span_id == batch_call.context.span_id
    assert batch_call.parent is not None and batch_call.parent.span_id == edge_request.context.span_id
    assert edge_request.parent is None
    assert edge_request.attributes["http.route"] == "/v1/bets"
    assert edge_request.attributes["http.response.status_code"] == 201
    assert edge_request.attributes["croupier.request_id"] == "trace-bet-1"
    assert ledger_request.attributes["croupier.principal"] == "edge-1"
    batch_headers = [h for h in seen if "traceparent" in h]
    assert batch_headers and all(h["traceparent"].split("-")[1] == f"{trace_id:032x}" for h in batch_headers)


async def test_a_caller_traceparent_is_continued_and_an_error_code_is_recorded(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    ledger_spans = InMemorySpanExporter()
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = {"traceparent": caller, "Authorization": f"Bearer {TOKENS['edge']}"}
    async with services(
        tmp_path, tracing.setup("", "croupier-ledger", 0.0, exporter=ledger_spans), tracing.OFF, []
    ) as (ledger, _):
        status, _ = await post_raw_headers(http, str(ledger.make_url("/v1/bets")), b"{not json", headers)
        assert status == 400
    span = by_name(ledger_spans.get_finished_spans(), "POST /v1/bets")
    assert f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"  # sampled by the caller's flag
    assert span.parent is not None and f"{span.parent.span_id:016x}" == "b7ad6b7169203331"
    assert span.attributes["croupier.error_code"] == "malformed_json"
    assert span.attributes["http.response.status_code"] == 400


async def test_with_tracing_off_no_span_is_made_and_no_traceparent_is_sent(
    tmp_path: Path, http: aiohttp.ClientSession, as_role_on: Any
) -> None:
    ledger_tracing = tracing.setup("", "croupier-ledger", 1.0)
    edge_tracing = tracing.setup("", "croupier-edge-eu", 1.0)
    assert ledger_tracing is tracing.OFF and edge_tracing is tracing.OFF and not tracing.OFF.middlewares()
    seen: list[dict[str, str]] = []
    async with services(tmp_path, ledger_tracing, edge_tracing, seen) as (ledger, edge_url):
        await setup_player(as_role_on(ledger, http))
        status, body = await post_raw(http, edge_url + "/v1/bets", numbered_bet(1, 500))
        assert status == 201, body
    assert any(h.get("authorization") == f"Bearer {TOKENS['edge']}" for h in seen)  # the edge's calls were seen
    assert not [h for h in seen if "traceparent" in h or "tracestate" in h]


def test_the_tracing_keys_are_read_checked_and_build_an_otlp_exporting_provider(tmp_path: Path) -> None:
    from shared.config import ConfigError

    from core_ledger.config import parse

    cfg = parse(
        {"ledger": {"tracing_otlp_endpoint": "http://127.0.0.1:4318/v1/traces", "tracing_sample_ratio": 0.25}}, tmp_path
    )
    assert (cfg.tracing_otlp_endpoint, cfg.tracing_service_name, cfg.tracing_sample_ratio) == (
        "http://127.0.0.1:4318/v1/traces",
        "croupier-ledger",
        0.25,
    )
    with pytest.raises(ConfigError, match="tracing_sample_ratio"):
        parse({"ledger": {"tracing_sample_ratio": 1.5}}, tmp_path)
    on = tracing.setup(cfg.tracing_otlp_endpoint, cfg.tracing_service_name, cfg.tracing_sample_ratio)
    try:
        assert on.enabled and on.middlewares()
    finally:
        on.shutdown()  # nothing was recorded: nothing is sent


def test_spans_the_exporter_loses_are_counted_and_those_it_sends_too() -> None:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from prometheus_client import CollectorRegistry

    class Refusing(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.FAILURE

    class Broken(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            raise RuntimeError("exporter bug")

    registry = CollectorRegistry()
    metrics = tracing.TraceMetrics(registry)

    def count(result: str) -> float | None:
        return registry.get_sample_value("trace_spans_exported_total", {"result": result})

    assert (count("ok"), count("failed")) == (0.0, 0.0)  # shown before any span
    for exporter in (Refusing(), Broken(), InMemorySpanExporter()):
        on = tracing.setup("", "croupier-ledger", 1.0, metrics=metrics, exporter=exporter)
        with on.client_call("GET", "http://127.0.0.1:1/readyz", "GET readyz"):
            pass
        on.shutdown()
    assert (count("ok"), count("failed")) == (1.0, 2.0)
