"""A Patroni leader change under concurrent bets, and the checks every such change must pass (for
tests/postgres/test_patroni_failover.py and test_patroni_network_cut.py).

`leader_change_under_load(patroni, root, change)` gives the Patroni cluster a fresh ledger schema,
starts a ledger on it (a multi-host DSN with `target_session_attrs=read-write`), lets WORKERS
clients bet for a while, runs `change()` (blocking, in a thread) and lets them bet on until
ACKS_AFTER bets were acknowledged after it; then checks that something was acknowledged before,
that the ledger carried on after, that every acknowledged bet is journaled exactly once, that the
chain verifies, and that the ledger's PostgreSQL metrics saw the leader change and a synchronous
replica again. It returns the bettor and the time from the start of `change()` to the first
acknowledgement after it (the failover time).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from harness.cluster import Cluster, seed
from harness.patroni import PatroniCluster
from harness.verify import read_journal
from tests.support.bettor import Bettor

PLAYERS = 4
WORKERS = 6
ACKS_AFTER = 20  # then until this many bets were acknowledged after the change
TRAFFIC_AFTER_MAX_S = 40.0  # ... or this long at most
METRICS_WAIT_S = 20.0
# A bet unanswered this long fails the test. While no server takes writes, the store keeps trying
# the DSN's hosts for its connect window (`connect_timeout_s`, 10 s) before a 503: a bet that arrives
# during one window may then wait out its own group's window too (seen in CI: 503s after 9.98 s,
# and a bet unanswered after 15 s). Two windows and a failing commit: 25 s.
REQUEST_TIMEOUT_S = 25.0


async def fresh_ledger_schema(patroni: PatroniCluster) -> None:
    conn = await asyncpg.connect(patroni.dsn, timeout=10)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS ledger CASCADE")
    finally:
        await conn.close()


async def wait_for_metrics(http: aiohttp.ClientSession, cluster: Cluster) -> None:
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


async def leader_change_under_load(
    patroni: PatroniCluster, root: Path, change: Callable[[], Any], *, request_timeout_s: float = REQUEST_TIMEOUT_S
) -> tuple[Bettor, float]:
    """A ledger on `patroni`, bets from WORKERS clients, `change()` (blocking) in the middle; then
    the checks every leader change must pass. The bettor, and the time from the start of the change
    to the first ack after it (the failover time). Every bet must be answered (a 503 at worst)
    within `request_timeout_s`."""
    await asyncio.to_thread(patroni.wait_for_sync_standby)
    await fresh_ledger_schema(patroni)
    cluster = Cluster(root, edge_ids=(), backend="postgres", ha=True, database=patroni, log_level="warning")
    try:
        await cluster.start()
        await seed(cluster, players=PLAYERS)
        async with aiohttp.ClientSession(
            headers=cluster.headers("edge"), timeout=aiohttp.ClientTimeout(total=request_timeout_s)
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
                acked_before = await bettor.traffic_before()
                started = time.monotonic()
                await asyncio.to_thread(change)
                bettor.marked_at = time.monotonic()  # acks from here on were written on the new leader
                with contextlib.suppress(TimeoutError):  # checked below
                    await asyncio.wait_for(bettor.enough_after.wait(), TRAFFIC_AFTER_MAX_S)
            finally:
                bettor.stop.set()
                try:
                    await asyncio.wait_for(asyncio.gather(*workers), 30)
                except AssertionError as e:  # a bet answered out of contract: show what the ledger said
                    raise AssertionError(f"{e}\n{cluster.log_tail('ledger')}") from e
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
            await wait_for_metrics(http, cluster)
        return bettor, bettor.first_ack_after - started
    finally:
        await cluster.stop()
