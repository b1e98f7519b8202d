"""New connections of the PostgreSQL store: to the read-write member of a multi-host DSN, each
member bounded on its own, and on a socket that notices a vanished peer within seconds.

asyncpg's own multi-host connect tries the hosts one after the other under ONE timeout for them
all. A member whose packets are dropped (a network cut: no RST, no ICMP, the SYN just goes
unanswered) eats that whole timeout, so while it is listed before the leader, no new connection
ever reaches the leader: the ledger stays down for as long as the cut lasts, although a new
leader was promoted seconds after it began. (libpq bounds each host on its own instead.)
`connect_read_write` tries every host of the DSN at once, each within the whole timeout, keeps the
first that is read-write (the DSN's `target_session_attrs`) and closes the others; a host that
answered but would not do (a replica about to be promoted) is asked again every HOST_RETRY_S
until then, so a connection made during a failover lands on the new leader as soon as it is
promoted. A DSN with one host is connected to as it is.

A connection whose peer vanished keeps waiting for an answer that never comes (until the command
timeout: a commit in flight on a cut leader would hold its request that long). So every TCP
connection gets keepalive probes after 1 s of silence, 1 s apart, and `TCP_USER_TIMEOUT`: once
sent data or probes stay unacknowledged for `dead_peer_s`, the kernel closes it, the statement
fails, and the writer settles the commit's unknown outcome by reading the journal head and the
idempotency records (as after a crash of the server), on a fresh connection to the new leader.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import asyncpg
import structlog

log = structlog.get_logger("croupier.ledger.postgres")

KEEPALIVE_IDLE_S = 1  # silence before the first probe
KEEPALIVE_INTERVAL_S = 1  # between probes
# A member that could not be used: down, cut off (timeout), or not read-write (a replica).
HOST_FAILURES = (OSError, TimeoutError, asyncpg.TargetServerAttributeNotMatched, asyncpg.CannotConnectNowError)
HOST_RETRY_S = 0.25  # pause before asking again a host that answered but would not do


def dsn_per_host(dsn: str) -> list[str]:
    """`postgresql://user:pw@h1:p1,h2:p2/db?q` as one DSN per host (same user, database and
    query); the DSN alone when it names one host or is not a URL with a host list."""
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        return [dsn]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    userinfo, at, hosts = netloc.rpartition("@")
    if "," not in hosts:
        return [dsn]
    return [f"{scheme}://{userinfo}{at}{host}{tail}" for host in hosts.split(",") if host]


def detect_dead_peer(conn: asyncpg.Connection, dead_peer_s: float) -> bool:
    """Keepalive probes and TCP_USER_TIMEOUT on the connection's TCP socket (Linux); False when
    there is none to set (a unix socket, or a platform without the options)."""
    transport = getattr(conn, "_transport", None)  # asyncpg keeps no public handle on its socket
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    if not all(hasattr(socket, o) for o in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT")):
        return False
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, max(1, round(dead_peer_s / KEEPALIVE_INTERVAL_S)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1, round(dead_peer_s * 1000)))
    return True


async def connect_read_write(
    dsn: str,
    *,
    dead_peer_s: float,
    timeout: float = 60.0,  # noqa: ASYNC109 (a pool passes asyncpg.connect's arguments, timeout too)
    **kwargs: Any,
) -> Any:
    """A connection to the first host of `dsn` that answers as the DSN asks, every host tried at
    once; a host that answered but would not do (a replica not yet promoted, a server starting)
    is asked again every HOST_RETRY_S; all within `timeout`. asyncpg.connect's arguments otherwise
    (what a pool passes)."""
    hosts = dsn_per_host(dsn)
    if len(hosts) == 1:
        conn = await asyncpg.connect(dsn, timeout=timeout, **kwargs)
        detect_dead_peer(conn, dead_peer_s)
        return conn
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    failures: dict[str, BaseException] = {}

    async def one_host(host_dsn: str, index: int) -> Any:
        while True:
            try:
                return await asyncpg.connect(host_dsn, timeout=max(0.001, deadline - loop.time()), **kwargs)
            except HOST_FAILURES as e:
                failures[f"host {index + 1}"] = e
                if loop.time() + HOST_RETRY_S >= deadline:
                    raise
            await asyncio.sleep(HOST_RETRY_S)

    attempts = [asyncio.ensure_future(one_host(h, i)) for i, h in enumerate(hosts)]
    chosen: Any = None
    try:
        for attempt in asyncio.as_completed(attempts):
            try:
                chosen = await attempt
            except HOST_FAILURES:
                continue
            break
    finally:
        for a in attempts:
            a.cancel()
        await asyncio.gather(*attempts, return_exceptions=True)
        for a in attempts:  # a race lost: its connection is not wanted
            if a.done() and not a.cancelled() and a.exception() is None and a.result() is not chosen:
                a.result().terminate()
    if chosen is None:
        summary = "; ".join(f"{where}: {type(e).__name__} {e}".rstrip() for where, e in sorted(failures.items()))
        raise ConnectionError(f"no usable PostgreSQL among the DSN's {len(hosts)} hosts within {timeout}s ({summary})")
    detect_dead_peer(chosen, dead_peer_s)
    return chosen
