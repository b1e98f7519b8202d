"""Disk full: every money write is refused cleanly (503 problem+json, never acknowledged), no money
moves and nothing is half-applied; once space returns the same requests commit, the chain verifies,
and a power cut afterwards still loses nothing acknowledged.

The real `croupier ledger serve` runs under the power-loss shim with a disk-full flag: while the
flag file exists, every write to the database and WAL fails with ENOSPC (SQLite: SQLITE_FULL).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.crash_workload import HTTP_TIMEOUT, PLAYERS, Ack, Request, bet, check, deposit, open_accounts, send
from tests.support.ledger import auth_headers
from tests.support.powered_ledger import Disk, PoweredLedger

pytestmark = pytest.mark.slow

REFUSED_REQUESTS = 24


def money_requests() -> list[Request]:
    """Deposits and bets on every player, all with fresh ids."""
    return [
        deposit(f"full-d-{i}", PLAYERS[i % len(PLAYERS)], 13)
        if i % 3 == 0
        else bet(f"full-b-{i}", PLAYERS[i % len(PLAYERS)], 5, f"full-r-{i}")
        for i in range(REFUSED_REQUESTS)
    ]


async def ledger_state(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """The journal head (after verifying the chain) and every player's balances."""
    async with http.post(url + "/admin/v1/audit/verify", headers=auth_headers("admin_read")) as r:
        audit = await r.json()
    assert audit["ok"] is True, audit
    balances = {}
    for player in PLAYERS:
        async with http.get(f"{url}/v1/players/{player}/balances", headers=auth_headers("edge")) as r:
            balances[player] = (await r.json())["balances"]
    return {"head_sequence": audit["head_sequence"], "head_hash": audit["head_hash"], "balances": balances}


@pytest.mark.parametrize(
    "writes_before_full",
    [
        pytest.param(0, id="full-before-the-commit"),
        pytest.param(3, id="full-half-way-through-a-commit"),  # 1.5 WAL frames (header + page each)
    ],
)
async def test_disk_full_refuses_cleanly_moves_no_money_and_recovers(
    powered: PoweredLedger, tmp_path: Path, writes_before_full: int
) -> None:
    full_flag = tmp_path / "disk-full"
    await powered.start(Disk(full_flag=full_flag))
    requests = money_requests()
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        acks = await open_accounts(http, powered.url)
        before = await ledger_state(http, powered.url)

        full_flag.write_text(str(writes_before_full))
        answers = await asyncio.gather(*(send(http, powered.url, req) for req in requests))
        for status, content_type, body in answers:
            assert (status, content_type, body["code"]) == (503, "application/problem+json", "storage_unavailable")
        assert await ledger_state(http, powered.url) == before, "money moved while the disk was full"
        assert "database or disk is full" in powered.log.read_text()  # SQLITE_FULL, not another failure
        assert full_flag.read_text() == "0", "the allowed writes were not used: no commit failed half-way"
        for req in requests:  # nothing half-applied: no journal entry, no idempotency record
            async with http.get(f"{powered.url}/v1/transactions/{req.id}", headers=auth_headers("edge")) as r:
                assert r.status == 404, await r.text()

        full_flag.unlink()
        answers = await asyncio.gather(*(send(http, powered.url, req) for req in requests))
        assert [status for status, _, _ in answers] == [201] * len(requests), answers
        acks += [Ack(req, body) for req, (_, _, body) in zip(requests, answers, strict=True)]
        after = await ledger_state(http, powered.url)
        assert after["head_sequence"] == before["head_sequence"] + len(requests)
        assert sorted(body["transaction"]["sequence"] for _, _, body in answers) == list(
            range(before["head_sequence"] + 1, after["head_sequence"] + 1)
        )

    powered.power_cut()
    await powered.start(Disk())
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        report = await check(http, powered.url, acks)
    assert report.clean, report
