"""The benchmark's own tools measure what they claim: wrk's Lua bets, answer counting, the no-op
baseline server and the journal-growth check that makes the ledger figure count real commits."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from shared.auth import new_token
from shared.models import BetIn

from common import WRK_DIR, busy_share, ledger_settings, machine_cpu_s, parse_wrk_output, process_cpu_s, run_wrk
from core_ledger.store import SqliteStore
from harness.cluster import Cluster
from harness.launcher import ServiceProcess, free_port
from ledger_throughput import (
    NOOP_SERVER,
    WRONG_ANSWER,
    batch_statuses,
    commit_check,
    drive_batches,
    offline_check,
)
from ledger_throughput import parse_args as parse_throughput_args
from ledger_writer import Bets, drive, seed, writer_service

PLAYERS = 50
GAMES = ("slots-1", "slots-2", "roulette-1")
REFUSE_EVERY = 10  # the recording server refuses every 10th bet it sees


def wrk_line(statuses: dict[str, int], requests: int, first_error: str | None = None) -> str:
    raw = {
        "duration_us": 2_000_000,
        "requests": requests,
        "bytes": 1,
        "statuses": statuses,
        "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 1},
        "latency_us": {"mean": 1500.0, "max": 9000, "p50": 1200, "p90": 2000, "p99": 4500, "p999": 8000},
        "first_error": first_error,
    }
    return "Running 2s test\nsome wrk text\nWRK_JSON " + json.dumps(raw) + "\n"


def test_wrk_output_parses_into_counts_rates_and_milliseconds():
    result = parse_wrk_output(wrk_line({"201": 90, "422": 10}, 100, "422 {}"))
    assert (result.ok, result.non_2xx, result.errors) == (90, 10, 11)
    assert result.ok_per_s == 45.0
    assert result.latency_ms["p99"] == 4.5
    assert result.figures()["statuses"] == {"201": 90, "422": 10}


def test_wrk_output_without_exactly_one_report_line_is_refused():
    with pytest.raises(ValueError):
        parse_wrk_output("Running 2s test\nno report here\n")
    with pytest.raises(ValueError):
        parse_wrk_output(wrk_line({"201": 1}, 1) + wrk_line({"201": 1}, 1))


def test_process_cpu_time_grows_with_work_done():
    before = process_cpu_s(os.getpid())
    deadline = before + 0.05
    for _ in range(10_000):  # bounded: 50 ms of CPU takes far fewer rounds than this
        sum(range(100_000))
        if process_cpu_s(os.getpid()) >= deadline:
            break
    assert process_cpu_s(os.getpid()) >= deadline


@pytest.fixture
async def recording_server(tmp_path: Path):
    """A bet endpoint that records every valid body and refuses every REFUSE_EVERY-th with 422."""
    seen: list[BetIn] = []

    async def bets(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer " + token
        seen.append(BetIn.model_validate(await request.json()))
        if len(seen) % REFUSE_EVERY == 0:
            return web.json_response({"code": "insufficient_funds"}, status=422)
        return web.json_response({"transaction": {"id": seen[-1].id}}, status=201)

    token = new_token()
    token_file = tmp_path / "edge.token"
    token_file.write_text(token + "\n")
    app = web.Application()
    app.router.add_post("/v1/bets", bets)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}", token_file, seen
    finally:
        await runner.cleanup()


async def test_bets_script_sends_fresh_ids_and_rounds_that_keep_their_player_and_game(recording_server):
    url, token_file, seen = recording_server
    result = await asyncio.to_thread(
        run_wrk,
        url,
        script=WRK_DIR / "bets.lua",
        script_args=[str(token_file), "t", str(PLAYERS), ",".join(GAMES)],
        threads=2,
        connections=8,
        duration_s=1,
    )
    assert result.requests > 50
    assert len({bet.id for bet in seen}) == len(seen), "every request carries a fresh id"
    assert {bet.player_id for bet in seen} <= {f"bench-p{i}" for i in range(PLAYERS)}
    assert len({bet.player_id for bet in seen}) > PLAYERS // 2, "bets are spread over the players"
    owner: dict[str, tuple[str, str]] = {}
    for bet in seen:
        assert owner.setdefault(bet.round_id, (bet.player_id, bet.game_id)) == (bet.player_id, bet.game_id)
    assert {bet.game_id for bet in seen} == set(GAMES)
    # Answers wrk did not wait for (in flight at the end) are the only difference allowed.
    assert 0 <= len(seen) - result.requests <= 8
    assert result.statuses[422] >= result.requests // REFUSE_EVERY - 1
    assert result.non_2xx == result.statuses[422]
    assert result.first_error is not None and result.first_error.startswith("422 ")


async def test_noop_server_answers_a_bet_like_the_ledger_and_refuses_bad_credentials(tmp_path: Path):
    token_file = tmp_path / "edge.token"
    token_file.write_text(new_token())
    port = free_port()
    server = ServiceProcess(
        "noop",
        [sys.executable, str(NOOP_SERVER), "--port", str(port), "--token-file", str(token_file)],
        log_path=tmp_path / "noop.log",
        cwd=tmp_path,
    )
    bet = {
        "id": "b-1",
        "player_id": "p1",
        "currency": "EUR",
        "amount_minor": 500,
        "round_id": "r1",
        "game_id": "slots-1",
    }
    try:
        server.start()
        await server.wait_ready(f"http://127.0.0.1:{port}/healthz", timeout_s=30.0)
        async with aiohttp.ClientSession(
            base_url=f"http://127.0.0.1:{port}", timeout=aiohttp.ClientTimeout(total=10)
        ) as http:
            good = {"Authorization": f"Bearer {token_file.read_text()}"}
            async with http.post("/v1/bets", json=bet, headers=good) as answer:
                assert answer.status == 201
                body = await answer.json()
            async with http.post("/v1/bets", json=bet, headers={"Authorization": "Bearer wrong"}) as answer:
                assert (answer.status, (await answer.json())["code"]) == (401, "unauthenticated")
            async with http.post("/v1/bets", json={**bet, "amount_minor": 1.5}, headers=good) as answer:
                assert (answer.status, (await answer.json())["code"]) == (400, "validation_error")
    finally:
        assert server.stop() == 0  # the no-op server drains and exits 0 on SIGTERM
    assert body["transaction"]["id"] == "b-1" and body["transaction"]["amount_minor"] == 500
    assert set(body["balance"]) == {"player_id", "currency", "balance_minor", "version"}
    assert body["replayed"] is False
    # Logged as the ledger logs: one JSON line per request, with its request id, no token.
    text = (tmp_path / "noop.log").read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["event"] == "http_request"]
    assert [r["status"] for r in requests] == [201, 401, 400]
    assert all(r["request_id"] and r["service"] == "noop" and r["route"] == "/v1/bets" for r in requests)
    assert token_file.read_text() not in text


def audit(ok: bool, head: int) -> dict:
    return {"ok": ok, "head_sequence": head, "entries_checked": head, "head_hash": "x", "first_bad_sequence": None}


def test_commit_check_accepts_only_journal_growth_explained_by_the_bets_seen():
    result = parse_wrk_output(wrk_line({"201": 1000}, 1000))
    assert commit_check(result, 500, 1500, audit(True, 1500), connections=64)["commits_match"]
    assert commit_check(result, 500, 1564, audit(True, 1564), connections=64)["commits_match"], "64 in flight"
    assert not commit_check(result, 500, 1565, audit(True, 1565), connections=64)["commits_match"]
    assert not commit_check(result, 500, 1499, audit(True, 1499), connections=64)["commits_match"]
    assert not commit_check(result, 500, 1500, audit(False, 1500), connections=64)["chain_ok"]
    assert not commit_check(result, 500, 1500, audit(True, 1501), connections=64)["chain_ok"]


def _bet_item(status: int, outcome: str = "committed") -> dict:
    return {"status": status, "body": {"transaction": {"type": "bet", "outcome": outcome}}}


def test_a_batch_answer_counts_only_committed_bets_as_201():
    ok = {"results": [_bet_item(201)] * 3}
    assert batch_statuses(200, ok, 3) == ({201: 3}, None)
    mixed = {"results": [_bet_item(201), _bet_item(422, "rejected"), _bet_item(201, "rejected")]}
    counts, problem = batch_statuses(200, mixed, 3)
    assert counts == {201: 1, 422: 1, WRONG_ANSWER: 1} and problem is not None
    assert batch_statuses(200, {"results": [_bet_item(201)] * 2}, 3)[0] == {WRONG_ANSWER: 3}  # a result missing
    assert batch_statuses(503, {"code": "ledger_unavailable"}, 3)[0] == {503: 3}


async def test_batch_driver_checks_every_answer_of_a_real_batch_endpoint():
    refused = [0]

    async def batch(request: web.Request) -> web.Response:
        body = await request.json()
        results = []
        for _action in body["actions"]:
            refused[0] += 1
            results.append(_bet_item(422, "rejected") if refused[0] % REFUSE_EVERY == 0 else _bet_item(201))
        return web.json_response({"results": results})

    app = web.Application()
    app.router.add_post("/v1/batch", batch)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        result = await drive_batches(f"http://127.0.0.1:{port}", "t", "run", PLAYERS, 0.3, connections=2, size=20)
    finally:
        await runner.cleanup()
    assert result.requests == refused[0] and result.requests % 20 == 0 and result.requests > 0
    assert result.errors == refused[0] // REFUSE_EVERY and result.ok == result.requests - result.errors
    assert result.latency_ms["p99"] > 0


async def test_offline_check_finds_one_bet_row_per_journaled_bet_and_a_clean_rebuild(tmp_path: Path):
    service = writer_service(SqliteStore(tmp_path / "ledger.db"))
    await service.start()
    try:
        await seed(service, 3)
        await drive(service, Bets(3, "run", 1), 12)
    finally:
        await service.stop()
    check = await offline_check(tmp_path / "ledger.db")
    assert check == {
        "offline_chain_ok": True,
        "tables_equal_rebuild": True,
        "tables_differing": [],
        "bet_rows": 12,
        "journaled_bets": 12,
        "one_row_per_bet": True,
    }


def test_the_machine_busy_share_counts_work_done_between_two_readings():
    """One CPU spinning for 0.3 s between two readings: the machine's busy seconds grow by at least
    that (other work only adds), never beyond the total, and the share lies between 0 and 1."""
    before = machine_cpu_s()
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # bounded: 0.3 s of wall time
        pass
    after = machine_cpu_s()
    busy, total = after[0] - before[0], after[1] - before[1]
    assert 0.25 <= busy <= total
    assert 0.0 < busy_share(before, after) <= 1.0
    assert busy_share(before, before) == 0.0  # no time passed: nothing to share


def test_the_machine_cpu_reading_counts_all_but_idle_and_io_wait_as_busy():
    tick = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal guest guest_nice
    line = "cpu  100 10 40 800 30 5 5 10 7 0\ncpu0 50 5 20 400 15 2 3 5 7 0\n"
    assert machine_cpu_s(line) == (pytest.approx(170 / tick), pytest.approx(1000 / tick))
    assert busy_share(machine_cpu_s(line), machine_cpu_s("cpu  200 10 40 1100 30 5 5 10 0 0\n")) == 0.25


def test_ledger_set_reads_each_value_as_toml_and_refuses_what_is_not_a_setting():
    assert ledger_settings(["derived_flush_groups=8", "group_commit=false", "backend=postgres", "x = 0.5"]) == {
        "derived_flush_groups": 8,
        "group_commit": False,
        "backend": "postgres",  # not TOML: taken as text
        "x": 0.5,
    }
    for bad in ("novalue", "=3", "a b=1", "port=1", "data_dir=/tmp/elsewhere"):  # the harness finds a ledger by these
        with pytest.raises(ValueError):
            ledger_settings([bad])
    opts = parse_throughput_args(["--ledger-set", "fronts=0", "--ledger-set", "derived_flush_rows=900"])
    assert opts.ledger_settings == {"fronts": 0, "derived_flush_rows": 900}
    with pytest.raises(SystemExit):
        parse_throughput_args(["--ledger-set", "host=0.0.0.0"])


async def test_a_setting_given_to_the_cluster_reaches_its_ledger_which_checks_it(tmp_path: Path):
    cluster = Cluster(tmp_path / "ok", edge_ids=(), log_level="warning", ledger_settings={"derived_flush_rows": 900})
    try:
        await cluster.start()
        async with (
            aiohttp.ClientSession() as http,
            http.get(cluster.url("ledger") + "/metrics", headers=cluster.headers("metrics")) as r,
        ):
            text = await r.text()
    finally:
        await cluster.stop()
    assert "ledger_derived_rows_bound 900.0" in text.splitlines()  # the bound starts at the configured rows
    refused = Cluster(tmp_path / "bad", edge_ids=(), log_level="warning", ledger_settings={"derived_flush_rows": 0})
    try:
        with pytest.raises(RuntimeError, match="before ready"):  # the ledger's own config check refuses it
            await refused.start()
    finally:
        await refused.stop()
