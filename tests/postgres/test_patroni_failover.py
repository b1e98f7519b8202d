"""HA on PostgreSQL with Patroni (slow: real etcd, three Patroni members, a ledger process).

Under concurrent bets the PostgreSQL leader is changed (a `patronictl switchover`, and a kill -9 of
the leader's Patroni and PostgreSQL); the ledger, connected by a multi-host DSN with
`target_session_attrs=read-write`, follows the new leader by itself. Writes in flight get 503 with
`Retry-After` and succeed on a retry with the same id; every acknowledged bet is in the journal
exactly once and the hash chain verifies across the change. One Patroni cluster serves the module
(its start is the slow part); each test gets a fresh ledger schema. Each test stays under 60 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from harness.cluster import Cluster, seed
from harness.patroni import PatroniCluster
from harness.verify import read_journal
from tests.support.bettor import Bettor

pytestmark = pytest.mark.slow

PLAYERS = 4
WORKERS = 6
TRAFFIC_BEFORE_S = 1.5  # bets flow this long before the leader changes
ACKS_AFTER = 20  # then until this many bets were acknowledged after the change
TRAFFIC_AFTER_MAX_S = 40.0  # ... or this long at most
LEADER_WAIT_S = 40.0
METRICS_WAIT_S = 20.0


@pytest.fixture(scope="module")
def patroni() -> Iterator[PatroniCluster]:
    root = Path(tempfile.mkdtemp(prefix="cr-pt-"))
    cluster = PatroniCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


async def _fresh_ledger_schema(patroni: PatroniCluster) -> None:
    conn = await asyncpg.connect(patroni.dsn, timeout=10)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS ledger CASCADE")
    finally:
        await conn.close()


async def _wait_for_metrics(http: aiohttp.ClientSession, cluster: Cluster) -> None:
    """The ledger saw the leader change and a synchronous replica again (its watch samples every 5 s)."""
    wanted = {
        "ledger_postgres_leader_changes_total": 1.0,
        "ledger_postgres_synchronous_replicas": 1.0,
        "ledger_postgres_synchronous_expected": 1.0,
    }
    seen: dict[str, float] = {}
    deadline = time.monotonic() + METRICS_WAIT_S
    while time.monotonic() < deadline:
        async with http.get(cluster.url("ledger") + "/metrics", headers=cluster.headers("metrics")) as r:
            text = await r.text()
        seen = {
            line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.split(" ", 1)[0] in wanted
        }
        if all(seen.get(name, 0) >= least for name, least in wanted.items()):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"the ledger's PostgreSQL metrics never showed the change: {seen}")


async def _leader_change_under_load(patroni: PatroniCluster, root: Path, change: Any) -> tuple[Bettor, float]:
    """A ledger on `patroni`, bets from WORKERS clients, `change()` (blocking) in the middle; then
    the checks every leader change must pass. The bettor, and the time from the start of the change
    to the first ack after it (the failover time)."""
    await asyncio.to_thread(patroni.wait_for_sync_standby)
    await _fresh_ledger_schema(patroni)
    cluster = Cluster(root, edge_ids=(), backend="postgres", ha=True, database=patroni, log_level="warning")
    try:
        await cluster.start()
        await seed(cluster, players=PLAYERS)
        async with aiohttp.ClientSession(
            headers=cluster.headers("edge"), timeout=aiohttp.ClientTimeout(total=15)
        ) as http:
            bettor = Bettor(
                http,
                cluster.url,
                ("ledger",),
                players=PLAYERS,
                acks_wanted_after=ACKS_AFTER,
                retry_after_required=True,
                connection_errors_allowed=False,
            )
            workers = [asyncio.create_task(bettor.worker(w)) for w in range(WORKERS)]
            try:
                await asyncio.sleep(TRAFFIC_BEFORE_S)
                acked_before = len(bettor.acked)
                started = time.monotonic()
                await asyncio.to_thread(change)
                bettor.marked_at = time.monotonic()  # acks from here on were written on the new leader
                with contextlib.suppress(TimeoutError):  # checked below
                    await asyncio.wait_for(bettor.enough_after.wait(), TRAFFIC_AFTER_MAX_S)
            finally:
                bettor.stop.set()
                await asyncio.wait_for(asyncio.gather(*workers), 30)
            assert acked_before > 0, "nothing was acknowledged before the leader change"
            assert bettor.first_ack_after is not None and bettor.acks_after >= ACKS_AFTER, (
                f"the ledger did not carry on after the leader change: {bettor.refusals}\n{cluster.log_tail('ledger')}"
            )
            entries = await read_journal(http, cluster.url("ledger"), cluster.headers("admin_read"))
            ids = Counter(e["transaction"]["id"] for e in entries if e["transaction"]["type"] == "bet")
            assert all(ids[i] == 1 for i in bettor.acked), [i for i in bettor.acked if ids[i] != 1][:5]
            async with http.post(
                cluster.url("ledger") + "/admin/v1/audit/verify", headers=cluster.headers("admin_read")
            ) as r:
                report = await r.json()
            assert report["ok"] and report["head_sequence"] == entries[-1]["sequence"], report
            await _wait_for_metrics(http, cluster)
        return bettor, bettor.first_ack_after - started
    finally:
        await cluster.stop()


async def test_a_patronictl_switchover_under_load_loses_and_doubles_nothing(
    patroni: PatroniCluster, short_dir: Path
) -> None:
    before = await asyncio.to_thread(patroni.wait_for_leader)
    after: list[str] = []
    bettor, took = await _leader_change_under_load(patroni, short_dir / "c", lambda: after.append(patroni.switchover()))
    assert after and after[0] != before
    print(
        f"switchover {before} -> {after[0]}: first ack after {took:.2f}s; {len(bettor.acked)} acked; "
        f"refusals {dict(bettor.refusals)}"
    )


async def test_kill_9_of_the_postgres_leader_under_load_loses_and_doubles_nothing(
    patroni: PatroniCluster, short_dir: Path
) -> None:
    killed = await asyncio.to_thread(patroni.wait_for_leader)
    promoted: list[str] = []

    def kill_and_wait() -> None:
        patroni.kill_member(killed)
        promoted.append(patroni.wait_for_leader(other_than=killed, timeout_s=LEADER_WAIT_S))

    bettor, took = await _leader_change_under_load(patroni, short_dir / "c", kill_and_wait)
    assert promoted and promoted[0] != killed
    assert bettor.refusals, "the leader died under load, yet no write was ever refused"
    print(
        f"kill -9 {killed}, {promoted[0]} promoted: first ack after {took:.2f}s; {len(bettor.acked)} acked; "
        f"refusals {dict(bettor.refusals)}"
    )
