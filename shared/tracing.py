"""W3C trace context with OpenTelemetry: one span per HTTP request on both services, and the edge's
calls to the ledger continuing the trace of the request that caused them.

Off by default: with no `tracing_otlp_endpoint` a service gets `OFF`, which creates no OpenTelemetry
SDK object, adds no middleware and sends no `traceparent` header. On, a service gets its own
`TracerProvider` (service name, parent-based ratio sampler) exporting spans in batches over OTLP/HTTP;
tests pass their own exporter (e.g. the SDK's in-memory one) instead. Each service holds its own
provider, never the process-global one, so a ledger and an edge in one process trace apart.

Server side (`Tracing.middleware`, outermost): the caller's `traceparent`/`tracestate` are extracted,
and a SERVER span named after the route template (`POST /v1/bets`) covers the request, with the
method, route, status, problem `code`, request id and principal name as attributes.

Client side (`Tracing.client_call`): a CLIENT span whose context is injected into the outgoing headers.
The edge sends money actions in batches from a dispatcher task, outside the request's context: each
action captures its context when queued (`Tracing.capture`); the batch span is a child of the first
action's context and links to the others'.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Counter

from shared.configspec import Key
from shared.web import ERROR_CODE, PRINCIPAL, REQUEST_ID, Handler, route_name

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = structlog.get_logger("croupier.tracing")

PROPAGATOR = TraceContextTextMapPropagator()  # W3C `traceparent` and `tracestate`, nothing else
EXPORT_RESULTS = ("ok", "failed")


class TraceMetrics:
    """Registered on every service, tracing on or off (a scrape always shows the series)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.spans_exported_total = Counter(
            "trace_spans_exported_total",
            "Spans handed to the trace exporter, by result (failed: lost).",
            ["result"],
            registry=registry,
        )
        for result in EXPORT_RESULTS:
            self.spans_exported_total.labels(result)


def tracing_keys(default_service_name: str, default_meaning: str = "") -> tuple[Key, ...]:
    """The tracing keys of a service's config table."""
    return (
        Key(
            "tracing_otlp_endpoint",
            str,
            "",
            "OTLP/HTTP traces URL of a collector (e.g. "
            "`http://127.0.0.1:4318/v1/traces`); unset: tracing off, no `traceparent` sent.",
        ),
        Key(
            "tracing_service_name",
            str,
            default_service_name,
            "`service.name` of this service's spans" + (f"; unset: {default_meaning}." if default_meaning else "."),
        ),
        Key(
            "tracing_sample_ratio",
            float,
            1.0,
            "Share of new traces recorded (a caller's sampled flag wins).",
            minimum=0,
            maximum=1,
        ),
    )


@dataclass
class ClientCall:
    """One outgoing request: headers to add (the trace context) and, when tracing, its span."""

    headers: dict[str, str] = field(default_factory=dict)
    span: trace.Span | None = None

    def answered(self, status: int) -> None:
        if self.span is not None:
            self.span.set_attribute("http.response.status_code", status)
            if status >= 500:
                self.span.set_status(trace.StatusCode.ERROR)


class Tracing:
    """A service's tracing: `OFF`, or a tracer of its own provider."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("croupier") if provider is not None else None

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def middlewares(self) -> list[Any]:
        """The server middleware to put outermost (none when off)."""
        return [self._middleware] if self.enabled else []

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        assert self._tracer is not None
        route = route_name(request)
        parent = PROPAGATOR.extract(request.headers)
        with self._tracer.start_as_current_span(
            f"{request.method} {route}", context=parent, kind=trace.SpanKind.SERVER
        ) as span:
            span.set_attribute("http.request.method", request.method)
            span.set_attribute("http.route", route)
            status = 500
            try:
                resp = await handler(request)
                status = resp.status
                return resp
            finally:
                span.set_attribute("http.response.status_code", status)
                for attribute, value in (
                    ("croupier.error_code", request.get(ERROR_CODE)),
                    ("croupier.request_id", request.get(REQUEST_ID)),
                ):
                    if value is not None:
                        span.set_attribute(attribute, value)
                who = request.get(PRINCIPAL)
                if who is not None:
                    span.set_attribute("croupier.principal", who.name)
                if status >= 500:
                    span.set_status(trace.StatusCode.ERROR)

    def capture(self) -> otel_context.Context | None:
        """The current trace context, to continue later in another task (None when off)."""
        return otel_context.get_current() if self.enabled else None

    @contextlib.contextmanager
    def client_call(
        self,
        method: str,
        url: str,
        name: str,
        *,
        parent: otel_context.Context | None = None,
        links: Sequence[otel_context.Context | None] = (),
        root: bool = True,
    ) -> Iterator[ClientCall]:
        """A CLIENT span around one outgoing request (a child of `parent`, else of the current context)
        whose context its headers carry; when off, or outside any trace with `root` false, no span and no
        headers."""
        outside = not trace.get_current_span(parent).get_span_context().is_valid
        if self._tracer is None or (outside and not root):
            yield ClientCall()
            return
        span_links = [trace.Link(trace.get_current_span(c).get_span_context()) for c in links if c is not None]
        with self._tracer.start_as_current_span(
            name, context=parent, kind=trace.SpanKind.CLIENT, links=[lk for lk in span_links if lk.context.is_valid]
        ) as span:
            span.set_attribute("http.request.method", method)
            span.set_attribute("url.full", url)
            call = ClientCall(span=span)
            PROPAGATOR.inject(call.headers)
            yield call

    def shutdown(self) -> None:
        """Export what is buffered and stop (at service stop)."""
        if self._provider is not None:
            self._provider.shutdown()


OFF = Tracing()


def counting(exporter: SpanExporter, metrics: TraceMetrics) -> SpanExporter:
    """`exporter`, counting the spans it exported and those it failed to (lost)."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class CountingExporter(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            try:
                result = exporter.export(spans)
            except Exception:  # an exporter bug must not stop the export thread; counted as lost
                log.exception("trace_export_failed", spans=len(spans))
                result = SpanExportResult.FAILURE
            ok = result is SpanExportResult.SUCCESS
            metrics.spans_exported_total.labels("ok" if ok else "failed").inc(len(spans))
            return result

        def shutdown(self) -> None:
            exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return exporter.force_flush(timeout_millis)

    return CountingExporter()


def setup(
    endpoint: str,
    service_name: str,
    sample_ratio: float,
    *,
    metrics: TraceMetrics | None = None,
    exporter: SpanExporter | None = None,
) -> Tracing:
    """`OFF` when neither an OTLP endpoint nor an exporter is given; else a provider exporting to the
    endpoint (in batches) or to `exporter` (at once: tests), counted by `metrics` when given."""
    if not endpoint and exporter is None:
        return OFF
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    def counted(inner: SpanExporter) -> SpanExporter:
        return counting(inner, metrics) if metrics is not None else inner

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}), sampler=ParentBased(TraceIdRatioBased(sample_ratio))
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(counted(exporter)))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(counted(OTLPSpanExporter(endpoint=endpoint))))
    log.info("tracing_enabled", service_name=service_name, otlp_endpoint=endpoint or None, sample_ratio=sample_ratio)
    return Tracing(provider)
