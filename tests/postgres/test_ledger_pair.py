"""The active/passive ledger pair on one PostgreSQL, as real processes (`Cluster(pair=True)`): two
ledger copies with `writer_lease = true` on one schema, two edges configured with both URLs.

- Only one copy is ready; the passive one answers /readyz 503 (role `passive`, a reason) and every
  write 503 `not_primary` with `Retry-After`.
- kill -9 of the active under concurrent bets through the edges: the passive takes over within
  seconds (printed), at a higher epoch; every acknowledged bet is in the journal exactly once and
  the chain verifies.
- A network cut of the active from PostgreSQL (its own in-process `FaultProxy`, blackholed: the
  kernel here has no nftables): the cut copy stops acknowledging (it steps down when its lease
  heartbeat fails, and the server ends its lease session after the ttl), the other copy takes
  over, and no two writers ever commit: the journal is one chain, its epochs never go back, and
  the cut copy refuses writes once the database is back. (The proxy passes a close on to the
  server, as a real cut would not: the server-side ttl is proven by the pause test below.)
- SIGSTOP of the active: no close reaches the server; PostgreSQL ends the silent lease session
  after the ttl, the other copy takes over, and the woken copy commits nothing.

One PostgreSQL serves the module; each test starts from an empty `ledger` schema. Each < 60 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from harness.cluster import STANDBY, Cluster, seed
from harness.postgres import LocalPostgres, PostgresFailed
from harness.verify import read_journal
from tests.support.bettor import Bettor

pytestmark = pytest.mark.slow

PLAYERS = 4
WORKERS = 6
EDGES = ("eu", "us")
ACKS_AFTER = 20  # then until this many bets were acknowledged after it
TRAFFIC_AFTER_MAX_S = 25.0  # ... or this long at most
TAKEOVER_MAX_S = 10.0  # kill -9 → the other copy is the ready primary
LEASE_TTL_S = 2.0
CUT_TAKEOVER_MAX_S = 20.0  # network cut → the other copy is the ready primary (ttl + the stuck commit's bound)


@pytest.fixture(scope="module")
def database() -> Iterator[LocalPostgres]:
    root = Path(tempfile.mkdtemp(prefix="cr-pair-"))
    server = LocalPostgres(root / "pg")
    try:
        try:
            server.start()
        except PostgresFailed as e:
            pytest.fail(str(e), pytrace=False)
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def short_root() -> AsyncIterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cr-pr-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _empty_schema(database: LocalPostgres) -> None:
    conn = await asyncpg.connect(database.dsn, timeout=10)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS ledger CASCADE")
    finally:
        await conn.close()


async def _bets_across(cluster: Cluster, fault: Any) -> tuple[Bettor, int, float]:
    """Bets from WORKERS clients through the edges, `fault()` (async) in the middle, then until
    ACKS_AFTER acks after it. The bettor, the acks before the fault, and its start time."""
    async with aiohttp.ClientSession(
        headers=cluster.headers("game_server"), timeout=aiohttp.ClientTimeout(total=15)
    ) as http:
        bettor = Bettor(http, cluster.url, cluster.edge_ids, players=PLAYERS, acks_wanted_after=ACKS_AFTER)
        workers = [asyncio.create_task(bettor.worker(w)) for w in range(WORKERS)]
        try:
            acked_before = await bettor.traffic_before()
            started = time.monotonic()
            bettor.marked_at = started
            await fault()
            with contextlib.suppress(TimeoutError):  # asserted by the caller
                await asyncio.wait_for(bettor.enough_after.wait(), TRAFFIC_AFTER_MAX_S)
        finally:
            bettor.stop.set()
            await asyncio.wait_for(asyncio.gather(*workers), 30)
    return bettor, acked_before, started


async def _check_journal(cluster: Cluster, active: str, acked: list[str]) -> list[dict[str, Any]]:
    """Every acknowledged bet exactly once on the active copy's journal, the chain verifies, and the
    epochs never go back along it (one writer at a time). The journal."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        url = cluster.url(active)
        entries = await read_journal(http, url, cluster.headers("admin_read"))
        ids = Counter(e["transaction"]["id"] for e in entries if e["transaction"]["type"] == "bet")
        assert all(ids[i] == 1 for i in acked), [i for i in acked if ids[i] != 1][:5]
        assert all(n == 1 for n in ids.values()), [i for i, n in ids.items() if n != 1][:5]
        async with http.post(url + "/admin/v1/audit/verify", headers=cluster.headers("admin_read")) as r:
            report = await r.json()
        assert report["ok"] and report["head_sequence"] == entries[-1]["sequence"], report
    epochs = [e["epoch"] for e in entries]
    assert epochs == sorted(epochs), "an entry of a lower epoch after a higher one: two writers"
    return entries


async def _readyz(cluster: Cluster, name: str) -> tuple[int, dict[str, Any]]:
    async with (
        cluster.http_session(timeout=aiohttp.ClientTimeout(total=5)) as http,
        http.get(cluster.url(name) + "/readyz") as r,
    ):
        return r.status, await r.json(content_type=None)


async def _direct_bet(cluster: Cluster, name: str, bet_id: str) -> tuple[int, dict[str, Any], str | None]:
    bet = {
        "id": bet_id,
        "player_id": "p001",
        "currency": "EUR",
        "amount_minor": 1,
        "round_id": bet_id,
        "game_id": "slots-1",
    }
    async with (
        cluster.http_session(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.post(cluster.url(name) + "/v1/bets", json=bet, headers=cluster.headers("edge")) as r,
    ):
        return r.status, await r.json(content_type=None), r.headers.get("Retry-After")


async def _epoch_of(cluster: Cluster, name: str) -> int:
    return int((await _readyz(cluster, name))[1]["epoch"])


def pair_cluster(database: LocalPostgres, root: Path, *, database_proxied: bool = False) -> Cluster:
    """Two ledger copies with the writer lease on one schema of `database`, and the edges."""
    return Cluster(
        root / "c",
        edge_ids=EDGES,
        backend="postgres",
        pair=True,
        database=database,
        database_proxied=database_proxied,
        log_level="warning",
        writer_lease_ttl_s=LEASE_TTL_S,
    )


async def test_only_one_copy_is_ready_and_the_passive_takes_over_when_the_active_is_killed(
    database: LocalPostgres, short_root: Path
) -> None:
    await _empty_schema(database)
    cluster = pair_cluster(database, short_root)
    try:
        await cluster.start()
        assert await cluster.find_active() == "ledger"
        status, body = await _readyz(cluster, STANDBY)
        assert status == 503 and body["role"] == "passive" and body["status"] == "unavailable"
        assert "writer lease" in body["reason"]
        status, problem, retry_after = await _direct_bet(cluster, STANDBY, "to-the-passive")
        assert (status, problem["code"]) == (503, "not_primary") and retry_after
        await seed(cluster, players=PLAYERS)
        epoch_before = await _epoch_of(cluster, "ledger")

        async def kill_active() -> None:
            await cluster.kill("ledger")

        bettor, acked_before, killed_at = await _bets_across(cluster, kill_active)
        assert await cluster.find_active(timeout_s=TAKEOVER_MAX_S) == STANDBY
        assert bettor.first_ack_after is not None and bettor.acks_after >= ACKS_AFTER, bettor.acks_after
        takeover_s = bettor.first_ack_after - killed_at
        assert takeover_s < TAKEOVER_MAX_S
        assert await _epoch_of(cluster, STANDBY) > epoch_before
        entries = await _check_journal(cluster, STANDBY, bettor.acked)
        print(
            f"\npair kill -9: first acknowledged bet {takeover_s:.2f} s after the kill; "
            f"{acked_before} acked before, {len(bettor.acked) - acked_before} after; "
            f"{len(bettor.acked)} acknowledged bets checked in {len(entries)} entries"
        )

        await cluster.start_service("ledger", ready=False)  # the killed copy comes back: it waits
        status, body = await _readyz(cluster, "ledger")
        assert status == 503 and body["role"] == "passive"
    finally:
        await cluster.stop()


async def test_a_copy_cut_off_from_the_database_stops_acknowledging_and_the_other_takes_over(
    database: LocalPostgres, short_root: Path
) -> None:
    await _empty_schema(database)
    cluster = pair_cluster(database, short_root, database_proxied=True)
    try:
        await cluster.start()
        assert await cluster.find_active() == "ledger"
        await seed(cluster, players=PLAYERS)
        epoch_before = await _epoch_of(cluster, "ledger")

        async def cut_active() -> None:
            cluster.proxies[("ledger", "postgres")].set_mode("blackhole")

        bettor, acked_before, cut_at = await _bets_across(cluster, cut_active)
        assert await cluster.find_active(timeout_s=CUT_TAKEOVER_MAX_S) == STANDBY
        assert bettor.first_ack_after is not None and bettor.acks_after >= ACKS_AFTER, bettor.acks_after
        takeover_s = bettor.first_ack_after - cut_at
        # The cut copy stepped down: it answers no write, and says it is passive.
        status, body = await _readyz(cluster, "ledger")
        assert status == 503 and body["role"] == "passive", body
        status, problem, retry_after = await _direct_bet(cluster, "ledger", "to-the-cut-copy")
        assert (status, problem["code"]) == (503, "not_primary") and retry_after
        assert await _epoch_of(cluster, STANDBY) > epoch_before

        cluster.proxies[("ledger", "postgres")].set_mode("pass")  # the database is back: it only waits
        await asyncio.sleep(LEASE_TTL_S)
        status, problem, _ = await _direct_bet(cluster, "ledger", "after-the-heal")
        assert (status, problem["code"]) == (503, "not_primary")
        assert (await _readyz(cluster, STANDBY))[0] == 200
        entries = await _check_journal(cluster, STANDBY, bettor.acked)
        print(
            f"\npair network cut: first acknowledged bet {takeover_s:.2f} s after the cut; "
            f"{acked_before} acked before, {len(bettor.acked) - acked_before} after; "
            f"{len(bettor.acked)} acknowledged bets checked in {len(entries)} entries"
        )
        # Its commit that was under way at the cut waits out the store's command timeout (its bytes
        # were dropped): not worth a SIGTERM's wait here.
        await cluster.kill("ledger")
    finally:
        await cluster.stop()


async def test_a_paused_active_loses_the_lease_and_commits_nothing_when_it_wakes(
    database: LocalPostgres, short_root: Path
) -> None:
    """SIGSTOP of the active (a long GC pause, a frozen VM): its sockets stay open, no close ever
    reaches PostgreSQL, so only the server's own bound on a silent lease session (the ttl) frees the
    lock. The other copy takes over; the woken copy finds its lease gone, steps down and commits
    nothing (its commits under way fail the lease check inside their transaction)."""
    await _empty_schema(database)
    cluster = pair_cluster(database, short_root)
    try:
        await cluster.start()
        assert await cluster.find_active() == "ledger"
        await seed(cluster, players=PLAYERS)
        epoch_before = await _epoch_of(cluster, "ledger")

        async def pause_active() -> None:
            cluster.signal("ledger", signal.SIGSTOP)

        bettor, acked_before, paused_at = await _bets_across(cluster, pause_active)
        assert await cluster.find_active(timeout_s=CUT_TAKEOVER_MAX_S) == STANDBY
        assert bettor.first_ack_after is not None and bettor.acks_after >= ACKS_AFTER, bettor.acks_after
        takeover_s = bettor.first_ack_after - paused_at
        assert await _epoch_of(cluster, STANDBY) > epoch_before

        cluster.signal("ledger", signal.SIGCONT)  # it wakes up believing it is the active one
        await asyncio.sleep(LEASE_TTL_S)
        status, body = await _readyz(cluster, "ledger")
        assert status == 503 and body["role"] == "passive", body
        status, problem, _ = await _direct_bet(cluster, "ledger", "after-the-pause")
        assert (status, problem["code"]) == (503, "not_primary")
        entries = await _check_journal(cluster, STANDBY, bettor.acked)
        assert not any(e["transaction"]["id"] == "after-the-pause" for e in entries)
        print(
            f"\npair paused active: first acknowledged bet {takeover_s:.2f} s after the pause; "
            f"{acked_before} acked before, {len(bettor.acked) - acked_before} after; "
            f"{len(bettor.acked)} acknowledged bets checked in {len(entries)} entries"
        )
    finally:
        await cluster.stop()
