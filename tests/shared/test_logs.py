"""Logs an operator can use (issue 10): JSON lines to stderr or a configured file, with the
process's service (and edge id); and on real processes, one request id finds a bet in the edge's
log and in the ledger's, a 503 episode is visible, start and stop are logged, no secret leaks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest

from shared.config import ConfigError, pick_log_file, pick_log_level

from harness.cluster import Cluster, seed

ROOT = Path(__file__).resolve().parents[2]


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_configure_writes_json_lines_with_service_and_edge_id_to_the_file_stdlib_included(tmp_path):
    log_file = tmp_path / "edge.log"
    script = textwrap.dedent(f"""
        import logging, structlog
        from pathlib import Path
        from shared import logs, request_ids
        logs.configure("info", service="edge", edge_id="eu", file=Path({str(log_file)!r}))
        log = structlog.get_logger("t")
        log.debug("hidden")
        token = request_ids.bind("rid-7")
        log.info("hello", token="s3cret", header="Bearer abc.def")
        request_ids.unbind(token)
        logging.getLogger("aiohttp.server").error("from stdlib")
        logging.getLogger("aiohttp.access").info("access line")
    """)
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""  # a log file is configured: nothing on stderr
    hello, stdlib = json_lines(log_file)
    assert hello["event"] == "hello" and hello["level"] == "info" and hello["service"] == "edge"
    assert hello["edge_id"] == "eu" and hello["request_id"] == "rid-7" and hello["timestamp"].endswith("Z")
    assert hello["token"] == "[redacted]" and hello["header"] == "Bearer [redacted]"
    assert stdlib["event"] == "from stdlib" and stdlib["level"] == "error" and stdlib["service"] == "edge"
    assert "request_id" not in stdlib


def test_log_level_and_log_file_are_checked_when_the_config_is_read(tmp_path):
    assert pick_log_level({"log_level": "WARNING"}, "edge") == "warning"
    assert pick_log_level({}, "edge") == "info"
    with pytest.raises(ConfigError, match=r"edge\.log_level"):
        pick_log_level({"log_level": "loud"}, "edge")
    assert pick_log_file({}, tmp_path, "ledger") is None
    assert pick_log_file({"log_file": "logs/ledger.log"}, tmp_path, "ledger") == tmp_path / "logs/ledger.log"
    with pytest.raises(ConfigError, match=r"ledger\.log_file"):
        pick_log_file({"log_file": "."}, tmp_path, "ledger")


async def test_one_request_id_finds_a_bet_in_the_edge_log_and_the_ledger_log(tmp_path):
    cluster = Cluster(tmp_path, edge_ids=("eu",), ledger_attempt_timeout_s=0.3, ledger_deadline_s=0.8)
    gs = cluster.headers  # bound after start (tokens are made there)
    try:
        await cluster.start()
        await seed(cluster, players=1)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            bet = {
                "id": "log-bet-1",
                "player_id": "p001",
                "currency": "EUR",
                "amount_minor": 50,
                "round_id": "log-r1",
                "game_id": "slots-1",
            }
            async with http.post(
                cluster.url("eu") + "/v1/bets", json=bet, headers={**gs("game_server"), "X-Request-Id": "find-me-0001"}
            ) as r:
                assert r.status == 201 and r.headers["X-Request-Id"] == "find-me-0001"
            await cluster.stop_service("ledger")  # a 503 episode, seen from the edge
            async with http.post(
                cluster.url("eu") + "/v1/bets",
                json={**bet, "id": "log-bet-2"},
                headers={**gs("game_server"), "X-Request-Id": "find-me-0002"},
            ) as r:
                problem = await r.json()
                assert r.status == 503 and problem["request_id"] == "find-me-0002"
    finally:
        await cluster.stop()
    ledger, edge = json_lines(tmp_path / "ledger.log"), json_lines(tmp_path / "edge-eu.log")
    [edge_line] = [e for e in edge if e.get("request_id") == "find-me-0001" and e["event"] == "http_request"]
    assert edge_line["route"] == "/v1/bets" and edge_line["status"] == 201 and edge_line["method"] == "POST"
    assert edge_line["service"] == "edge" and edge_line["edge_id"] == "eu" and edge_line["principal"] == "gs"
    assert edge_line["client_id"] == "gs" and edge_line["via"] == "eu" and edge_line["id"] == "log-bet-1"
    # (the edge's first sight of the bonus document reads the ledger's truth while serving the bet:
    # that read carries the same id)
    [action] = [e for e in ledger if e.get("request_id") == "find-me-0001" and e["event"] == "ledger_action"]
    assert action["op"] == "bet" and action["id"] == "log-bet-1"
    assert action["service"] == "ledger" and action["via"] == "eu" and action["client_id"] == "gs"
    assert action["status"] == 201 and action["principal"] == "edge-eu" and action["batch_request_id"]
    [batch] = [e for e in ledger if e.get("request_id") == action["batch_request_id"]]
    assert batch["event"] == "http_request" and batch["route"] == "/v1/batch"
    [unavailable] = [e for e in edge if e.get("request_id") == "find-me-0002" and e["event"] == "http_request"]
    assert unavailable["status"] == 503 and unavailable["code"] == "ledger_unavailable"
    assert unavailable["level"] == "warning"
    events = {e["event"] for e in ledger} | {e["event"] for e in edge}
    assert {"ledger_started", "ledger_stopped", "edge_started", "edge_stopped", "admin_action"} <= events
    [started] = [e for e in ledger if e["event"] == "ledger_started"]
    assert started["version"] and started["config"]["port"] == cluster.services["ledger"].port
    assert started["pipeline_depth"] == 1  # the cluster's ledger runs on SQLite
    everything = (tmp_path / "ledger.log").read_text() + (tmp_path / "edge-eu.log").read_text()
    assert all(token not in everything for token in cluster.tokens.values())
