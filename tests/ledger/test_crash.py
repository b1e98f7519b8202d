"""Crash: kill -9 a real ledger process under concurrent load; every acknowledged bet survives once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.support.ledger_process import LedgerProcess, auth

pytestmark = pytest.mark.slow

WORKERS = 16
ACKS_BEFORE_KILL = 300
LOAD_TIMEOUT_S = 60.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=20)


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerProcess]:
    process = LedgerProcess(tmp_path)
    try:
        yield process
    finally:
        process.stop()


async def load(session: aiohttp.ClientSession, url: str, worker: int, acked: list[str], stop: asyncio.Event) -> None:
    """Send bets one after another until the ledger dies; remember what it acknowledged."""
    for i in range(100_000):
        if stop.is_set():
            return
        bet_id = f"w{worker}-{i}"
        body = {
            "id": bet_id,
            "player_id": "p1",
            "currency": "EUR",
            "amount_minor": 1,
            "round_id": f"r{worker}-{i // 5}",
            "game_id": "slots",
            "client_id": "gs",
        }
        try:
            async with session.post(url + "/v1/bets", json=body, headers=auth("edge")) as r:
                if r.status == 201:
                    acked.append(bet_id)
        except (TimeoutError, aiohttp.ClientError):
            return


async def test_kill_9_under_load_loses_no_acknowledged_bet(ledger: LedgerProcess) -> None:
    await ledger.start()
    acked: list[str] = []
    stop = asyncio.Event()
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as s:
        async with s.post(
            ledger.url + "/admin/v1/players",
            json={"player_id": "p1", "currencies": ["EUR"]},
            headers=auth("admin_write"),
        ) as r:
            assert r.status == 201
        async with s.post(
            ledger.url + "/v1/deposits",
            json={"id": "d", "player_id": "p1", "currency": "EUR", "amount_minor": 10**9},
            headers=auth("cashier"),
        ) as r:
            assert r.status == 201
        workers = [asyncio.create_task(load(s, ledger.url, w, acked, stop)) for w in range(WORKERS)]
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while len(acked) < ACKS_BEFORE_KILL and time.monotonic() < deadline:  # noqa: ASYNC110  polls what the workers count; deadline-bound
            await asyncio.sleep(0.02)
        ledger.kill9()  # mid-flight: requests are queued, being judged and being committed
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), timeout=30)
    assert len(acked) >= ACKS_BEFORE_KILL
    await ledger.start()
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as s:
        async with s.post(ledger.url + "/admin/v1/audit/verify", headers=auth("admin_read")) as r:
            report = await r.json()
        assert report["ok"] is True
        lines = []
        after = 0
        for _ in range(1000):
            page_url = ledger.url + f"/v1/journal?after_sequence={after}&limit=1000"
            async with s.get(page_url, headers=auth("replica")) as r:
                page = [orjson.loads(line) for line in (await r.text()).splitlines()]
            if not page:
                break
            lines += page
            after = page[-1]["sequence"]
        bets = [e["transaction"]["id"] for e in lines if e["transaction"]["type"] == "bet"]
        assert len(bets) == len(set(bets)), "a bet was journaled twice"
        assert set(acked) <= set(bets), "an acknowledged bet was lost"
        async with s.get(ledger.url + "/v1/players/p1/balances", headers=auth("edge")) as r:
            balance = (await r.json())["balances"][0]["balance_minor"]
        assert balance == 10**9 - len(bets)
