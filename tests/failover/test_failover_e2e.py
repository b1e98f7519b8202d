"""Failover with real processes: a synchronous standby, concurrent bets through the edges, kill -9
of the primary, promotion. Every acknowledged bet is on the new primary exactly once, the chain
verifies, the edges move within their deadline, the restarted old primary is fenced, and
`croupier ledger compare` picks the promoted copy (reporting, never merging, any extra tail)."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import pytest

from harness.cluster import STANDBY, Cluster, seed
from harness.verify import read_journal
from tests.support.bettor import Bettor

pytestmark = pytest.mark.slow

PLAYERS = 6
WORKERS = 8
TRAFFIC_AFTER_S = 4.0  # and this long after the promotion
MOVE_SLACK_S = 2.0  # scheduling slack on the shared machine, on top of the edges' deadline


async def test_failover_loses_no_acknowledged_bet_and_fences_the_old_primary(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "c", edge_ids=("eu", "us"), standby=True, log_level="warning")
    try:
        await cluster.start()
        await seed(cluster, players=PLAYERS)
        async with aiohttp.ClientSession(
            headers=cluster.headers("game_server"), timeout=aiohttp.ClientTimeout(total=15)
        ) as http:
            bettor = Bettor(http, cluster.url, cluster.edge_ids, players=PLAYERS)
            workers = [asyncio.create_task(bettor.worker(w)) for w in range(WORKERS)]
            try:
                acked_before = await bettor.traffic_before()
                promoted = await cluster.failover()
                bettor.marked_at = time.monotonic()
                await asyncio.sleep(TRAFFIC_AFTER_S)
            finally:
                bettor.stop.set()
                await asyncio.wait_for(asyncio.gather(*workers), 30)
        assert acked_before > 0 and promoted["epoch"] == 2
        assert len(bettor.acked) > acked_before, "no bet was acknowledged after the failover"
        move_limit = cluster.ledger_deadline_s + MOVE_SLACK_S
        for edge in cluster.edge_ids:  # each edge found the new primary within its deadline (+ slack)
            moved_at = bettor.first_ack_after_by_target.get(edge, math.inf)
            assert moved_at - bettor.marked_at <= move_limit, (edge, bettor.first_ack_after_by_target)

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            new = cluster.url(STANDBY)
            entries = await read_journal(http, new, cluster.headers("admin_read"))
            ids = Counter(e["transaction"]["id"] for e in entries if e["transaction"]["type"] == "bet")
            assert all(ids[i] == 1 for i in bettor.acked), [i for i in bettor.acked if ids[i] != 1][:5]
            async with http.post(new + "/admin/v1/audit/verify", headers=cluster.headers("admin_read")) as r:
                report = await r.json()
            assert report["ok"] and report["head_sequence"] == entries[-1]["sequence"]

            await cluster.start_service("ledger", ready=False)  # the old primary comes back
            old = cluster.url("ledger")
            async with http.get(old + "/readyz") as r:  # its peer check saw epoch 2 before serving
                assert r.status == 503 and (await r.json())["fenced"] is True
            bet = {
                "id": "late-1",
                "player_id": "p001",
                "currency": "EUR",
                "amount_minor": 1,
                "round_id": "late",
                "game_id": "slots-1",
            }
            async with http.post(old + "/v1/bets", json=bet, headers=cluster.headers("edge")) as r:
                assert r.status == 503 and (await r.json())["code"] == "not_primary"
        await cluster.stop()

        old_db, new_db = (cluster.root / f"{n}-data" / "ledger.db" for n in ("ledger", STANDBY))
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "croupier", "ledger", "compare", str(old_db), str(new_db)],
            capture_output=True,
            timeout=60,
        )
        verdict = orjson.loads(out.stdout)
        assert verdict["winner"] == str(new_db) and verdict["copies"][str(new_db)]["verifies"]
        assert out.returncode == (0 if verdict["loser_is_prefix"] else 1)
        if not verdict["loser_is_prefix"]:  # the old primary's unacknowledged tail: reported, not merged
            # Only what was in flight at the kill can be there (each worker has one bet in flight);
            # those that were acknowledged were acknowledged by the new primary, on retry.
            tail = await tail_ids(old_db, verdict["divergence_sequence"])
            assert 0 < verdict["loser_extra_entries"] == len(tail) <= WORKERS
            assert all(ids[i] == 1 for i in tail & set(bettor.acked))
        moved = [round(t - bettor.marked_at, 2) for t in bettor.first_ack_after_by_target.values()]
        print(
            f"acked before/after kill: {acked_before}/{len(bettor.acked) - acked_before}; "
            f"edges moved in {moved} s; "
            f"old primary's extra tail: {verdict['loser_extra_entries']}"
        )
    finally:
        await cluster.stop()


async def tail_ids(db: Path, from_sequence: int) -> set[str]:
    """Transaction ids of the journal entries from a sequence on (the diverged tail)."""
    from core_ledger.store import SqliteStore

    store = SqliteStore(db)
    await store.open()
    try:
        rows = await store.journal(from_sequence - 1, 100_000)
    finally:
        await store.close()
    return {orjson.loads(text)["transaction"]["id"] for _, text in rows}
