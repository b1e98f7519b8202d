"""The edge in process against a real ledger (in process too, on loopback): answers forwarded
byte for byte, and CRDT effects that never fail a committed money answer."""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from shared.ids import AMOUNT_MINOR_MAX

from core_ledger.app import create_app as create_ledger_app
from core_ledger.domain.accounts import system_account
from edge.service import EdgeService
from harness.cluster import free_port
from tests.support.clock import FakeClock
from tests.support.edges import Edges
from tests.support.ledger import TOKENS, ledger_config
from tests.support.polling import eventually
from tests.support.real_ledger_traffic import numbered_bet, post_raw, setup_player

Json = dict[str, Any]


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[TestServer]:
    server = TestServer(create_ledger_app(ledger_config(tmp_path / "ledger"), clock=FakeClock()), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def edge(tmp_path: Path, ledger: TestServer) -> AsyncIterator[Edges]:
    e = Edges(tmp_path, str(ledger.make_url("")).rstrip("/"), {"eu": free_port()})
    await e.start("eu", ledger_token=TOKENS["edge"])
    try:
        yield e
    finally:
        await e.stop("eu")


@pytest.fixture
def as_role(ledger: TestServer, http: aiohttp.ClientSession) -> Callable[[str, str, Json], Awaitable[tuple[int, Json]]]:
    async def call(role: str, path: str, body: Json) -> tuple[int, Json]:
        headers = {"Authorization": f"Bearer {TOKENS[role]}"}
        async with http.post(ledger.make_url(path), json=body, headers=headers) as r:
            return r.status, await r.json()

    return call


async def test_a_replay_through_the_edge_is_the_first_answer_byte_for_byte_but_replayed(
    edge: Edges, as_role: Any, http: aiohttp.ClientSession
) -> None:
    await setup_player(as_role)
    assert (
        await as_role(
            "admin_write",
            "/admin/v1/jackpots",
            {
                "jackpot_id": "mega",
                "currency": "EUR",
                "seed_minor": 100,
                "contribution_ppm": 10_000,
                "game_ids": ["slots"],
            },
        )
    )[0] == 201
    for body in (numbered_bet(1, 500), numbered_bet(2, AMOUNT_MINOR_MAX)):  # committed, then a stored rejection (funds)
        # A retry of one request keeps its X-Request-Id (a problem body names it as `request_id`).
        first_status, first = await post_raw(http, edge.url("eu") + "/v1/bets", body, f"retry-{body['id']}")
        replay_status, replay = await post_raw(http, edge.url("eu") + "/v1/bets", body, f"retry-{body['id']}")
        assert (first_status, replay_status) in ((201, 200), (422, 422)), (first, replay)
        assert first.count(b'"replayed":false') == 1
        assert first.replace(b'"replayed":false', b'"replayed":true') == replay, (first, replay)


async def test_bonus_wagering_beyond_2_53_is_shown_exactly_and_never_fails_the_bet(
    edge: Edges, as_role: Any, http: aiohttp.ClientSession
) -> None:
    await setup_player(as_role, deposits=10)
    status, _ = await as_role(
        "admin_write",
        "/admin/v1/bonuses",
        {
            "id": "g1",
            "player_id": "p1",
            "bonus_id": "w",
            "currency": "EUR",
            "amount_minor": 1,
            "wagering_requirement_minor": 1,
            "expires_at": "2030-01-01T00:00:00Z",
        },
    )
    assert status == 201
    for i in range(10):  # ten bets of 10**15: the wagering display passes 2**53 at the tenth
        status, body = await post_raw(http, edge.url("eu") + "/v1/bets", numbered_bet(i, AMOUNT_MINOR_MAX))
        assert status == 201, body
    status, _ = await post_raw(http, edge.url("eu") + "/v1/bets", numbered_bet(9, AMOUNT_MINOR_MAX))
    assert status == 200  # the retry is a replay, not a 500
    expected = 10 * AMOUNT_MINOR_MAX
    assert expected > 2**53

    async def exact() -> bool:
        async with http.get(edge.url("eu") + "/v1/players/p1/bonus-progress") as resp:
            progress = await resp.json()
        return progress["bonuses"] == [{"bonus_id": "w", "wagered_minor": expected, "by_edge": {"eu": expected}}]

    await eventually(exact)


async def test_a_failing_effect_never_fails_the_committed_answer_and_reconciliation_repairs_it(
    tmp_path: Path, ledger: TestServer, as_role: Any, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    await setup_player(as_role)
    assert (
        await as_role(
            "admin_write",
            "/admin/v1/bonuses",
            {
                "id": "g1",
                "player_id": "p1",
                "bonus_id": "w",
                "currency": "EUR",
                "amount_minor": 1,
                "wagering_requirement_minor": 1,
                "expires_at": "2030-01-01T00:00:00Z",
            },
        )
    )[0] == 201
    real = EdgeService._apply_effects
    failures = [AssertionError("a bug in an effect")]

    async def flaky(self: EdgeService, op: str, tx: Json, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        await real(self, op, tx, **kwargs)

    monkeypatch.setattr(EdgeService, "_apply_effects", flaky)
    e = Edges(tmp_path, str(ledger.make_url("")).rstrip("/"), {"eu": free_port()})
    await e.start("eu", ledger_token=TOKENS["edge"])
    try:
        with capture_logs() as logs:
            status, body = await post_raw(http, e.url("eu") + "/v1/bets", numbered_bet(1, 700))
        assert status == 201, body
        [failed] = [x for x in logs if x["event"] == "effect_failed"]
        assert failed["docs"] == ["bonus/p1"] and "a bug in an effect" in failed["error"]
        status, _ = await post_raw(http, e.url("eu") + "/v1/bets", numbered_bet(1, 700))
        assert status == 200  # the retry replays; it does not fail either
        async with http.get(e.url("eu") + "/metrics", headers={"Authorization": "Bearer metrics-token"}) as resp:
            metrics = await resp.text()
        assert 'edge_effect_failures_total{operation="bet"} 1.0' in metrics

        async def repaired() -> bool:
            async with http.get(e.url("eu") + "/v1/players/p1/bonus-progress") as resp:
                progress = await resp.json()
            return progress["bonuses"] == [{"bonus_id": "w", "wagered_minor": 700, "by_edge": {"eu": 700}}]

        await eventually(repaired)
    finally:
        await e.stop("eu")


async def test_a_halted_ledger_is_answered_500_through_the_edge_without_retries(
    edge: Edges, as_role: Any, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    await setup_player(as_role)
    specs = importlib.import_module("core_ledger.domain.specs").SPECS
    real_bet = specs["bet"].decide

    def bet_without_house(view: Any, cmd: Any, ctx: Any) -> Any:
        postings, result = real_bet(view, cmd, ctx)
        return [p for p in postings if p["account"] != system_account("house", "EUR")], result

    monkeypatch.setitem(specs, "bet", dataclasses.replace(specs["bet"], decide=bet_without_house))
    started = time.monotonic()
    for i in range(2):
        status, body = await post_raw(http, edge.url("eu") + "/v1/bets", numbered_bet(i, 100))
        assert status == 500 and orjson.loads(body)["code"] == "ledger_halted", body
    assert time.monotonic() - started < 1.0  # refused at once: no retries up to the edge's deadline
