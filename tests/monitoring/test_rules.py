"""Alert and recording rules: promtool accepts them, every alert is unit-tested and has a runbook,
and the scrape config (committed and rendered for a cluster dir) is valid."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from monitoring import scrape
from monitoring.prom import rule_data_wait_s
from monitoring.promql import MONITORING_DIR, RULES_DIR, duration_s, longest_group_interval_s, rule_groups
from tests.support.promtool import promtool

TESTS_DIR = MONITORING_DIR / "prometheus" / "tests"


def alerts() -> list[dict]:
    return [r for _, g in rule_groups() for r in g["rules"] if "alert" in r]


def test_promtool_check_rules_accepts_every_rule_file():
    files = sorted(str(p) for p in RULES_DIR.glob("*.yml"))
    assert len(files) == 2
    result = promtool("check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    files = sorted(str(p) for p in TESTS_DIR.glob("*_test.yml"))
    assert files
    result = promtool("test", "rules", *files, cwd=TESTS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_severity_summary_description_runbook():
    for rule in alerts():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        for key in ("summary", "description", "runbook", "runbook_url"):
            assert rule["annotations"].get(key, "").strip(), f"{rule['alert']} lacks {key}"


def runbook_problems(rule: dict, root: Path) -> list[str]:
    """What is wrong with an alert's runbook_url: it must name docs/runbooks/<topic>.md#<alert in
    lower case>, and that file must exist and hold a `## <AlertName>` section."""
    name, url = rule["alert"], rule["annotations"].get("runbook_url", "")
    path, _, anchor = url.partition("#")
    if not path.startswith("docs/runbooks/") or not path.endswith(".md") or anchor != name.lower():
        return [f"{name}: runbook_url {url!r} is not docs/runbooks/<topic>.md#{name.lower()}"]
    if not (root / path).is_file():
        return [f"{name}: {path} does not exist"]
    if f"\n## {name}\n" not in "\n" + (root / path).read_text():
        return [f"{name}: {path} has no '## {name}' section"]
    return []


def test_every_alert_links_a_runbook_in_the_repository_that_covers_it():
    root = MONITORING_DIR.parent
    problems = [p for rule in alerts() for p in runbook_problems(rule, root)]
    assert problems == []


def test_runbook_problems_are_found(tmp_path):
    (tmp_path / "docs" / "runbooks").mkdir(parents=True)
    (tmp_path / "docs" / "runbooks" / "t.md").write_text("# T\n\n## CroupierA\nwhat to do\n")
    ok = {"alert": "CroupierA", "annotations": {"runbook_url": "docs/runbooks/t.md#croupiera"}}
    assert runbook_problems(ok, tmp_path) == []
    for url in ("", "docs/runbooks/t.md", "https://example.invalid/t.md#croupiera", "docs/runbooks/u.md#croupiera"):
        assert len(runbook_problems({"alert": "CroupierA", "annotations": {"runbook_url": url}}, tmp_path)) == 1
    (tmp_path / "docs" / "runbooks" / "t.md").write_text("# T\n\nCroupierA is mentioned, without a section\n")
    assert len(runbook_problems(ok, tmp_path)) == 1


def test_every_alert_is_covered_by_a_firing_promtool_case():
    fired = set()
    for path in TESTS_DIR.glob("*_test.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    names = {r["alert"] for r in alerts()}
    assert names - fired == set()
    required = {
        "CroupierMoneyErrorBudgetBurnFast",
        "CroupierMoneyLatencyBudgetBurnFast",
        "CroupierLedgerDiskAlmostFull",
        "CroupierLedgerDiskFillingUp",
        "CroupierSyncPeerUpdatesRejected",
        "CroupierLedgerHalted",
        "CroupierSyncLagHigh",
        "CroupierSyncPeerDown",
        "CroupierLedgerUnreachableFromEdge",
        "CroupierLedgerWriteFailures",
        "CroupierLedgerCommitLatencyHigh",
        "CroupierDisplayDrift",
        "CroupierReplicaLagging",
        "CroupierAuditChainBroken",
    }
    assert required <= names


def test_committed_prometheus_config_is_valid_next_to_its_rules_and_secret(tmp_path):
    shutil.copytree(MONITORING_DIR / "prometheus", tmp_path / "prometheus")
    (tmp_path / "prometheus" / "secrets").mkdir()
    (tmp_path / "prometheus" / "secrets" / "metrics.token").write_text("not-a-real-token")
    result = promtool("check", "config", str(tmp_path / "prometheus" / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout


def test_scrape_dir_for_a_cluster_labels_edges_by_region_and_is_valid(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "metrics.token").write_text("not-a-real-token")
    (tmp_path / "cluster.json").write_text(
        json.dumps(
            {
                "ledger": {"url": "http://127.0.0.1:7000"},
                "edges": [{"id": "eu", "url": "http://127.0.0.1:7001"}, {"id": "us", "url": "http://127.0.0.1:7002"}],
                "tokens": {"metrics": "not-a-real-token"},
            }
        )
    )
    config_path = scrape.write_prometheus_dir(tmp_path, scrape_interval_s=1)
    edges = json.loads((tmp_path / "prometheus" / "targets" / "edges.json").read_text())
    assert [(g["targets"], g["labels"]["region"]) for g in edges] == [
        (["127.0.0.1:7001"], "eu"),
        (["127.0.0.1:7002"], "us"),
    ]
    ledger = json.loads((tmp_path / "prometheus" / "targets" / "ledger.json").read_text())
    assert ledger[0]["targets"] == ["127.0.0.1:7000"]
    config = yaml.safe_load(config_path.read_text())
    assert config["global"]["scrape_interval"] == "1s"
    assert "not-a-real-token" not in config_path.read_text()  # the secret stays in its own file
    result = promtool("check", "config", str(config_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_durations_are_read_in_seconds():
    assert [duration_s(d) for d in ("30s", "1m30s", "500ms", "2h")] == [30, 90, 0.5, 7200]
    for bad in ("30", "s", "1m x", "", "-5s"):
        with pytest.raises(ValueError, match="not a Prometheus duration"):
            duration_s(bad)


def test_the_longest_group_interval_is_read_from_the_rule_files(tmp_path):
    (tmp_path / "a.yml").write_text(yaml.safe_dump({"groups": [{"name": "a", "interval": "15s", "rules": []}]}))
    (tmp_path / "b.yml").write_text(yaml.safe_dump({"groups": [{"name": "b", "interval": "1m", "rules": []}]}))
    assert longest_group_interval_s(tmp_path) == 60
    (tmp_path / "b.yml").write_text(yaml.safe_dump({"groups": [{"name": "b", "rules": []}]}))
    assert longest_group_interval_s(tmp_path) == 15
    (tmp_path / "a.yml").unlink()
    assert longest_group_interval_s(tmp_path) == 0


def test_the_end_to_end_checks_wait_two_turns_of_the_slowest_rule_group():
    """A group with its own interval (the SLO group: 30 s) may evaluate first before its rates have
    two scrapes; its series then appear one interval later. A wait of one interval failed CI."""
    slowest = max(duration_s(g["interval"]) for _, g in rule_groups() if "interval" in g)
    assert slowest >= 30
    assert rule_data_wait_s() > 2 * slowest
