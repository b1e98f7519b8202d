"""Prometheus helpers: every process gets its own registry (injected, so tests use fresh ones)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Buckets in seconds, tuned for sub-millisecond loopback calls up to multi-second outages.
LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
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
        # Client connections (shared/http_serving.py): open now, and refused for being one too many.
        self.connections_open = Gauge(
            "http_connections_open", "Client connections this process (and its fronts) hold open.", registry=registry
        )
        # What holds connections: this process's listener, and the ledger's fronts as they report.
        self.connection_sources: list[Callable[[], int]] = []
        self.connections_open.set_function(lambda: sum(source() for source in self.connection_sources))
        self.connections_refused_total = Counter(
            "http_connections_refused_total",
            "Client connections answered 503 too_many_connections and closed: http_connections_max were open.",
            registry=registry,
        )
        # The series of each (route, method, status), bound once: `.labels()` per request costs as
        # much as the observation itself. As many entries as the histogram has series.
        self._request_duration: dict[tuple[str, str, int], Any] = {}

    def request_duration(self, route: str, method: str, status: int) -> Any:
        """The `http_request_duration_seconds` series of this route, method and status."""
        key = (route, method, status)
        series = self._request_duration.get(key)
        if series is None:
            series = self._request_duration[key] = self.request_duration_seconds.labels(route, method, str(status))
        return series


def histogram_quantile(rows: list[tuple[float, float]], q: float) -> float | None:
    """Like PromQL's histogram_quantile: linear interpolation inside the bucket holding rank q."""
    total = rows[-1][1] if rows else 0
    if not total:
        return None
    rank, lower_le, lower_count = q * total, 0.0, 0.0
    for le, count in rows:
        if count >= rank:
            if le == float("inf"):
                return lower_le
            return lower_le + (le - lower_le) * (rank - lower_count) / max(count - lower_count, 1e-9)
        lower_le, lower_count = le, count
    return lower_le
