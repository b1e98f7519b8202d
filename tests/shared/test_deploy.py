"""deploy/: what can be checked without Docker or a systemd host. The Dockerfile copies files that exist and
runs as a non-root user; the compose file parses, references files that exist (or that make-secrets.sh makes),
and every service's config loads with its compose environment through the real loaders; Prometheus' config
passes promtool; the systemd units pass `systemd-analyze verify` (when installed) and are hardened."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.auth import hash_token
from shared.config import CONFIG_ERROR_EXIT

from core_ledger import config as ledger_config
from edge import config as edge_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CROUPIER_SERVICES = {"ledger", "standby", "edge-eu", "edge-us", "edge-apac"}


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def made_by_script() -> set[str]:
    """Files make-secrets.sh writes, relative to deploy/."""
    script = (DEPLOY / "make-secrets.sh").read_text()
    names = re.search(r'^names="([^"]+)"', script, re.M)
    edges = re.search(r'^edges="([^"]+)"', script, re.M)
    assert names and edges
    return {f"secrets/{n}.token" for n in names.group(1).split()} | {
        f"generated/edge-{e}.toml" for e in edges.group(1).split()
    }


def test_the_dockerfile_copies_what_exists_installs_the_package_and_runs_as_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    assert bases and all(b == "python:3.11-slim" for b in bases)
    sources = [s for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M) for s in line.split()[:-1]]
    assert sources and all((ROOT / s).exists() for s in sources), sources
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= set(sources), "every package the wheel includes is copied into the build stage"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    assert all(f"!{p}/**" in ignore for p in packages) and "!pyproject.toml" in ignore
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert re.search(r'^ENTRYPOINT \["croupier"\]', text, re.M) and "croupier" in pyproject["project"]["scripts"]
    assert re.search(r"pip install .*--no-index /wheels", text)


def test_the_compose_file_names_every_service_and_only_files_that_exist_or_are_made() -> None:
    spec = compose()
    services = spec["services"]
    assert set(services) == CROUPIER_SERVICES | {"prometheus", "grafana"}
    made = made_by_script()
    for group in ("configs", "secrets"):
        for name, entry in spec[group].items():
            rel = entry["file"].removeprefix("./")
            assert (DEPLOY / rel).is_file() or rel in made, f"{group}.{name}: {rel}"
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for group in ("configs", "secrets"):
            for ref in service.get(group, []):
                assert (ref["source"] if isinstance(ref, dict) else ref) in spec[group]
    build = services["ledger"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()


def mounted_secret_paths(service: dict[str, Any]) -> set[str]:
    return {f"/run/secrets/{s}" for s in service.get("secrets", [])}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/ after make-secrets.sh ran in it."""
    copy = tmp_path_factory.mktemp("deploy")
    shutil.copytree(DEPLOY / "config", copy / "config")
    shutil.copy(DEPLOY / "make-secrets.sh", copy / "make-secrets.sh")
    subprocess.run(["sh", str(copy / "make-secrets.sh")], check=True, capture_output=True, timeout=60)
    assert {str(p.relative_to(copy)) for p in copy.glob("*/*") if p.parent.name != "config"} == made_by_script()
    assert (copy / "secrets").stat().st_mode & 0o077 == 0
    return copy


def service_config(made: Path, spec: dict[str, Any], name: str) -> Path:
    """The service's config as the container sees it, with /run/secrets and /var/lib pointed into `made`."""
    service = spec["services"][name]
    source = spec["configs"][service["configs"][0]["source"]]["file"].removeprefix("./")
    run = made / "run" / name
    run.mkdir(parents=True, exist_ok=True)
    for secret in service.get("secrets", []):
        shutil.copy(made / spec["secrets"][secret]["file"].removeprefix("./"), run / secret)
    text = (made / source).read_text()
    for path in re.findall(r'"(/run/secrets/[^"]+)"', text):
        assert path in mounted_secret_paths(service), f"{name} reads {path}, which compose does not mount"
    text = text.replace("/run/secrets/", f"{run}/").replace("/var/lib/croupier", str(made / "var" / name))
    path = made / f"{name}.toml"
    path.write_text(text)
    return path


def test_every_service_config_loads_with_its_compose_environment(made: Path) -> None:
    spec = compose()
    ledgers = {}
    for name in ("ledger", "standby"):
        service = spec["services"][name]
        env = {k: str(v) for k, v in service.get("environment", {}).items()}
        assert all(k.startswith("CROUPIER_LEDGER__") for k in env)
        ledgers[name] = ledger_config.load(service_config(made, spec, name), environ=env)
        assert service["command"][:2] == ["ledger", "serve"]
    assert ledgers["ledger"].peers == ("http://standby:8700",) and ledgers["ledger"].synchronous_standby
    assert ledgers["standby"].peers == ("http://ledger:8700",) and not ledgers["standby"].synchronous_standby
    command = spec["services"]["standby"]["command"]
    assert command[command.index("--replica-token-file") + 1] in mounted_secret_paths(spec["services"]["standby"])
    accepted = {t.sha256: (t.name, t.role) for t in ledgers["ledger"].tokens}
    assert accepted[hash_token((made / "secrets" / "replica.token").read_text().strip())][1] == "replica"
    for eid in ("eu", "us", "apac"):
        service = spec["services"][f"edge-{eid}"]
        env = {k: str(v) for k, v in service.get("environment", {}).items() if k.startswith("CROUPIER_EDGE__")}
        cfg = edge_config.load(service_config(made, spec, f"edge-{eid}"), environ=env)
        assert cfg.id == eid and cfg.ledger_endpoints == ("http://ledger:8700", "http://standby:8700")
        assert accepted[hash_token(cfg.ledger_token)] == (f"edge-{eid}", "edge")
        others = {p.id for p in cfg.peers}
        assert others == {"eu", "us", "apac"} - {eid}
        assert {p.url for p in cfg.peers} == {f"http://edge-{o}:8801" for o in others}
        # Each edge holds only its own clear peer token and accepts the others' by digest.
        assert {s for s in service["secrets"] if s.startswith("peer-")} == {f"peer-{eid}"}
        peer_digests = {t.name: t.sha256 for t in cfg.tokens if t.role == "peer"}
        assert peer_digests == {
            o: hash_token((made / "secrets" / f"peer-{o}.token").read_text().strip()) for o in others
        }
        assert service["ports"][0].endswith(f":{cfg.port}") and service["environment"]["CROUPIER_HEALTH_PORT"] == str(
            cfg.port
        )


def test_the_compose_prometheus_config_passes_promtool_and_scrapes_every_service(tmp_path: Path) -> None:
    spec = compose()
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for group in job["static_configs"] for t in group["targets"]}
    assert {t.split(":")[0] for t in targets} == CROUPIER_SERVICES
    for job in prom["scrape_configs"]:
        assert job["authorization"]["credentials_file"] in mounted_secret_paths(spec["services"]["prometheus"])
    rules = next(v for v in spec["services"]["prometheus"]["volumes"] if v.endswith(":/etc/prometheus/rules:ro"))
    assert (DEPLOY / rules.split(":")[0]).resolve() == ROOT / "monitoring" / "prometheus" / "rules"
    (tmp_path / "metrics").write_text("token")
    text = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    text = text.replace("/etc/prometheus/rules", str(ROOT / "monitoring" / "prometheus" / "rules"))
    (tmp_path / "prometheus.yml").write_text(text.replace("/run/secrets/metrics", str(tmp_path / "metrics")))
    ran = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr


HARDENING = (
    "NoNewPrivileges",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "RestrictAddressFamilies",
    "SystemCallFilter",
    "CapabilityBoundingSet",
    "RestrictNamespaces",
)


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive in units
    parser.read(DEPLOY / "systemd" / name)
    return parser


@pytest.mark.parametrize(
    "name,command", [("croupier-ledger.service", "ledger serve"), ("croupier-edge@.service", "edge serve")]
)
def test_systemd_units_run_the_service_unprivileged_and_hardened(name: str, command: str) -> None:
    parsed = unit(name)
    service = parsed["Service"]
    assert f"croupier {command} --config /etc/croupier/" in service["ExecStart"]
    assert service["User"] == "croupier" and all(key in service for key in HARDENING)
    assert service["ProtectSystem"] == "strict" and service["StateDirectory"].startswith("croupier/")
    assert service["RestartPreventExitStatus"] == str(CONFIG_ERROR_EXIT)
    assert parsed["Install"]["WantedBy"] == "multi-user.target"
    if name == "croupier-ledger.service":  # its audit child lowers its priority: allowed after @resources
        filters = (DEPLOY / "systemd" / name).read_text().split("\n")
        denied = filters.index("SystemCallFilter=~@privileged @resources")
        assert "SystemCallFilter=setpriority sched_setscheduler" in filters[denied + 1 :]
    sysusers = (DEPLOY / "systemd" / "croupier.sysusers.conf").read_text()
    assert re.search(r"^u croupier ", sysusers, re.M)


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    """The units with ExecStart pointed at a stub (the package is not installed in /opt here). `make tools`
    installs systemd-analyze; without it, the structural test above is what checks the units."""
    if shutil.which("systemd-analyze") is None:
        assert all(
            unit(name)["Service"]["ExecStart"].startswith("/opt/croupier/bin/croupier ")
            for name in ("croupier-ledger.service", "croupier-edge@.service")
        )
        return
    stub = tmp_path / "croupier"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    for name in ("croupier-ledger.service", "croupier-edge@.service"):
        text = (DEPLOY / "systemd" / name).read_text().replace("/opt/croupier/bin/croupier", str(stub))
        (tmp_path / name).write_text(text)
    ran = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            str(tmp_path / "croupier-ledger.service"),
            str(tmp_path / "croupier-edge@.service"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert ran.returncode == 0 and "croupier" not in ran.stderr, ran.stderr
