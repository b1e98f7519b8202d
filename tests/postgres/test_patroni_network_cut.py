"""A network cut of the PostgreSQL leader (slow: real etcd, three Patroni members in network
namespaces, a ledger process).

Each Patroni member runs in a network namespace of its own on a private subnet (harness/netns.py);
under concurrent bets, nftables inside the leader's namespace drop every packet but its loopback.
Nothing tells anyone: no RST, no FIN. The leader can no longer renew its leader key in etcd, so it
demotes itself, the key expires, and Patroni promotes the synchronous replica; the ledger (a
multi-host DSN) finds the new leader by itself. Every acknowledged bet is journaled exactly once
and the chain verifies (tests/support/patroni_load.py). While still cut, the old leader is not
writable (asked over its unix socket, which no network cut touches); once healed it rejoins as a
replica of the new leader, on its timeline, with the same ledger head: what it may have written
alone was never acknowledged and is gone.

Needs root and `nft` (`make tools`): without them the test fails saying so; it never skips.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from harness.netns import NetworkFailed, require_tools
from harness.patroni import PatroniCluster
from harness.postgres import DATABASE, DB_USER
from tests.support.patroni_load import leader_change_under_load

pytestmark = pytest.mark.slow

LEADER_WAIT_S = 40.0
# A bet in flight when the cut begins waits until its connection is declared dead (5 s), the
# leader key expires (ttl 10 s) and the new leader has a synchronous replica again: more than
# the 15 s of a kill -9 (whose RST is immediate), and still always answered.
CUT_REQUEST_TIMEOUT_S = 30.0
DEMOTED_WAIT_S = 20.0
REJOIN_WAIT_S = 40.0
POLL_S = 0.5
QUERY_TIMEOUT_S = 5.0


@pytest.fixture
def namespaced_patroni() -> Iterator[PatroniCluster]:
    try:
        require_tools()
    except NetworkFailed as e:
        pytest.fail(f"the network-cut test cannot run here: {e}", pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="cr-nc-"))
    cluster = PatroniCluster(root, namespaced=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()  # stops the members, etcd, then removes the namespaces and the bridge
        shutil.rmtree(root, ignore_errors=True)


async def _query(dsn: str, sql: str) -> Any:
    conn = await asyncpg.connect(dsn, timeout=QUERY_TIMEOUT_S)
    try:
        return await conn.fetchval(sql, timeout=QUERY_TIMEOUT_S)
    finally:
        await conn.close(timeout=QUERY_TIMEOUT_S)


async def _not_writable_while_cut(patroni: PatroniCluster, name: str) -> str:
    """How the cut member's PostgreSQL refuses writes, asked over its unix socket: it is in
    recovery, shutting down, or gone. Fails if it is still a read-write primary after DEMOTED_WAIT_S."""
    local = f"postgresql://{DB_USER}@/{DATABASE}?host={patroni.member(name).root.resolve()}&port={patroni.member(name).pg_port}"
    deadline = time.monotonic() + DEMOTED_WAIT_S
    while True:
        try:
            if await _query(local, "SELECT pg_is_in_recovery()"):
                return "in recovery"
        except asyncpg.CannotConnectNowError as e:  # shutting down or starting up: no session at all
            return str(e)
        except OSError as e:  # no server on the socket
            return f"not running ({type(e).__name__})"
        assert time.monotonic() < deadline, f"{name} is still a read-write primary {DEMOTED_WAIT_S}s into its cut"
        await asyncio.sleep(POLL_S)


async def _rejoined_as_replica(patroni: PatroniCluster, name: str) -> dict[str, Any]:
    """Wait until Patroni reports `name` as a running replica on the leader's timeline and its
    PostgreSQL (asked over the healed network) is in recovery with the leader's ledger head."""
    head = "SELECT sequence::text || ' ' || hash FROM ledger.head"
    deadline = time.monotonic() + REJOIN_WAIT_S
    seen: Any = None
    while time.monotonic() < deadline:
        state = {m["name"]: m for m in await asyncio.to_thread(patroni.cluster_state)}
        leader = next((m for m in state.values() if m.get("role") == "leader"), None)
        me = state.get(name, {})
        seen = state
        if (
            leader is not None
            and me.get("role") in ("replica", "sync_standby")
            and me.get("state") in ("running", "streaming")
            and me.get("timeline") == leader.get("timeline")
        ):
            try:
                in_recovery = await _query(patroni.member_dsn(name), "SELECT pg_is_in_recovery()")
                mine, theirs = (
                    await _query(patroni.member_dsn(name), head),
                    await _query(patroni.member_dsn(leader["name"]), head),
                )
            except (OSError, asyncpg.PostgresError, TimeoutError) as e:
                seen = repr(e)
            else:
                if in_recovery and mine == theirs:
                    return me
                seen = (in_recovery, mine, theirs)
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"{name} did not rejoin as a replica within {REJOIN_WAIT_S}s: {seen}")


async def test_a_network_cut_of_the_postgres_leader_under_load_loses_and_doubles_nothing(
    namespaced_patroni: PatroniCluster, short_dir: Path
) -> None:
    patroni = namespaced_patroni
    cut = await asyncio.to_thread(patroni.wait_for_leader)
    promoted: list[str] = []

    def cut_and_wait() -> None:
        patroni.cut_member(cut)
        promoted.append(patroni.wait_for_leader(other_than=cut, timeout_s=LEADER_WAIT_S))

    bettor, took = await leader_change_under_load(
        patroni, short_dir / "c", cut_and_wait, request_timeout_s=CUT_REQUEST_TIMEOUT_S
    )
    assert promoted and promoted[0] != cut
    assert patroni.network is not None and patroni.network.is_cut(cut), "the cut must hold until healed"
    refused_how = await _not_writable_while_cut(patroni, cut)
    await asyncio.to_thread(patroni.heal_member, cut)
    rejoined = await _rejoined_as_replica(patroni, cut)
    print(
        f"network cut of {cut}, {promoted[0]} promoted: first ack after {took:.2f}s; "
        f"{len(bettor.acked)} acked writes checked; refusals {dict(bettor.refusals)}; "
        f"old leader while cut: {refused_how}; healed: {rejoined['role']} on timeline {rejoined['timeline']}"
    )
