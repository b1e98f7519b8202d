"""Grafana dashboards: the committed JSON is exactly what the generator makes, the required panels
exist, every query (and every rule) parses in promtool, and provisioning matches the dashboards."""

from __future__ import annotations

import json

import yaml

from monitoring import dashboards
from monitoring.promql import DASHBOARDS_DIR, MONITORING_DIR, all_expressions, dashboard_expressions, rules_file_for
from tests.monitoring.test_rules import promtool

REQUIRED_PANELS = {
    "Money throughput by type and outcome", "Ledger commit latency", "Ledger commit batch size",
    "Edge → ledger latency", "Sync lag per peer", "Sync lag (all peers)", "Peers up", "Display drift",
    "Replica lag", "Idempotent replays and conflicts",
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


def test_provisioning_names_the_datasource_uid_the_panels_use():
    ds = yaml.safe_load((MONITORING_DIR / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in ds["datasources"]}
    for path in DASHBOARDS_DIR.glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            assert panel["datasource"]["uid"] in uids
            assert all(t["datasource"]["uid"] in uids for t in panel["targets"])
    providers = yaml.safe_load((MONITORING_DIR / "grafana/provisioning/dashboards/croupier.yml").read_text())
    assert providers["providers"][0]["type"] == "file"
