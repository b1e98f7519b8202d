"""Grafana dashboards as code (grafana-foundation-sdk 11.6, Grafana 11.6 or later): `python -m
monitoring.dashboards` writes monitoring/grafana/dashboards/*.json. Output is deterministic (fixed uids,
ids, sorted keys) so that a test can regenerate it and fail on any diff with the committed JSON.

Every dashboard has a `datasource` variable (default: the provisioned Prometheus) and a `region`
variable (edge queries filter on it), and annotations that mark ledger promotions, fences and process
restarts from metric changes. Queries use raw metrics from monitoring.contract or recording rules, so
every name can be checked against a live scrape.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from monitoring.promql import DASHBOARDS_DIR

GRAFANA_VERSION = "11.6.0"  # what the pinned grafana-foundation-sdk (11.6.0) targets
PROVISIONED_DATASOURCE_UID = "croupier-prometheus"  # grafana/provisioning/datasources/prometheus.yml
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
REGION = 'region=~"$region"'
JOB = 'job=~"$job"'
# The money SLOs (monitoring/prometheus/rules/croupier-recording.yml, docs/runbooks/money-slo.md).
AVAILABILITY_BUDGET = 0.001
LATENCY_BUDGET = 0.01
LATENCY_OBJECTIVE_S = "0.25"
MONEY_ROUTES = "/v1/bets|/v1/wins|/v1/rollbacks|/v1/jackpot-payouts|/v1/bonus-claims"
RATE = "$__rate_interval"
PANEL_HEIGHT = 8


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


def _target(ref_id: str, q: Query, fmt: PromQueryFormat = PromQueryFormat.TIME_SERIES) -> prometheus.Dataquery:
    return prometheus.Dataquery().ref_id(ref_id).expr(q.expr).legend_format(q.legend).format(fmt).datasource(DATASOURCE)


def _with_targets(panel, queries: list[Query], fmt: PromQueryFormat = PromQueryFormat.TIME_SERIES):
    for i, q in enumerate(queries):
        panel = panel.with_target(_target(chr(ord("A") + i), q, fmt))
    return panel


def graph(title: str, description: str, unit: str, queries: list[Query], width: int = 12):
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(PANEL_HEIGHT)
        .span(width)
    )
    return _with_targets(panel, queries)


def single_stat(title: str, description: str, unit: str, queries: list[Query], width: int = 6):
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(PANEL_HEIGHT)
        .span(width)
    )
    return _with_targets(panel, queries)


def histogram_heatmap(title: str, description: str, bucket_metric: str, width: int = 12):
    """A heatmap of a Prometheus histogram's buckets, as Grafana expects them (format=heatmap)."""
    q = Query(f"sum by (le) (rate({bucket_metric}[{RATE}]))", "{{le}}")
    panel = (
        heatmap.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .height(PANEL_HEIGHT)
        .span(width)
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit("s"))
    )
    return _with_targets(panel, [q], PromQueryFormat.HEATMAP)


def quantiles(metric: str, by: str, legend: str, matchers: str = "") -> list[Query]:
    """p50 and p99 of a histogram, per `by` labels, of the series `matchers` select."""
    group = f"{by}, le" if by else "le"
    selector = f"{{{matchers}}}" if matchers else ""
    return [
        Query(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{selector}[{RATE}])))",
            f"p{int(q * 100)} {legend}".strip(),
        )
        for q in (0.5, 0.99)
    ]


def _variables() -> list:
    datasource = (
        dashboard.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .current(VariableOption(selected=True, text="Croupier Prometheus", value=PROVISIONED_DATASOURCE_UID))
    )
    region = (
        dashboard.QueryVariable("region")
        .label("Region")
        .description("Edge regions (the edge id).")
        .datasource(DATASOURCE)
        .query('label_values(up{job="croupier-edge"}, region)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )
    job = (
        dashboard.CustomVariable("job")
        .label("Service")
        .values("croupier-ledger,croupier-edge")
        .multi(True)
        .include_all(True)
        .all_value("croupier-.*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )
    return [datasource, region, job]


# Events read from metric changes, shown on every time series panel.
ANNOTATIONS = (
    ("Ledger promoted (epoch raised)", "orange", "changes(ledger_epoch[1m]) > 0"),
    ("Ledger fenced or unfenced", "red", "changes(ledger_fenced[1m]) > 0"),
    ("Process restarted", "blue", f"changes(process_start_time_seconds{{{JOB}}}[1m]) > 0"),
)


def _annotation(name: str, color: str, expr: str) -> dashboard.AnnotationQuery:
    return dashboard.AnnotationQuery().name(name).datasource(DATASOURCE).enable(True).icon_color(color).expr(expr)


def _dashboard(uid: str, title: str, description: str, panels: list) -> dashboard.Dashboard:
    d = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["croupier"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("utc")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .readonly()
    )
    for variable in _variables():
        d = d.with_variable(variable)
    for name, color, expr in ANNOTATIONS:
        d = d.annotation(_annotation(name, color, expr))
    for panel_id, panel in enumerate(panels, start=1):
        d = d.with_panel(panel.id(panel_id))
    return d


def money_dashboard() -> dashboard.Dashboard:
    return _dashboard(
        "croupier-money",
        "Croupier — money and ledger",
        "Money throughput, ledger commits, idempotency, replication and liabilities.",
        [
            graph(
                "Money throughput by type and outcome",
                "Ledger transactions per second.",
                "ops",
                [Query(f"sum by (type, outcome) (rate(ledger_transactions_total[{RATE}]))", "{{type}} {{outcome}}")],
            ),
            graph(
                "Edge money requests by operation and status",
                "Game-server money calls per second at each edge.",
                "reqps",
                [
                    Query(
                        f"sum by (region, operation, status) (rate(edge_money_requests_total{{{REGION}}}[{RATE}]))",
                        "{{region}} {{operation}} {{status}}",
                    )
                ],
            ),
            graph(
                "Edge money errors by code",
                "Money requests answered with an error, by stable code (`other`: a code this edge does not know).",
                "reqps",
                [
                    Query(
                        f"sum by (region, operation, code) (rate(edge_money_errors_total{{{REGION}}}[{RATE}]))",
                        "{{region}} {{operation}} {{code}}",
                    )
                ],
            ),
            graph(
                "Ledger commit latency",
                "Group-commit duration (one storage transaction per batch).",
                "s",
                quantiles("ledger_commit_duration_seconds", "", ""),
            ),
            graph(
                "Ledger WAL checkpoints (SQLite)",
                "A background checkpoint round every 0.5 s, and the writer's pass that ends it (commits wait for "
                "that pass; docs/decisions/sqlite-wal-starts-over.md).",
                "s",
                [
                    *quantiles("ledger_wal_checkpoint_duration_seconds", "", "round"),
                    *quantiles("ledger_wal_checkpoint_writer_seconds", "", "writer's pass"),
                ],
            ),
            graph(
                "Ledger commit batch size",
                "Requests committed per storage transaction.",
                "none",
                [
                    *quantiles("ledger_commit_batch_size", "", ""),
                    Query(
                        f"sum(rate(ledger_commit_batch_size_sum[{RATE}])) / "
                        f"sum(rate(ledger_commit_batch_size_count[{RATE}]))",
                        "mean",
                    ),
                ],
            ),
            graph(
                "Edge → ledger latency",
                "Money calls as seen from each edge, per operation.",
                "s",
                quantiles(
                    "edge_ledger_request_duration_seconds", "region, operation", "{{region}} {{operation}}", REGION
                ),
            ),
            graph(
                "Idempotent replays and conflicts",
                "Retries answered from the idempotency record, and refusals "
                "by reason (idempotency key reused, version conflict...).",
                "ops",
                [
                    Query(f"sum(rate(ledger_idempotent_replays_total[{RATE}]))", "replays"),
                    Query(f"sum by (reason) (rate(ledger_conflicts_total[{RATE}]))", "conflict {{reason}}"),
                ],
            ),
            graph(
                "Replica lag",
                "How far each standby is behind the primary.",
                "none",
                [
                    Query("ledger_replica_lag_sequences", "{{instance}} entries"),
                    Query("ledger_replica_lag_seconds", "{{instance}} seconds"),
                ],
            ),
            graph(
                "Commit failures",
                "Storage commits that failed; any is an incident.",
                "ops",
                [Query(f"sum(rate(ledger_commit_failures_total[{RATE}]))", "failures")],
            ),
            graph(
                "Liabilities by kind and currency",
                "What the operator owes, in minor units, sampled on the "
                "primary: player balances, jackpot pools, bonus granted (part of player balances).",
                "none",
                [Query('max by (kind, currency) (ledger_liabilities_minor{role!="standby"})', "{{kind}} {{currency}}")],
            ),
            single_stat(
                "Journal head sequence",
                "Last committed journal sequence.",
                "none",
                [Query("max(ledger_journal_head_sequence)", "head")],
            ),
            single_stat(
                "Audit chain",
                "1: the last hash-chain verification passed; 0: broken.",
                "bool",
                [Query("min(ledger_audit_chain_ok)", "chain ok")],
            ),
            single_stat(
                "Since last audit",
                "Age of the last hash-chain verification.",
                "s",
                [Query("time() - max(ledger_audit_last_verified_timestamp_seconds)", "age")],
            ),
            single_stat(
                "Targets up",
                "Scraped processes that answer /metrics.",
                "none",
                [Query('sum(up{job=~"croupier-.*"})', "up")],
            ),
        ],
    )


def edges_dashboard() -> dashboard.Dashboard:
    return _dashboard(
        "croupier-edges",
        "Croupier — edges and sync",
        "CRDT sync between edges, display drift and HTTP traffic.",
        [
            histogram_heatmap(
                "Sync lag (all peers)", "Origin write → applied here.", f"edge_sync_lag_seconds_bucket{{{REGION}}}"
            ),
            graph(
                "Sync lag per peer",
                "Origin write → applied here, per receiving edge and origin peer.",
                "s",
                quantiles("edge_sync_lag_seconds", "region, peer", "{{region}} ← {{peer}}", REGION),
            ),
            graph(
                "Peers up",
                "1 when the sync link to the peer is up.",
                "none",
                [Query(f"edge_sync_peer_up{{{REGION}}}", "{{region}} → {{peer}}")],
            ),
            graph(
                "Since last successful sync",
                "Per edge and peer.",
                "s",
                [Query(f"time() - edge_sync_last_success_timestamp_seconds{{{REGION}}}", "{{region}} → {{peer}}")],
            ),
            graph(
                "Pending updates per peer",
                "Updates known missing from the peer's state vector.",
                "none",
                [Query(f"edge_sync_pending_updates{{{REGION}}}", "{{region}} ← {{peer}}")],
            ),
            graph(
                "Display drift",
                "CRDT display minus ledger truth after reconciliation (minor units).",
                "none",
                [Query(f"edge_display_drift_minor{{{REGION}}}", "{{region}} {{kind}}")],
            ),
            graph(
                "CRDT updates by doc and origin",
                "Updates applied per second.",
                "ops",
                [
                    Query(
                        f"sum by (region, doc, origin) (rate(edge_crdt_updates_total{{{REGION}}}[{RATE}]))",
                        "{{region}} {{doc}} {{origin}}",
                    )
                ],
            ),
            graph(
                "Ledger breakers open",
                "1 while the edge's breaker for the ledger URL at that position of ledger_urls is open.",
                "none",
                [Query(f"edge_ledger_breaker_open{{{REGION}}}", "{{region}} url #{{url_index}}")],
            ),
            graph(
                "HTTP requests by route and status",
                "Every process, per route template.",
                "reqps",
                [
                    Query(
                        f"sum by (job, route, status) (rate(http_request_duration_seconds_count[{RATE}]))",
                        "{{job}} {{route}} {{status}}",
                    )
                ],
            ),
            graph(
                "HTTP latency p99 by route",
                "Every process, per route template.",
                "s",
                [
                    Query(
                        f"histogram_quantile(0.99, sum by (job, route, le) "
                        f"(rate(http_request_duration_seconds_bucket[{RATE}])))",
                        "{{job}} {{route}}",
                    )
                ],
            ),
        ],
    )


def or_zero(counter: str, bad: str, matchers: str, by: str) -> str:
    """The rate of a counter's `bad` series per `by` labels, and 0 (not "no data") for the groups
    that have series but none of them bad."""
    return (
        f"sum by ({by}) (rate({counter}{{{bad}, {matchers}}}[{RATE}])) "
        f"or 0 * sum by ({by}) (rate({counter}{{{matchers}}}[{RATE}]))"
    )


def _ratio_30d(bad: str, total: str) -> str:
    """Share of `bad` in `total` over 30 days per region; 0 (not absent) when nothing is bad."""
    return (
        f"((sum by (region) (rate({bad}[30d])) or 0 * sum by (region) (rate({total}[30d])))"
        f" / sum by (region) (rate({total}[30d])))"
    )


def slo_dashboard() -> dashboard.Dashboard:
    errors = _ratio_30d(
        f'edge_money_requests_total{{status=~"5..", {REGION}}}', f"edge_money_requests_total{{{REGION}}}"
    )
    money = f'job="croupier-edge", method="POST", route=~"{MONEY_ROUTES}", {REGION}'
    within = f'{money}, le="{LATENCY_OBJECTIVE_S}"'
    fast_share = (
        f"(sum by (region) (rate(http_request_duration_seconds_bucket{{{within}}}[30d]))"
        f" / sum by (region) (rate(http_request_duration_seconds_count{{{money}}}[30d])))"
    )
    windows = ("1h", "6h", "1d", "3d")
    return _dashboard(
        "croupier-slo",
        "Croupier — money SLOs",
        "Availability (99.9% of money requests without a 5xx) and latency (99% within 250 ms) "
        "at the edges over 30 days, with the error budget left and burn rates "
        "(docs/runbooks/money-slo.md).",
        [
            single_stat(
                "Availability, 30 days",
                "Share of money requests answered without a 5xx (objective 99.9%).",
                "percentunit",
                [Query(f"1 - {errors}", "{{region}}")],
            ),
            single_stat(
                "Availability budget left",
                "Share of the 30-day error budget (0.1% of requests) not spent; below 0 the objective is missed.",
                "percentunit",
                [Query(f"1 - {errors} / {AVAILABILITY_BUDGET}", "{{region}}")],
            ),
            single_stat(
                "Within 250 ms, 30 days",
                "Share of money requests answered within 250 ms (objective 99%).",
                "percentunit",
                [Query(fast_share, "{{region}}")],
            ),
            single_stat(
                "Latency budget left",
                "Share of the 30-day latency budget (1% of requests) not spent.",
                "percentunit",
                [Query(f"1 - (1 - {fast_share}) / {LATENCY_BUDGET}", "{{region}}")],
            ),
            graph(
                "Availability burn rate",
                "Error ratio over the alert windows divided by the budget: 1 spends the "
                "budget in exactly 30 days; the fast alert pages at 14.4 (1h) or 6 (6h).",
                "none",
                [
                    Query(
                        f"region:edge_money_requests:error_ratio_rate{w}{{{REGION}}} / {AVAILABILITY_BUDGET}",
                        f"{{{{region}}}} {w}",
                    )
                    for w in windows
                ],
            ),
            graph(
                "Latency burn rate",
                "Share of money requests slower than 250 ms over the alert windows divided by the budget.",
                "none",
                [
                    Query(
                        f"region:edge_money_requests:slow_ratio_rate{w}{{{REGION}}} / {LATENCY_BUDGET}",
                        f"{{{{region}}}} {w}",
                    )
                    for w in windows
                ],
            ),
            graph(
                "Money 5xx by operation",
                'What the spent availability budget went on (the codes: "Edge money '
                'errors by code" on the money dashboard); 0 while nothing fails.',
                "reqps",
                [
                    Query(
                        or_zero("edge_money_requests_total", 'status=~"5.."', REGION, "region, operation"),
                        "{{region}} {{operation}}",
                    )
                ],
            ),
            graph(
                "Money latency p99 by route",
                "Money requests at the edges.",
                "s",
                [
                    Query(
                        f"histogram_quantile(0.99, sum by (region, route, le) "
                        f"(rate(http_request_duration_seconds_bucket{{{money}}}[{RATE}])))",
                        "{{region}} {{route}}",
                    )
                ],
            ),
        ],
    )


def service_dashboard() -> dashboard.Dashboard:
    return _dashboard(
        "croupier-service",
        "Croupier — services (RED and USE)",
        "Per route: rate, errors, duration. Per process: CPU, memory, file descriptors, garbage "
        "collection, queue and disk saturation, versions.",
        [
            graph(
                "Requests by route",
                "Rate: requests per second per route template.",
                "reqps",
                [
                    Query(
                        f"sum by (job, route) (rate(http_request_duration_seconds_count{{{JOB}}}[{RATE}]))",
                        "{{job}} {{route}}",
                    )
                ],
            ),
            graph(
                "Errors (5xx) by route",
                "Errors: 5xx answers per second per route template; 0 while nothing fails.",
                "reqps",
                [
                    Query(
                        or_zero("http_request_duration_seconds_count", 'status=~"5.."', JOB, "job, route"),
                        "{{job}} {{route}}",
                    )
                ],
            ),
            graph(
                "Duration by route",
                "Duration: p50 and p99 per route template.",
                "s",
                quantiles("http_request_duration_seconds", "job, route", "{{job}} {{route}}", JOB),
            ),
            graph(
                "CPU",
                "CPU seconds per second per process (1 = one core busy).",
                "percentunit",
                [Query(f"rate(process_cpu_seconds_total{{{JOB}}}[{RATE}])", "{{job}} {{instance}}")],
            ),
            graph(
                "Resident memory",
                "Resident set size per process.",
                "bytes",
                [Query(f"process_resident_memory_bytes{{{JOB}}}", "{{job}} {{instance}}")],
            ),
            graph(
                "File descriptors used",
                "Open file descriptors as a share of the process limit.",
                "percentunit",
                [Query(f"process_open_fds{{{JOB}}} / process_max_fds{{{JOB}}}", "{{job}} {{instance}}")],
            ),
            graph(
                "Garbage collections",
                "Python GC runs per second by generation.",
                "ops",
                [
                    Query(
                        f"sum by (job, instance, generation) (rate(python_gc_collections_total{{{JOB}}}[{RATE}]))",
                        "{{job}} {{instance}} gen {{generation}}",
                    )
                ],
            ),
            graph(
                "Ledger write queue",
                "Commands waiting for the single writer (saturation).",
                "none",
                [Query("ledger_write_queue_depth", "{{instance}}")],
            ),
            graph(
                "Ledger front processes",
                "Front processes serving the ledger's address, against its `fronts` setting (0: none configured).",
                "none",
                [
                    Query("ledger_fronts_up", "up {{instance}}"),
                    Query("ledger_fronts_configured", "configured {{instance}}"),
                ],
            ),
            graph(
                "Database files",
                "SQLite database and WAL sizes.",
                "bytes",
                [
                    Query("ledger_db_bytes", "ledger {{instance}} {{file}}"),
                    Query(f"edge_db_bytes{{{REGION}}}", "edge {{region}} {{file}}"),
                ],
            ),
            graph(
                "Ledger disk free",
                "Free bytes on the file system of the ledger's data_dir.",
                "bytes",
                [Query("ledger_data_dir_free_bytes", "{{instance}}")],
            ),
            single_stat(
                "Versions",
                "Processes per version and service.",
                "none",
                [Query(f"count by (version, job) (croupier_build_info{{{JOB}}})", "{{job}} {{version}}")],
            ),
        ],
    )


DASHBOARDS = {
    "croupier-money.json": money_dashboard,
    "croupier-edges.json": edges_dashboard,
    "croupier-slo.json": slo_dashboard,
    "croupier-service.json": service_dashboard,
}


def render(builder: dashboard.Dashboard) -> str:
    return json.dumps(builder.build(), cls=JSONEncoder, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_all(out_dir: Path = DASHBOARDS_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in DASHBOARDS.items():
        path = out_dir / name
        path.write_text(render(make()))
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else DASHBOARDS_DIR):
        print(written)
