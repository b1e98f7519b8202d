"""New connections of the PostgreSQL store with a multi-host DSN (core_ledger/store/pg_connect.py).

A host that takes the TCP connection and then never says a word stands for a member cut off the
network (its packets dropped: nothing fails, nothing answers). Listed first, it used to eat the
whole connect timeout, so the store never reached the server after it; now every host is tried
at once, each bounded, and the store opens on the one that answers. A pooled connection notices
a vanished server within `dead_peer_s` (keepalive probes and TCP_USER_TIMEOUT on its socket).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from core_ledger.store import StorageError
from core_ledger.store.pg_connect import connect_read_write, dsn_per_host
from core_ledger.store.postgres import PostgresStore
from tests.support.local_postgres import TEST_LIMITS, PgServer, fresh_schema

CONNECT_TIMEOUT_S = 3.0


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A loopback port that accepts connections and never answers on them."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


def _with_hosts_first(dsn: str, *ports: int) -> str:
    first = ",".join(f"127.0.0.1:{p}" for p in ports)
    return dsn.replace("@127.0.0.1:", f"@{first},127.0.0.1:", 1) + "?target_session_attrs=read-write"


def test_a_multi_host_dsn_is_split_into_one_dsn_per_host_and_a_single_host_is_left_alone() -> None:
    assert dsn_per_host("postgresql://u:p@h1:1,h2:2/db?target_session_attrs=read-write") == [
        "postgresql://u:p@h1:1/db?target_session_attrs=read-write",
        "postgresql://u:p@h2:2/db?target_session_attrs=read-write",
    ]
    assert dsn_per_host("postgresql://u:p@h1:1/db") == ["postgresql://u:p@h1:1/db"]
    assert dsn_per_host("postgresql://h1,h2") == ["postgresql://h1", "postgresql://h2"]
    assert dsn_per_host("host=h1 port=1") == ["host=h1 port=1"]


async def test_a_silent_host_listed_first_does_not_keep_the_store_from_the_server_after_it(
    pg_server: PgServer, silent_port: int
) -> None:
    limits = replace(TEST_LIMITS, connect_timeout_s=CONNECT_TIMEOUT_S)
    store = PostgresStore(_with_hosts_first(pg_server.dsn, silent_port), limits, schema=fresh_schema())
    started = time.monotonic()
    await store.open()
    try:
        took = time.monotonic() - started
        assert took < CONNECT_TIMEOUT_S / 2, f"open took {took:.1f}s: it waited on the silent host"
        assert (await store.head()).sequence == 0
        async with store._p.acquire() as conn:  # the pooled connection will notice a vanished server
            sock = conn._transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == round(limits.dead_peer_s * 1000)
    finally:
        await store.close()


async def test_when_no_host_answers_the_connect_fails_within_its_timeout_saying_so(silent_port: int) -> None:
    dsn = f"postgresql://u:p@127.0.0.1:{silent_port},127.0.0.1:{silent_port}/db?target_session_attrs=read-write"
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="no usable PostgreSQL among the DSN's 2 hosts"):
        await connect_read_write(dsn, dead_peer_s=1.0, timeout=1.0)
    assert time.monotonic() - started < 1.0 + 1.0
    store = PostgresStore(dsn, replace(TEST_LIMITS, connect_timeout_s=1.0), schema=fresh_schema())
    with pytest.raises(StorageError, match="cannot open the PostgreSQL store"):
        await store.open()
