"""Grafana dashboards as code (grafana-foundation-sdk, Grafana 10.1): `python -m monitoring.dashboards`
writes monitoring/grafana/dashboards/*.json. Output is deterministic (fixed uids, ids, sorted keys) so
that a test can regenerate it and fail on any diff with the committed JSON.

Queries use raw metrics from monitoring.contract, so every name can be checked against a live scrape.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from monitoring.promql import DASHBOARDS_DIR

GRAFANA_VERSION = "10.1.0"  # what grafana-foundation-sdk 10.1.0 targets and provisioning is tested for
DATASOURCE = DataSourceRef(type_val="prometheus", uid="croupier-prometheus")
RATE = "$__rate_interval"
PANEL_HEIGHT = 8


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


def _target(ref_id: str, q: Query, fmt: PromQueryFormat = PromQueryFormat.TIME_SERIES) -> prometheus.Dataquery:
    return (prometheus.Dataquery().ref_id(ref_id).expr(q.expr).legend_format(q.legend)
            .format(fmt).datasource(DATASOURCE))


def _with_targets(panel, queries: list[Query], fmt: PromQueryFormat = PromQueryFormat.TIME_SERIES):
    for i, q in enumerate(queries):
        panel = panel.with_target(_target(chr(ord("A") + i), q, fmt))
    return panel


def graph(title: str, description: str, unit: str, queries: list[Query], width: int = 12):
    panel = (timeseries.Panel().title(title).description(description).unit(unit)
             .datasource(DATASOURCE).height(PANEL_HEIGHT).span(width))
    return _with_targets(panel, queries)


def single_stat(title: str, description: str, unit: str, queries: list[Query], width: int = 6):
    panel = (stat.Panel().title(title).description(description).unit(unit)
             .datasource(DATASOURCE).height(PANEL_HEIGHT).span(width))
    return _with_targets(panel, queries)


def histogram_heatmap(title: str, description: str, bucket_metric: str, width: int = 12):
    """A heatmap of a Prometheus histogram's buckets, as Grafana expects them (format=heatmap)."""
    q = Query(f"sum by (le) (rate({bucket_metric}[{RATE}]))", "{{le}}")
    panel = (heatmap.Panel().title(title).description(description).datasource(DATASOURCE)
             .height(PANEL_HEIGHT).span(width).calculate(False)
             .y_axis(heatmap.YAxisConfig().unit("s")))
    return _with_targets(panel, [q], PromQueryFormat.HEATMAP)


def quantiles(metric: str, by: str, legend: str) -> list[Query]:
    """p50 and p99 of a histogram, per `by` labels."""
    group = f"{by}, le" if by else "le"
    return [
        Query(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{RATE}])))",
              f"p{int(q * 100)} {legend}".strip())
        for q in (0.5, 0.99)
    ]


def _dashboard(uid: str, title: str, description: str, panels: list) -> dashboard.Dashboard:
    d = (dashboard.Dashboard(title).uid(uid).description(description)
         .tags(["croupier"]).refresh("30s").time("now-1h", "now").timezone("utc")
         .tooltip(DashboardCursorSync.CROSSHAIR).readonly())
    for panel_id, panel in enumerate(panels, start=1):
        d = d.with_panel(panel.id(panel_id))
    return d


def money_dashboard() -> dashboard.Dashboard:
    return _dashboard("croupier-money", "Croupier — money and ledger",
                      "Money throughput, ledger commits, idempotency and replication.", [
        graph("Money throughput by type and outcome", "Ledger transactions per second.", "ops", [
            Query(f"sum by (type, outcome) (rate(ledger_transactions_total[{RATE}]))", "{{type}} {{outcome}}")]),
        graph("Edge money requests by operation and status", "Game-server money calls per second at each edge.",
              "reqps", [Query(f"sum by (region, operation, status) (rate(edge_money_requests_total[{RATE}]))",
                              "{{region}} {{operation}} {{status}}")]),
        graph("Ledger commit latency", "Group-commit duration (one storage transaction per batch).", "s",
              quantiles("ledger_commit_duration_seconds", "", "")),
        graph("Ledger commit batch size", "Requests committed per storage transaction.", "none",
              [*quantiles("ledger_commit_batch_size", "", ""),
               Query(f"sum(rate(ledger_commit_batch_size_sum[{RATE}])) / "
                     f"sum(rate(ledger_commit_batch_size_count[{RATE}]))", "mean")]),
        graph("Edge → ledger latency", "Money calls as seen from each edge, per operation.", "s",
              quantiles("edge_ledger_request_duration_seconds", "region, operation", "{{region}} {{operation}}")),
        graph("Idempotent replays and conflicts", "Retries answered from the idempotency record, and refusals "
              "by reason (idempotency key reused, version conflict...).", "ops", [
                  Query(f"sum(rate(ledger_idempotent_replays_total[{RATE}]))", "replays"),
                  Query(f"sum by (reason) (rate(ledger_conflicts_total[{RATE}]))", "conflict {{reason}}")]),
        graph("Replica lag", "How far each standby is behind the primary.", "none", [
            Query("ledger_replica_lag_sequences", "{{instance}} entries"),
            Query("ledger_replica_lag_seconds", "{{instance}} seconds")]),
        graph("Commit failures", "Storage commits that failed; any is an incident.", "ops", [
            Query(f"sum(rate(ledger_commit_failures_total[{RATE}]))", "failures")]),
        single_stat("Journal head sequence", "Last committed journal sequence.", "none", [
            Query("max(ledger_journal_head_sequence)", "head")]),
        single_stat("Audit chain", "1: the last hash-chain verification passed; 0: broken.", "bool", [
            Query("min(ledger_audit_chain_ok)", "chain ok")]),
        single_stat("Since last audit", "Age of the last hash-chain verification.", "s", [
            Query("time() - max(ledger_audit_last_verified_timestamp_seconds)", "age")]),
        single_stat("Targets up", "Scraped processes that answer /metrics.", "none", [
            Query('sum(up{job=~"croupier-.*"})', "up")]),
    ])


def edges_dashboard() -> dashboard.Dashboard:
    return _dashboard("croupier-edges", "Croupier — edges and sync",
                      "CRDT sync between edges, display drift and HTTP traffic.", [
        histogram_heatmap("Sync lag (all peers)", "Origin write → applied here.", "edge_sync_lag_seconds_bucket"),
        graph("Sync lag per peer", "Origin write → applied here, per receiving edge and origin peer.", "s",
              quantiles("edge_sync_lag_seconds", "region, peer", "{{region}} ← {{peer}}")),
        graph("Peers up", "1 when the sync link to the peer is up.", "none", [
            Query("edge_sync_peer_up", "{{region}} → {{peer}}")]),
        graph("Since last successful sync", "Per edge and peer.", "s", [
            Query("time() - edge_sync_last_success_timestamp_seconds", "{{region}} → {{peer}}")]),
        graph("Pending updates per peer", "Updates known missing from the peer's state vector.", "none", [
            Query("edge_sync_pending_updates", "{{region}} ← {{peer}}")]),
        graph("Display drift", "CRDT display minus ledger truth after reconciliation (minor units).", "none", [
            Query("edge_display_drift_minor", "{{region}} {{kind}}")]),
        graph("CRDT updates by doc and origin", "Updates applied per second.", "ops", [
            Query(f"sum by (region, doc, origin) (rate(edge_crdt_updates_total[{RATE}]))",
                  "{{region}} {{doc}} {{origin}}")]),
        graph("HTTP requests by route and status", "Every process, per route template.", "reqps", [
            Query(f"sum by (job, route, status) (rate(http_request_duration_seconds_count[{RATE}]))",
                  "{{job}} {{route}} {{status}}")]),
        graph("HTTP latency p99 by route", "Every process, per route template.", "s", [
            Query(f"histogram_quantile(0.99, sum by (job, route, le) "
                  f"(rate(http_request_duration_seconds_bucket[{RATE}])))", "{{job}} {{route}}")]),
    ])


DASHBOARDS = {"croupier-money.json": money_dashboard, "croupier-edges.json": edges_dashboard}


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
