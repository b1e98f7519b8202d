"""Metric names in rules and dashboards: extraction from PromQL, agreement with the metrics contract,
and the comparison against a scraped /metrics text that the live-cluster check uses."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from monitoring.contract import PROMETHEUS_SERIES, exported_sample_names
from monitoring.promql import (
    Expression,
    all_expressions,
    exposition_sample_names,
    metric_names,
    recorded_names,
    unexported_names,
)


@pytest.mark.parametrize(
    "expr, names",
    [
        (
            'sum by (type, outcome) (rate(ledger_transactions_total{outcome="ok"}[$__rate_interval]))',
            {"ledger_transactions_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (instance, le) (rate(edge_sync_lag_seconds_bucket[5m])))",
            {"edge_sync_lag_seconds_bucket"},
        ),
        (
            "(time() - edge_sync_last_success_timestamp_seconds) > 120 and edge_sync_pending_updates > 0",
            {"edge_sync_last_success_timestamp_seconds", "edge_sync_pending_updates"},
        ),
        ('up{job="croupier-ledger", instance=~"a:1|b"} == 0 unless on (instance) foo offset 5m', {"up", "foo"}),
        ("a:b:rate1m / ignoring(x) group_left(y) c * 1e3 > bool 0.5", {"a:b:rate1m", "c"}),
        ('label_replace(x_total, "dst", "$1", "src", "by (.*)")', {"x_total"}),
    ],
)
def test_metric_names_ignores_functions_keywords_labels_strings_and_numbers(expr, names):
    assert metric_names(expr) == names


def test_every_name_in_rules_and_dashboards_is_in_the_contract_or_recorded():
    missing = unexported_names(all_expressions(), set(exported_sample_names()), recorded_names(), PROMETHEUS_SERIES)
    assert missing == {}


def test_unexported_names_reports_what_a_scrape_lacks_with_where_it_is_used():
    registry = CollectorRegistry()
    Counter("ledger_transactions", "t", ["type", "outcome"], registry=registry).labels("bet", "ok").inc()
    Histogram("ledger_commit_duration_seconds", "d", registry=registry).observe(0.01)
    scraped = exposition_sample_names(generate_latest(registry).decode())
    assert {"ledger_transactions_total", "ledger_commit_duration_seconds_bucket"} <= scraped
    exprs = [
        Expression("a", "rate(ledger_transactions_total[1m])"),
        Expression("b", "rate(ledger_conflicts_total[1m]) + rate(ledger_commit_duration_seconds_count[1m])"),
        Expression("c", "x:recorded + up"),
    ]
    assert unexported_names(exprs, scraped, {"x:recorded"}, PROMETHEUS_SERIES) == {"ledger_conflicts_total": ["b"]}
