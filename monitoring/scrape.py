"""Point Prometheus at a `croupier up --dir DIR` cluster: `python -m monitoring.scrape DIR`.

Reads DIR/cluster.json (harness.cluster's contract: ledger url, edges' ids and urls), and writes
DIR/prometheus/ holding prometheus.yml (the committed one, paths made absolute) and file_sd targets.
The metrics bearer token stays in DIR/secrets/metrics.token: Prometheus reads it from there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from monitoring.promql import MONITORING_DIR, RULES_DIR

TEMPLATE = MONITORING_DIR / "prometheus" / "prometheus.yml"
TARGET_FILES = {"croupier-ledger": "ledger.json", "croupier-edge": "edges.json"}


def host_port(url: str) -> str:
    parts = urlsplit(url)
    assert parts.hostname and parts.port, f"cluster URL without host:port: {url}"
    return f"{parts.hostname}:{parts.port}"


def target_groups(cluster: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """file_sd groups per job; edges carry a `region` label (the edge id) used by alerts and panels."""
    ledgers = [{"targets": [host_port(cluster["ledger"]["url"])], "labels": {"service": "ledger"}}]
    if "standby" in cluster:
        ledgers.append(
            {"targets": [host_port(cluster["standby"]["url"])], "labels": {"service": "ledger", "role": "standby"}}
        )
    return {
        "croupier-ledger": ledgers,
        "croupier-edge": [
            {"targets": [host_port(e["url"])], "labels": {"service": "edge", "region": e["id"]}}
            for e in cluster["edges"]
        ],
    }


def render_config(token_file: Path, targets_dir: Path, scrape_interval_s: int | None = None) -> dict[str, Any]:
    """The committed prometheus.yml with absolute paths (and an optional faster scrape, for tests)."""
    config = yaml.safe_load(TEMPLATE.read_text())
    config["rule_files"] = [str(RULES_DIR / "*.yml")]
    if scrape_interval_s is not None:
        config["global"]["scrape_interval"] = f"{scrape_interval_s}s"
        config["global"]["scrape_timeout"] = f"{scrape_interval_s}s"
        config["global"]["evaluation_interval"] = f"{scrape_interval_s}s"
    for job in config["scrape_configs"]:
        job["authorization"]["credentials_file"] = str(token_file)
        job["file_sd_configs"] = [
            {"files": [str(targets_dir / TARGET_FILES[job["job_name"]])], "refresh_interval": "30s"}
        ]
    return config


def write_prometheus_dir(cluster_dir: Path, scrape_interval_s: int | None = None) -> Path:
    """Writes cluster_dir/prometheus/{prometheus.yml,targets/}; returns the config path."""
    cluster = json.loads((cluster_dir / "cluster.json").read_text())
    out = cluster_dir / "prometheus"
    targets_dir = out / "targets"
    targets_dir.mkdir(parents=True, exist_ok=True)
    for job, groups in target_groups(cluster).items():
        (targets_dir / TARGET_FILES[job]).write_text(json.dumps(groups, indent=2) + "\n")
    config_path = out / "prometheus.yml"
    token_file = (cluster_dir / "secrets" / "metrics.token").resolve()
    config = render_config(token_file, targets_dir.resolve(), scrape_interval_s)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m monitoring.scrape CLUSTER_DIR")
    print(write_prometheus_dir(Path(sys.argv[1])))
