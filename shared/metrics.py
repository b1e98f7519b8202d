"""Prometheus helpers: every process gets its own registry (injected, so tests use fresh ones)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

# Buckets in seconds, tuned for sub-millisecond loopback calls up to multi-second outages.
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.request_duration_seconds = Histogram(
            "http_request_duration_seconds",
            "HTTP request handling time by route template, method and status.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
