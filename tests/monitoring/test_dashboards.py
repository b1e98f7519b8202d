"""Grafana dashboards: the committed JSON is exactly what the generator makes, the required panels
exist, every query (and every rule) parses in promtool, and provisioning matches the dashboards."""

from __future__ import annotations

import json

import yaml

from monitoring import dashboards
from monitoring.promql import DASHBOARDS_DIR, MONITORING_DIR, all_expressions, dashboard_expressions, rules_file_for
from tests.support.promtool import promtool

REQUIRED_PANELS = {
    "Money throughput by type and outcome",
    "Ledger commit latency",
    "Ledger commit batch size",
    "Edge → ledger latency",
    "Sync lag per peer",
    "Sync lag (all peers)",
    "Peers up",
    "Display drift",
    "Replica lag",
    "Idempotent replays and conflicts",
    # SLO, RED per route, USE per process, and the new capacity and liability panels
    "Availability, 30 days",
    "Availability budget left",
    "Within 250 ms, 30 days",
    "Latency budget left",
    "Availability burn rate",
    "Latency burn rate",
    "Requests by route",
    "Errors (5xx) by route",
    "Duration by route",
    "CPU",
    "Resident memory",
    "File descriptors used",
    "Ledger write queue",
    "Database files",
    "Ledger disk free",
    "Ledger breakers open",
    "Liabilities by kind and currency",
    "Edge money errors by code",
    "Money 5xx by operation",
}


def titles() -> set[str]:
    out = set()
    for path in DASHBOARDS_DIR.glob("*.json"):
        out |= {p["title"] for p in json.loads(path.read_text())["panels"]}
    return out


def test_regenerated_dashboards_equal_the_committed_json(tmp_path):
    written = dashboards.write_all(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in DASHBOARDS_DIR.glob("*.json"))
    for path in written:
        committed = (DASHBOARDS_DIR / path.name).read_text()
        assert path.read_text() == committed, f"{path.name} is stale: run python -m monitoring.dashboards"


def test_generator_is_deterministic():
    assert dashboards.render(dashboards.money_dashboard()) == dashboards.render(dashboards.money_dashboard())


def test_required_panels_exist_with_queries():
    assert titles() >= REQUIRED_PANELS
    assert all(e.expr.strip() for e in dashboard_expressions())
    assert len(dashboard_expressions()) >= 20


def test_every_rule_and_dashboard_expression_parses_in_promtool(tmp_path):
    expressions = all_expressions()
    path = tmp_path / "expressions.yml"
    path.write_text(yaml.safe_dump(rules_file_for(expressions)))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in result.stdout


def test_provisioning_names_the_datasource_the_panels_use_by_default():
    ds = yaml.safe_load((MONITORING_DIR / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in ds["datasources"]}
    for path in DASHBOARDS_DIR.glob("*.json"):
        board = json.loads(path.read_text())
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        assert variables["datasource"]["current"]["value"] in uids  # the default: the provisioned Prometheus
        refs = [p["datasource"] for p in board["panels"]] + [
            t["datasource"] for p in board["panels"] for t in p["targets"]
        ]
        refs += [a["datasource"] for a in board["annotations"]["list"]] + [variables["region"]["datasource"]]
        assert {r["uid"] for r in refs} == {"${datasource}"}, path.name
    providers = yaml.safe_load((MONITORING_DIR / "grafana/provisioning/dashboards/croupier.yml").read_text())
    assert providers["providers"][0]["type"] == "file"


def test_every_dashboard_targets_grafana_11_with_region_variable_and_failover_annotations():
    for path in DASHBOARDS_DIR.glob("*.json"):
        board = json.loads(path.read_text())
        assert board["schemaVersion"] >= 39, f"{path.name}: not a Grafana 11 dashboard"  # 39: Grafana 11.0
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["region"]["type"] == "query" and variables["region"]["includeAll"]
        assert "region" in variables["region"]["query"]
        annotations = {a["expr"] for a in board["annotations"]["list"]}
        assert {"changes(ledger_epoch[1m]) > 0", "changes(ledger_fenced[1m]) > 0"} <= annotations
        edge_queries = [t["expr"] for p in board["panels"] for t in p["targets"] if "edge_" in t["expr"]]
        assert all('region=~"$region"' in q for q in edge_queries), path.name


def test_the_pinned_sdk_is_the_grafana_release_the_dashboards_target():
    import importlib.metadata

    sdk = importlib.metadata.version("grafana-foundation-sdk")
    assert sdk.split("!")[-1] == dashboards.GRAFANA_VERSION
    assert int(dashboards.GRAFANA_VERSION.split(".")[0]) >= 11
