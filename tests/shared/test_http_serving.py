"""What a client may hold of a service's HTTP server (shared/http_serving.py): a liar that opens
connections and never finishes a request, trickles its headers, or sends a body a byte at a time.

Each test serves a small application made with the services' `make_app` through `start_site`, as
`serve` does for the edge, the ledger and its fronts, on 127.0.0.1 with a free port, on both event
loops: asyncio's and uvloop, which the services run on (its transports are not asyncio's classes:
a refusal that checked for them raised there and was never written)."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import trustme
import uvloop
from aiohttp import web
from prometheus_client import CollectorRegistry

from shared import auth, http_serving
from shared.http_serving import ConnectionLimits, Listener, start_site
from shared.web import json_response, make_app, read_json

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def on_both_loops(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[str], None]:
    """The test, run once on each event loop of `LOOPS`, each a new loop closed after it."""

    @pytest.mark.parametrize("loop", sorted(LOOPS))
    def run(loop: str) -> None:
        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            runner.run(test())

    run.__name__, run.__doc__ = test.__name__, test.__doc__
    return run


EXCHANGE_TIMEOUT_S = 5.0  # every read from the server is bounded
SEEN = web.AppKey("seen", list)  # the bodies the handler read


@auth.public
async def echo(request: web.Request) -> web.Response:
    request.app[SEEN].append(await read_json(request))
    return json_response({"ok": True})


@asynccontextmanager
async def serving(
    limits: ConnectionLimits, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[int, web.Application, CollectorRegistry]]:
    registry = CollectorRegistry()
    app = make_app(
        tokens=auth.TokenStore([]), registry=registry, body_bytes_max=4096, body_timeout_s=limits.body_timeout_s
    )
    app[SEEN] = []
    app.router.add_post("/echo", echo)
    runner, site = await start_site(app, limits, Listener(host="127.0.0.1", ssl_context=ssl_context))
    try:
        assert site._server is not None
        port = site._server.sockets[0].getsockname()[1]
        yield port, app, registry
    finally:
        await runner.cleanup()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), EXCHANGE_TIMEOUT_S)


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer: status, headers (lower-case names) and body (by Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), EXCHANGE_TIMEOUT_S)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), EXCHANGE_TIMEOUT_S)
    return status, headers, body


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the server closed the connection (EOF); fails past `seconds`."""
    started = time.monotonic()
    rest = await asyncio.wait_for(reader.read(), seconds)
    assert rest == b"", rest
    return time.monotonic() - started


def post(body: bytes, *, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {size}\r\n\r\n".encode()
        + body
    )


def sample(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, name
    return value


@on_both_loops
async def test_a_connection_over_the_limit_is_answered_503_and_closed_and_counted() -> None:
    async with serving(ConnectionLimits(connections_max=2)) as (port, app, registry):
        held = [await connect(port) for _ in range(2)]  # a liar's two connections, no request on either
        await asyncio.sleep(0.05)
        assert sample(registry, "http_connections_open") == 2
        reader, writer = await connect(port)
        status, headers, body = await answer(reader)
        assert status == 503 and headers["connection"] == "close" and headers["retry-after"] == "1"
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(body)["code"] == "too_many_connections"
        await closed_within(reader, EXCHANGE_TIMEOUT_S)
        writer.close()
        # A client that sends its request at once reads the same answer, not a reset connection.
        reader, writer = await connect(port)
        writer.write(post(b'{"x": 0}'))
        status, _, body = await answer(reader)
        assert status == 503 and json.loads(body)["code"] == "too_many_connections"
        await closed_within(reader, EXCHANGE_TIMEOUT_S)
        writer.close()
        assert app[SEEN] == []  # no handler ran
        assert sample(registry, "http_connections_refused_total") == 2
        # What the liar cannot do: keep the service from anyone once it lets a connection go.
        _, first = held.pop()
        first.close()
        await first.wait_closed()
        for _ in range(100):  # the server sees the close within a few turns of its loop
            if sample(registry, "http_connections_open") < 2:
                break
            await asyncio.sleep(0.01)
        reader, writer = await connect(port)
        writer.write(post(b'{"a": 1}'))
        status, _, body = await answer(reader)
        assert status == 200 and json.loads(body) == {"ok": True} and app[SEEN] == [{"a": 1}]
        writer.close()
        for _, w in held:
            w.close()


@on_both_loops
async def test_headers_that_trickle_are_cut_at_the_idle_timeout() -> None:
    async with serving(ConnectionLimits(idle_timeout_s=0.5)) as (port, app, _):
        reader, writer = await connect(port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\n")  # and never the end of the headers
        for _ in range(3):
            await asyncio.sleep(0.2)
            if reader.at_eof():
                break
            writer.write(b"X-Slow: 1\r\n")  # a byte now and then does not keep it open
        assert await closed_within(reader, 3.0) < 3.0
        writer.close()
        # A connection that sends its request at once is served, and one that then idles is closed too.
        reader, writer = await connect(port)
        writer.write(post(b'{"b": 2}'))
        status, _, _ = await answer(reader)
        assert status == 200 and app[SEEN] == [{"b": 2}]
        assert await closed_within(reader, 3.0) < 3.0
        writer.close()


@on_both_loops
async def test_a_body_that_trickles_is_answered_408_within_the_body_timeout_and_does_nothing() -> None:
    async with serving(ConnectionLimits(body_timeout_s=0.4)) as (port, app, registry):
        reader, writer = await connect(port)
        started = time.monotonic()
        writer.write(post(b'{"c": ', length=8))  # 6 of the 8 bytes announced, then nothing
        status, _, body = await answer(reader)
        assert status == 408 and json.loads(body)["code"] == "request_timeout"
        assert time.monotonic() - started < 3.0
        assert app[SEEN] == []  # the handler never got a body
        seen_408 = registry.get_sample_value(
            "http_request_duration_seconds_count", {"route": "/echo", "method": "POST", "status": "408"}
        )
        assert seen_408 == 1
        writer.close()
        # A body that arrives in time is read as before.
        reader, writer = await connect(port)
        writer.write(post(b'{"c": 3}'))
        status, _, _ = await answer(reader)
        assert status == 200 and app[SEEN] == [{"c": 3}]
        writer.close()


async def settled(registry: CollectorRegistry, name: str, expected: float) -> None:
    """Wait (a bounded while) until the server's sample `name` is `expected`."""
    for _ in range(500):
        if sample(registry, name) == expected:
            return
        await asyncio.sleep(0.01)
    assert sample(registry, name) == expected


@on_both_loops
async def test_tls_connections_are_counted_before_their_handshake_and_closed_when_it_does_not_come() -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    limits = ConnectionLimits(connections_max=2, idle_timeout_s=0.5)
    async with serving(limits, server_tls) as (port, app, registry), aiohttp.ClientSession() as session:
        url = f"https://127.0.0.1:{port}/echo"
        # A liar's two connections that never begin a handshake are counted (before, nothing was
        # counted until a handshake ended, so such connections could take every descriptor).
        silent = [await connect(port) for _ in range(2)]
        await settled(registry, "http_connections_open", 2)
        # A real client is refused while they last: 503 over TLS, once its handshake ended.
        async with session.post(url, json={"x": 0}, ssl=client_tls) as refused:
            assert refused.status == 503 and (await refused.json())["code"] == "too_many_connections"
        # A third silent one is refused too, and holds its descriptor no longer than the handshake timeout.
        reader, writer = await connect(port)
        assert await closed_within(reader, 3.0) < 3.0
        writer.close()
        assert sample(registry, "http_connections_refused_total") == 2
        # What the liar cannot do: hold them past the handshake timeout (the idle timeout).
        for r, _ in silent:
            assert await closed_within(r, 3.0) < 3.0
        await settled(registry, "http_connections_open", 0)
        # Then a real client is served.
        async with session.post(url, json={"a": 1}, ssl=client_tls) as served:
            assert served.status == 200 and await served.json() == {"ok": True}
        assert app[SEEN] == [{"a": 1}]
        for _, w in silent:
            w.close()


@on_both_loops
async def test_a_tls_handshake_is_bounded_apart_from_a_long_idle_timeout() -> None:
    """A refused TLS connection holds its descriptor until its handshake ends: that is bounded by
    TLS_HANDSHAKE_TIMEOUT_S (10 s; shortened here) even where the idle timeout is long."""
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server_tls)
    bound = http_serving.TLS_HANDSHAKE_TIMEOUT_S
    http_serving.TLS_HANDSHAKE_TIMEOUT_S = 0.5
    try:
        async with serving(ConnectionLimits(idle_timeout_s=60.0), server_tls) as (port, _, registry):
            reader, writer = await connect(port)  # never a ClientHello
            await settled(registry, "http_connections_open", 1)
            assert await closed_within(reader, 3.0) < 3.0
            await settled(registry, "http_connections_open", 0)
            writer.close()
    finally:
        http_serving.TLS_HANDSHAKE_TIMEOUT_S = bound


@on_both_loops
async def test_a_listener_not_exported_is_left_out_of_the_open_connections() -> None:
    """The ledger's private socket (with fronts) holds the fronts' relays, whose clients the fronts
    count already: its connections are limited like any, but not counted twice."""
    registry = CollectorRegistry()
    app = make_app(tokens=auth.TokenStore([]), registry=registry, body_bytes_max=4096)
    limits = ConnectionLimits(connections_max=1)
    runner, site = await start_site(app, limits, Listener(host="127.0.0.1", export_connections=False))
    try:
        assert site._server is not None
        port = site._server.sockets[0].getsockname()[1]
        _, writer = await connect(port)
        await asyncio.sleep(0.05)
        assert sample(registry, "http_connections_open") == 0
        reader, second = await connect(port)  # still limited
        status, _, _ = await answer(reader)
        assert status == 503 and sample(registry, "http_connections_refused_total") == 1
        second.close()
        writer.close()
    finally:
        await runner.cleanup()
