"""Both services' configs: every problem reported at once, unknown keys refused, environment overrides, and
`serve` with a bad config exiting 2 with a clear message (no traceback); `croupier --version`."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from shared.auth import hash_token
from shared.config import ConfigError

from core_ledger import config as ledger_config
from edge import config as edge_config

EDGE = """
[edge]
id = "eu"
ledger_url = "http://127.0.0.1:8700"
ledger_token_file = "edge.token"
peer_token_file = "peer.token"
[[edge.peers]]
id = "us"
url = "http://127.0.0.1:8802"
[[tokens]]
name = "us"
role = "peer"
sha256 = "{digest}"
"""


def edge_file(tmp_path: Path, text: str = EDGE) -> Path:
    (tmp_path / "edge.token").write_text("ledger-secret\n")
    (tmp_path / "peer.token").write_text("peer-secret\n")
    path = tmp_path / "edge.toml"
    path.write_text(text.replace("{digest}", hash_token("us")))
    return path


def ledger_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "ledger.toml"
    path.write_text(body)
    return path


def test_every_ledger_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = ledger_file(
        tmp_path,
        '[ledger]\nport = 0\nqueue_depth_max = "many"\nturbo = true\nbackend = "mysql"\n'
        'standby_ack_timeout_s = 0\n[[tokens]]\nname = "x"\nrole = "edge"\n[extra]\n',
    )
    with pytest.raises(ConfigError) as caught:
        ledger_config.load(path, environ={})
    text = "\n".join(caught.value.problems)
    for expected in (
        "ledger.port",
        "ledger.queue_depth_max",
        "['turbo']",
        "ledger.backend",
        "ledger.standby_ack_timeout_s",
        "tokens[0] needs sha256 or token_file",
        "['extra']",
    ):
        assert expected in text
    assert len(caught.value.problems) == 7


def test_every_edge_problem_is_reported_at_once_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    text = EDGE.replace('id = "eu"', 'id = "eu"\nport = 70000\nturbo = true\nlog_level = "loud"')
    text = text.replace('peer_token_file = "peer.token"', 'peer_token_file = "missing.token"')
    with pytest.raises(ConfigError) as caught:
        edge_config.load(edge_file(tmp_path, text), environ={})
    problems = "\n".join(caught.value.problems)
    for expected in ("edge.port", "['turbo']", "edge.log_level", "peer_token_file"):
        assert expected in problems
    assert len(caught.value.problems) == 4
    with pytest.raises(ConfigError, match=r"unknown edge.peers\[0\] keys: \['name'\]"):
        edge_config.load(edge_file(tmp_path, EDGE.replace('id = "us"', 'id = "us"\nname = "x"')), environ={})


def test_ledger_environment_overrides_the_file_and_options_override_both(tmp_path: Path) -> None:
    path = ledger_file(tmp_path, "[ledger]\nport = 8700\ngroup_commit = true\n")
    env = {
        "CROUPIER_LEDGER__PORT": "8799",
        "CROUPIER_LEDGER__GROUP_COMMIT": "false",
        "CROUPIER_LEDGER__PEERS": "http://a:1/,https://b:2",
        "CROUPIER_LEDGER__STANDBY_ACK_TIMEOUT_S": "0.5",
        "CROUPIER_LEDGER__DATA_DIR": "state",
        "CROUPIER_EDGE__PORT": "not mine: ignored",
    }
    cfg = ledger_config.load(path, environ=env)
    assert (cfg.port, cfg.group_commit, cfg.standby_ack_timeout_s) == (8799, False, 0.5)
    assert cfg.peers == ("http://a:1", "https://b:2") and cfg.data_dir == tmp_path / "state"
    assert ledger_config.load(path, port=9000, environ=env).port == 9000


@pytest.mark.parametrize(
    "env,message",
    [
        ({"CROUPIER_LEDGER__PORTS": "1"}, "CROUPIER_LEDGER__PORTS names no ledger key"),
        ({"CROUPIER_LEDGER__PORT": "eighty"}, "CROUPIER_LEDGER__PORT must be an integer"),
        ({"CROUPIER_LEDGER__PORT": "0"}, r"ledger.port \(from CROUPIER_LEDGER__PORT\) is out of range"),
        ({"CROUPIER_LEDGER__GROUP_COMMIT": "maybe"}, "CROUPIER_LEDGER__GROUP_COMMIT must be true or false"),
    ],
)
def test_bad_environment_overrides_are_refused_by_name(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ledger_config.load(ledger_file(tmp_path, "[ledger]\n"), environ=env)


def test_edge_environment_overrides_lists_and_peer_tables(tmp_path: Path) -> None:
    env = {
        "CROUPIER_EDGE__LEDGER_URL": "",
        "CROUPIER_EDGE__LEDGER_URLS": "http://l1:8700,http://l2:8700",
        "CROUPIER_EDGE__PEERS": '[{"id": "us", "url": "http://us:8801/"}, {"id": "ap", "url": "http://ap:1"}]',
        "CROUPIER_EDGE__PORT": "8811",
        "CROUPIER_EDGE__LOG_LEVEL": "WARNING",
    }
    cfg = edge_config.load(edge_file(tmp_path), environ=env)
    assert cfg.ledger_endpoints == ("http://l1:8700", "http://l2:8700") and cfg.port == 8811
    assert [(p.id, p.url) for p in cfg.peers] == [("us", "http://us:8801"), ("ap", "http://ap:1")]
    assert cfg.log_level == "warning"
    with pytest.raises(ConfigError, match="CROUPIER_EDGE__PEERS must be"):
        edge_config.load(edge_file(tmp_path), environ={"CROUPIER_EDGE__PEERS": "[not json"})


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[2]
    full_env = {**os.environ, "PYTHONPATH": str(root), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "croupier", *args], capture_output=True, text=True, timeout=60, env=full_env, check=False
    )


def test_serve_with_a_bad_config_exits_2_naming_every_problem_without_a_traceback(tmp_path: Path) -> None:
    ledger = ledger_file(tmp_path, "[ledger]\nport = 0\nturbo = 1\n")
    edge = edge_file(tmp_path, EDGE.replace('id = "eu"', 'id = "eu"\nbody_bytes_max = "big"'))
    ran_ledger = run_cli("ledger", "serve", "--config", str(ledger))
    ran_edge = run_cli("edge", "serve", "--config", str(edge), env={"CROUPIER_EDGE__COLOR": "red"})
    for ran in (ran_ledger, ran_edge):
        assert ran.returncode == 2, ran.stderr
        assert "Traceback" not in ran.stderr and "invalid config" in ran.stderr
    assert "ledger.port is out of range" in ran_ledger.stderr and "['turbo']" in ran_ledger.stderr
    assert "edge.body_bytes_max must be an integer" in ran_edge.stderr
    assert "CROUPIER_EDGE__COLOR names no edge key" in ran_edge.stderr


def test_version_comes_from_the_package_metadata() -> None:
    ran = run_cli("--version")
    assert ran.returncode == 0 and ran.stdout.strip() == f"croupier {version('croupier')}"


def test_the_local_cluster_harness_ignores_config_overrides_meant_for_a_deployment() -> None:
    from harness.cluster import service_environment

    env = service_environment(
        {"CROUPIER_LEDGER__PORT": "1", "CROUPIER_EDGE__ID": "x", "PATH": "/bin", "CROUPIER_OTHER": "kept"}
    )
    assert env == {"PATH": "/bin", "CROUPIER_OTHER": "kept"}


@pytest.mark.parametrize("value", ["-0.5", "61", '"soon"', "nan"])
def test_a_wal_checkpoint_interval_out_of_bounds_is_refused_naming_the_key(tmp_path: Path, value: str) -> None:
    """A config value that would stop checkpoints or hold them for hours is refused, not clamped."""
    path = ledger_file(tmp_path, f"[ledger]\nwal_checkpoint_interval_s = {value}\n")
    with pytest.raises(ConfigError) as caught:
        ledger_config.load(path, environ={})
    assert any("ledger.wal_checkpoint_interval_s" in p for p in caught.value.problems)
