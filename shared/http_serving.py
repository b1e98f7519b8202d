"""Serving an aiohttp application with bounds on what clients may hold: its open connections, the
time a connection may sit without a whole request, and the time a request's body may take.

aiohttp bounds none of the first and last by itself. A client that opens connections and never
finishes a request, or that sends a body a byte at a time, holds a file descriptor (and, for a body,
a handler) each. Enough of them exhaust the process's descriptors, and then every file the service
opens fails with them: its SQLite files, its connections to the ledger and to its peers
(docs/decisions/http-connection-limits.md).

- `ConnectionLimits.connections_max`: open client connections of this process at most, counted by
  `ConnectionGate` from the accept on (a TLS handshake in progress counts). One more is answered
  `503 too_many_connections` at once (before any handler, with `Connection: close` and
  `Retry-After`; over TLS once its handshake ended) and closed. `http_connections_refused_total`
  counts them, `http_connections_open` is how many are open.
- `ConnectionLimits.idle_timeout_s`: aiohttp's keep-alive timeout. It runs from the moment a
  connection opens and from the end of each answer, and it closes a connection that has no whole
  request (line and headers) by then: an idle connection, or one whose headers trickle. A TLS
  handshake must end within it too, and within TLS_HANDSHAKE_TIMEOUT_S (10 s).
- `ConnectionLimits.body_timeout_s`: `shared.web.read_body` reads a body within this, else `408
  request_timeout` (nothing was done).

`serve` runs an application on the given address until SIGINT or SIGTERM, as `aiohttp.web.run_app`
does (graceful shutdown, every task cancelled, the loop closed), but through `GatedSite`, a site
whose listener hands each new connection to the gate.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import structlog
from aiohttp import web

from shared.configspec import Key
from shared.errors import Unavailable, problem
from shared.metrics import HttpMetrics
from shared.web import BODY_TIMEOUT_S, HTTP_METRICS_KEY

log = structlog.get_logger("croupier.http")

CONNECTIONS_MAX = 4096  # the default of `http_connections_max`
IDLE_TIMEOUT_S = 75.0  # the default of `http_idle_timeout_s` (aiohttp's own keep-alive default)
REFUSAL_LOG_EVERY_S = 10.0  # one log line per this many seconds of refusals (each is counted)
REFUSAL_LINGER_S = 0.5  # a refused connection's request is drained this long before it is closed
UNMADE_GRACE_S = 1.0  # past a TLS handshake's timeout, before its slot is given back regardless
# A TLS handshake ends within this (or the idle timeout, if shorter): a few round trips take an honest
# client milliseconds, and a connection over the limit holds its descriptor until its handshake ended.
TLS_HANDSHAKE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    connections_max: int = CONNECTIONS_MAX
    idle_timeout_s: float = IDLE_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S


@dataclass(frozen=True)
class Listener:
    """Where a site listens: a TCP `host` and `port` (`reuse_port`: shared with other processes,
    the kernel spreads connections over them) or a Unix socket `path`; TLS when `ssl_context` is
    given. Without `export_connections` its open connections are left out of
    `http_connections_open` (a private listener whose connections are counted where they came from)."""

    host: str | None = None
    port: int = 0
    path: Path | None = None
    ssl_context: ssl.SSLContext | None = None
    reuse_port: bool = False
    export_connections: bool = True


# The config keys of both services that set them (their config dataclasses hold them flat).
HTTP_KEYS = (
    Key(
        "http_connections_max",
        int,
        CONNECTIONS_MAX,
        "Client connections this process holds open at most; one more is answered `503 too_many_connections` "
        "and closed (leaves file descriptors for its own files and links).",
        minimum=1,
        maximum=1_000_000,
    ),
    Key(
        "http_idle_timeout_s",
        float,
        IDLE_TIMEOUT_S,
        "A client connection without a whole request (line and headers) this long after it opened or after "
        "its last answer is closed: idle keep-alive, or headers that trickle. A TLS handshake must end within it "
        "too (and within 10 s).",
        above=0,
        maximum=3600,
    ),
    Key(
        "http_body_timeout_s",
        float,
        BODY_TIMEOUT_S,
        "A request body must arrive within this once its handler reads it; else `408 request_timeout`, nothing done.",
        above=0,
        maximum=3600,
    ),
)


def _refusal_bytes() -> bytes:
    """The whole answer to a connection over the limit: a 503 problem that closes the connection."""
    error = Unavailable(
        "this server holds as many client connections as it may (http_connections_max): try again",
        code="too_many_connections",
    )
    body = json.dumps(problem(error), sort_keys=True).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {error.retry_after_s}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


REFUSAL = _refusal_bytes()


class _Refused(asyncio.Protocol):
    """A connection over the limit: answered, its sending side shut, what it sends dropped, and closed
    REFUSAL_LINGER_S later (closing a socket whose request is unread would reset the connection, and
    the client might lose the answer)."""

    def __init__(self) -> None:
        self._closing: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.WriteTransport, transport)  # uvloop's are not asyncio's subclasses
        transport.write(REFUSAL)
        if transport.can_write_eof():
            transport.write_eof()
        self._closing = asyncio.get_running_loop().call_later(REFUSAL_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request is never read

    def eof_received(self) -> bool:
        return False  # the client is done: close now

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closing is not None:
            self._closing.cancel()


class _Held(asyncio.Protocol):
    """An accepted connection under the limit, in front of the application's handler (made when
    the connection is made: after its TLS handshake, if any). It holds one place under its gate's
    limit from the accept until the connection is lost, or, for a TLS connection whose handshake
    never ended (the loop closes it then without a word to this protocol), `unmade_after_s` after
    the accept; as a backstop, until nothing refers to it any more."""

    __slots__ = ("_gate", "_held", "_inner", "_unmade")

    def __init__(self, gate: ConnectionGate, unmade_after_s: float | None) -> None:
        self._gate = gate
        self._held = True
        gate.held += 1
        self._inner: asyncio.Protocol | None = None
        self._unmade = (
            None if unmade_after_s is None else asyncio.get_running_loop().call_later(unmade_after_s, self._release)
        )

    def _release(self) -> None:
        if self._held:
            self._held = False
            self._gate.held -= 1

    def __del__(self) -> None:
        self._release()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._unmade is not None:
            self._unmade.cancel()
        inner: asyncio.Protocol = self._gate.server()
        self._inner = inner
        inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        assert self._inner is not None  # the loop calls connection_made first
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        assert self._inner is not None
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        assert self._inner is not None
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        assert self._inner is not None
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if self._inner is not None:
            self._inner.connection_lost(exc)


class ConnectionGate:
    """The listener's protocol factory. It counts every accepted connection itself (`held`), from
    the accept until the connection is lost, TLS handshakes in progress included (aiohttp's server
    knows a connection only once its handshake ended). Below `connections_max` the application's
    handler takes it, else a refusal (counted, and logged once per REFUSAL_LOG_EVERY_S with how
    many were refused since). A TLS handshake must end within `handshake_timeout_s`: a connection
    over the limit is answered once its handshake ended (no HTTP answer can be written before), so
    a refused one holds its descriptor that long at most."""

    def __init__(
        self,
        server: web.Server,
        limits: ConnectionLimits,
        metrics: HttpMetrics,
        *,
        tls: bool = False,
        exported: bool = True,
    ) -> None:
        self.server = server
        self.connections_max = limits.connections_max
        self.handshake_timeout_s = min(limits.idle_timeout_s, TLS_HANDSHAKE_TIMEOUT_S)
        # A slot held by a TLS connection whose handshake never ended is given back this long after
        # the accept: the loop has closed it by then.
        self._unmade_after_s = self.handshake_timeout_s + UNMADE_GRACE_S if tls else None
        self.held = 0  # accepted and not yet lost, TLS handshakes in progress included
        self._refused = metrics.connections_refused_total
        if exported:
            metrics.connection_sources.append(self.open_connections)
        self._unlogged = 0
        self._logged_at = float("-inf")

    def open_connections(self) -> int:
        return self.held

    def __call__(self) -> asyncio.Protocol:
        if self.held < self.connections_max:
            return _Held(self, self._unmade_after_s)
        self._refused.inc()
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= REFUSAL_LOG_EVERY_S:
            log.warning("http_connections_full", refused=self._unlogged, connections_max=self.connections_max)
            self._unlogged, self._logged_at = 0, now
        return _Refused()


class GatedSite(web.BaseSite):
    """A site listening where its `Listener` says, whose new connections pass `gate` first."""

    def __init__(self, runner: web.AppRunner, gate: ConnectionGate, listener: Listener) -> None:
        super().__init__(runner, ssl_context=listener.ssl_context)
        self.gate = gate
        self.listener = listener

    @property
    def name(self) -> str:
        at = self.listener
        scheme = "https" if at.ssl_context else "http"
        return f"{scheme}://unix:{at.path}:" if at.path is not None else f"{scheme}://{at.host}:{at.port}"

    async def start(self) -> None:
        await super().start()
        loop, at = asyncio.get_running_loop(), self.listener
        tls: dict[str, Any] = (
            {}
            if at.ssl_context is None
            else {"ssl": at.ssl_context, "ssl_handshake_timeout": self.gate.handshake_timeout_s}
        )
        if at.path is not None:
            self._server = await loop.create_unix_server(self.gate, str(at.path), **tls)
        else:
            self._server = await loop.create_server(
                self.gate, at.host, at.port, reuse_address=True, reuse_port=at.reuse_port, **tls
            )


async def start_site(
    app: web.Application,
    limits: ConnectionLimits,
    listener: Listener,
    *,
    handle_signals: bool = False,
    shutdown_timeout: float = 60.0,
) -> tuple[web.AppRunner, GatedSite]:
    """Set up `app` and listen; the caller ends it with `runner.cleanup()`."""
    runner = web.AppRunner(
        app,
        handle_signals=handle_signals,
        access_log=None,
        keepalive_timeout=limits.idle_timeout_s,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    try:
        assert runner.server is not None  # set up above
        metrics = app[HTTP_METRICS_KEY]
        tls, exported = listener.ssl_context is not None, listener.export_connections
        gate = ConnectionGate(runner.server, limits, metrics, tls=tls, exported=exported)
        site = GatedSite(runner, gate, listener)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, site


def serve(
    app: web.Application,
    limits: ConnectionLimits,
    listener: Listener,
    *,
    loop: asyncio.AbstractEventLoop,
    shutdown_timeout: float = 60.0,
) -> None:
    """Serve `app` until SIGINT or SIGTERM, then shut down gracefully and close `loop`. An error
    while starting (the application's startup) is raised once everything is closed."""

    async def run() -> None:
        runner, _ = await start_site(app, limits, listener, handle_signals=True, shutdown_timeout=shutdown_timeout)
        try:
            await asyncio.Event().wait()  # until cancelled: a signal's GracefulExit ends the loop
        finally:
            await runner.cleanup()

    asyncio.set_event_loop(loop)
    main = loop.create_task(run())
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel every task still on `loop` and wait for them; an error one ends with is logged."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    results = loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task, result in zip(tasks, results, strict=True):
        if isinstance(result, Exception):
            log.error("task_failed_at_shutdown", task=task.get_name(), error=repr(result))
