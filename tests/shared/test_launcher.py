"""The process launcher (harness/launcher.py): configs written from data read back by the services' own
loaders whatever their values hold (the f-string bug class: quotes, backslashes, unicode), a cluster laid out
under such a directory, and processes that start ready, fail fast, time out and stop within their bounds,
their exit status reported."""

from __future__ import annotations

import json
import os
import sys
import time
import tomllib
from pathlib import Path

import pytest
import structlog

from shared.auth import hash_token

from core_ledger import config as ledger_config
from edge import config as edge_config
from harness.cluster import STANDBY, Cluster
from harness.launcher import (
    ServiceConfig,
    ServiceProcess,
    TokenRow,
    free_port,
    launch_environment,
    serve_command,
)

STRANGE = 'a "quoted" \\ back\\slash\\" ü€🂡 dir'  # what an f-string into a TOML string breaks on
BOUND_S = 10.0  # every wait here is far shorter; a failure shows within this


def wait_for_line(path: Path, text: str, timeout_s: float = BOUND_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} not in {path} after {timeout_s}s")


# --- configs --------------------------------------------------------------------------------------


def test_a_ledger_config_round_trips_quotes_backslashes_and_unicode_through_the_ledgers_loader(tmp_path: Path) -> None:
    tokens = [TokenRow(f'admin "{STRANGE}"', "admin_write", hash_token("t1")), TokenRow("edge-eu", "edge", "ab" * 32)]
    settings = {
        "port": 8711,
        "data_dir": STRANGE,
        "peers": ['http://127.0.0.1:9/"x"'],
        "group_commit": False,
        "liabilities_interval_s": 1.5,
        "backup_dir": None,
        "log_level": "warning",
    }
    path = ServiceConfig("ledger", settings, tokens).write(tmp_path / "ledger.toml")
    loaded = ledger_config.load(path, environ={})
    assert loaded.data_dir == tmp_path / STRANGE
    assert (loaded.port, loaded.group_commit, loaded.liabilities_interval_s) == (8711, False, 1.5)
    assert loaded.peers == ('http://127.0.0.1:9/"x"',) and loaded.backup_dir is None
    assert [(t.name, t.role, t.sha256) for t in loaded.tokens] == [(t.name, t.role, t.sha256) for t in tokens]


def test_an_edge_config_with_peer_tables_round_trips_through_the_edges_loader(tmp_path: Path) -> None:
    (tmp_path / f"{STRANGE}.token").write_text("ledger-secret\n")
    (tmp_path / "peer.token").write_text("peer-secret\n")
    settings = {
        "id": "eu",
        "port": 8801,
        "data_dir": f"{STRANGE}-data",
        "ledger_urls": ["http://127.0.0.1:8700"],
        "ledger_token_file": f"{STRANGE}.token",
        "peer_token_file": "peer.token",
        "ledger_deadline_s": 3.0,
        "tracing_service_name": STRANGE,
        "peers": [{"id": "us", "url": "ws://127.0.0.1:8802"}, {"id": "apac", "url": "ws://127.0.0.1:8803"}],
    }
    # (A game-server credential must be named as an id: the strange name goes to another role.)
    tokens = [TokenRow("us", "peer", hash_token("u")), TokenRow(STRANGE, "metrics", hash_token("g"))]
    path = ServiceConfig("edge", settings, tokens).write(tmp_path / "edge.toml")
    loaded = edge_config.load(path, environ={})
    assert loaded.data_dir == tmp_path / f"{STRANGE}-data" and loaded.ledger_token == "ledger-secret"
    assert loaded.trace_service_name == STRANGE
    assert [(p.id, p.url) for p in loaded.peers] == [("us", "ws://127.0.0.1:8802"), ("apac", "ws://127.0.0.1:8803")]
    assert [(t.name, t.role) for t in loaded.tokens] == [("us", "peer"), (STRANGE, "metrics")]
    # Written as [[...]] sections, tokens last: more can be appended to the file (as the TLS tests do).
    text = path.read_text()
    assert text.count("[[edge.peers]]") == 2 and text.rstrip().endswith(f'sha256 = "{hash_token("g")}"')


def test_the_text_written_is_the_document_described() -> None:
    config = ServiceConfig(
        "edge",
        {
            "id": STRANGE,
            "ratio": 0.5,
            "on": True,
            "urls": (STRANGE, "b\n"),
            "sub": {"k": STRANGE},
            "peers": [{"id": STRANGE, "url": "ws://x"}],
        },
        [TokenRow(STRANGE, "peer", "ab")],
    )
    assert tomllib.loads(config.render()) == config.document()
    assert config.document()["edge"]["urls"] == [STRANGE, "b\n"]


def test_a_service_of_no_known_kind_or_a_table_list_without_a_bare_key_is_refused() -> None:
    with pytest.raises(ValueError):
        ServiceConfig("cashier", {})
    with pytest.raises(ValueError):
        serve_command("cashier", Path("x.toml"))
    with pytest.raises(ValueError):
        ServiceConfig("edge", {"a b": [{"id": "x"}]}).render()


def test_a_tls_cluster_laid_out_under_a_strange_directory_writes_configs_its_services_load(tmp_path: Path) -> None:
    root = tmp_path / STRANGE
    cluster = Cluster(root, edge_ids=("eu", "us"), standby=True, tls=True, fault_hooks=True)
    cluster.lay_out()
    cluster.write_configs()
    tls = root / "tls"
    for name in cluster.ledger_names:
        loaded = ledger_config.load(cluster.services[name].config_path, environ={})
        assert loaded.data_dir == root / f"{name}-data" and loaded.port == cluster.services[name].port
        assert loaded.tls.cert_file == tls / f"{name}.pem" and loaded.tls.client_ca_file == tls / "ca.pem"
        assert loaded.fault_apply_delay_file == root / "faults" / f"{name}-apply-delay"
        assert loaded.synchronous_standby is (name == "ledger")
        other = STANDBY if name == "ledger" else "ledger"
        assert loaded.peers == (cluster.url(other),)
        by_name = {t.name: t.sha256 for t in loaded.tokens}
        assert by_name["edge-eu"] == hash_token(cluster.tokens["edge-eu"])
    for eid in cluster.edge_ids:
        loaded_edge = edge_config.load(cluster.services[eid].config_path, environ={})
        assert loaded_edge.ledger_token == cluster.tokens[f"edge-{eid}"]
        assert loaded_edge.ledger_urls == (cluster.url("ledger"), cluster.url(STANDBY))
        assert loaded_edge.tls.cert_file == tls / f"{eid}.pem" and loaded_edge.tls.ca_file == tls / "ca.pem"
        other = "us" if eid == "eu" else "eu"
        assert [(p.id, p.url) for p in loaded_edge.peers] == [(other, cluster.url(other).replace("https", "wss"))]


# --- processes ------------------------------------------------------------------------------------


def test_the_environment_drops_deployment_overrides_and_adds_what_the_caller_asks() -> None:
    env = launch_environment(
        {"LD_PRELOAD": "/x.so"}, environ={"CROUPIER_LEDGER__PORT": "1", "CROUPIER_EDGE__ID": "x", "PATH": "/bin"}
    )
    assert env == {"PATH": "/bin", "PYTHONUNBUFFERED": "1", "LD_PRELOAD": "/x.so"}


async def test_a_ledger_started_under_a_strange_directory_is_ready_and_stops_with_status_0(tmp_path: Path) -> None:
    """Ready on the port of its config (an override left in the caller's environment is not passed on)."""
    root = tmp_path / STRANGE
    root.mkdir()
    port = free_port()
    config = ServiceConfig(
        "ledger",
        {"port": port, "data_dir": "data", "log_level": "warning"},
        [TokenRow("admin", "admin_read", hash_token("t"))],
    ).write(root / "ledger.toml")
    process = ServiceProcess(
        "ledger",
        serve_command("ledger", config),
        log_path=root / "ledger.log",
        cwd=root,
        env=launch_environment(environ={**os.environ, "CROUPIER_LEDGER__PORT": "1"}),
    ).start()
    try:
        await process.wait_ready(f"http://127.0.0.1:{port}/readyz", timeout_s=30.0)
        assert process.running and (root / "data").is_dir()
    finally:
        status = process.stop()
    assert status == 0, process.log_tail()
    assert process.stop() == 0  # stopping again reports the same status


async def test_a_process_that_exits_before_ready_fails_at_once_with_its_status_and_log(tmp_path: Path) -> None:
    process = ServiceProcess(
        "dies", [sys.executable, "-c", "print('no config here'); raise SystemExit(3)"], log_path=tmp_path / "dies.log"
    ).start()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"exited \(3\)") as failed:
        await process.wait_ready(f"http://127.0.0.1:{free_port()}/readyz", timeout_s=30.0)
    assert time.monotonic() - started < BOUND_S
    assert "no config here" in str(failed.value)
    assert process.exit_code == 3 and process.stop() == 3


async def test_readiness_is_bounded_and_a_process_ignoring_sigterm_is_killed_after_its_bound(tmp_path: Path) -> None:
    stubborn = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)\n"
    )
    log = tmp_path / "stubborn.log"
    process = ServiceProcess("stubborn", [sys.executable, "-c", stubborn], log_path=log).start()
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await process.wait_ready(f"http://127.0.0.1:{free_port()}/readyz", timeout_s=0.5)
        assert time.monotonic() - started < BOUND_S
        wait_for_line(log, "up")  # SIGTERM is ignored from here on
        with structlog.testing.capture_logs() as logs:
            status = process.stop(timeout_s=0.5)
    finally:
        process.kill()
    assert status == -9 and not process.running
    assert [e["event"] for e in logs] == ["service_killed_after_stop_timeout"]
    assert logs[0]["service"] == "stubborn"


async def test_a_cluster_keeps_its_contract_files_and_reports_every_exit_status(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "c", edge_ids=("eu",), log_level="warning")
    try:
        await cluster.start()
        info = json.loads(cluster.write_info().read_text())
    finally:
        statuses = await cluster.stop()
    assert statuses == {"eu": 0, "ledger": 0}
    assert set(info) == {"ledger", "edges", "tokens", "peer_tokens", "seed", "backend"}  # keys are only ever added
    assert info["backend"] == "sqlite"
    assert info["edges"] == [{"id": "eu", "url": cluster.url("eu")}]
    assert info["ledger"] == {"url": cluster.url("ledger")}
    assert set(info["tokens"]) == {
        "game_server",
        "peer",
        "metrics",
        "edge",
        "cashier",
        "admin_read",
        "admin_write",
        "replica",
        "events",
    }
    secrets = cluster.root / "secrets"
    assert sorted(p.name for p in secrets.iterdir()) == sorted(
        f"{n}.token"
        for n in (
            "edge",
            "cashier",
            "admin_read",
            "admin_write",
            "replica",
            "metrics",
            "game_server",
            "events",
            "peer",
            "edge-eu",
            "peer-eu",
        )
    )
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in secrets.iterdir())
    assert (secrets / "admin_read.token").read_text() == info["tokens"]["admin_read"]
    assert sorted(p.name for p in cluster.root.glob("*.toml")) == ["edge-eu.toml", "ledger.toml"]
