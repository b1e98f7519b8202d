"""A front process of the ledger (`ledger.fronts`; started and kept by core_ledger/fronts.py).

It listens on the ledger's public address and serves the money routes (core_ledger/http.py's
handlers, unchanged) on its own core: parsing, validation, rendering and the request's log lines
happen here, and the commands go to the ledger process over the channel (core_ledger/
front_channel.py) with the request's `Authorization` and epoch claim, which the ledger process
checks again. Every other route (reads, admin, journal, /metrics, /readyz, ...) is relayed as is
to the ledger process's private listener, which serves, measures and logs it as before.

The front holds no ledger state: its credentials are those the ledger process pushes, its epoch
is the one the last answer carried. When the channel ends (the ledger process stopped) the front
stops too; requests then in flight answer 503 `ledger_unavailable` and are retried by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from yarl import URL

from shared import auth, event_loop, http_serving, request_ids
from shared.contract import headers
from shared.errors import CroupierError, Unavailable
from shared.metrics import HttpMetrics
from shared.routes import Route
from shared.tracing import EXPORT_RESULTS, TraceMetrics
from shared.tracing import setup as setup_tracing
from shared.web import ANSWER_HEADERS_KEY, HTTP_METRICS_KEY, RELAYED, make_app, read_body, request_id

from core_ledger.app_keys import CONFIG, SUBMIT
from core_ledger.config import LedgerConfig
from core_ledger.domain import Command
from core_ledger.failover import EPOCH_HEADER
from core_ledger.fencing import claimed_epoch
from core_ledger.front_channel import (
    FRAME_BYTES_MAX,
    ChannelError,
    FrameReader,
    Observation,
    Result,
    answer_of,
    connections_message,
    epoch_of,
    frame,
    observed_message,
    spans_message,
    submit_message,
    tokens_of,
)
from core_ledger.fronts import FRONT_ROUTES, RELAY_ROUTE
from core_ledger.http import ROUTES

log = structlog.get_logger("croupier.ledger.front")

EPOCH_CLAIM = web.RequestKey("epoch_claim", int)  # the caller's X-Ledger-Epoch, judged by the ledger process
RELAY = web.AppKey("ledger_relay", aiohttp.ClientSession)
OBSERVED_FLUSH_S = 0.25  # how stale the ledger's HTTP metrics of front-served requests may be
# Hop-by-hop headers (RFC 9110 section 7.6.1) and those the relay recomputes: not copied across.
NOT_RELAYED = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host"}
    | {"content-length"}
)
# aiohttp hands a handler the request body already decoded: it goes on without its old encoding.
NOT_RELAYED_REQUEST = NOT_RELAYED | {"content-encoding"}


def ledger_gone() -> Unavailable:
    """The answer to a submit the ledger process can no longer answer (its commit is in doubt)."""
    return Unavailable("the ledger process is not answering: retry by id", code="ledger_unavailable")


class RemoteLedger:
    """The ledger process, seen through the channel: submits, and the epoch of its last answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tokens: auth.TokenStore) -> None:
        self._frames = FrameReader(reader)
        self._writer = writer  # a submit leaves at once (held for the loop's turn, bets waited longer)
        self._tokens = tokens
        self._pending: dict[int, asyncio.Future[list[Result]]] = {}
        self._next = 0
        self._ended = False  # the channel is gone: no submit can be answered
        self.epoch = 0
        self.observed: list[Observation] = []

    async def submit(self, request: web.Request, commands: list[Command]) -> list[Result]:
        if self._ended:
            raise ledger_gone()
        self._next += 1
        n = self._next
        future: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        self._pending[n] = future
        authorization = request.headers.get(headers.AUTHORIZATION, "")
        try:
            self._writer.write(frame(submit_message(n, authorization, request.get(EPOCH_CLAIM), commands)))
            return await future
        finally:
            self._pending.pop(n, None)

    async def serve(self) -> None:
        """Answers and credential pushes until the channel ends; then the waiting requests fail
        with a retryable 503 (their commands may or may not have committed: a retry by id tells)."""
        try:
            while True:
                for message in await self._frames.next_frames():
                    self._take(message)
        finally:
            self._ended = True
            gone = ledger_gone()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(gone)

    def _take(self, message: list[Any]) -> None:
        if message[0] in ("results", "refused"):
            n, self.epoch, outcome = answer_of(message)
            future = self._pending.get(n)
            if future is not None and not future.done():
                if isinstance(outcome, CroupierError):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        elif message[0] == "tokens":
            self._tokens.replace(tokens_of(message))
        elif message[0] == "epoch":
            self.epoch = epoch_of(message)
        else:
            raise ChannelError(f"unknown frame kind {message[0]!r}")

    async def flush_observed(self, trace_registry: CollectorRegistry, http_registry: CollectorRegistry) -> None:
        """The requests this front answered, to the ledger's `http_request_duration_seconds`; the
        spans its tracer exported or lost, to the ledger's `trace_spans_exported_total`; its client
        connections, to the ledger's `http_connections_open` and `http_connections_refused_total`."""
        reported = dict.fromkeys(EXPORT_RESULTS, 0)
        connections_reported = (0, 0)
        while True:
            await asyncio.sleep(OBSERVED_FLUSH_S)
            if self._writer.is_closing():
                continue
            if self.observed:
                batch, self.observed = self.observed, []
                self._writer.write(frame(observed_message(batch)))
            counted = {
                r: int(trace_registry.get_sample_value("trace_spans_exported_total", {"result": r}) or 0)
                for r in EXPORT_RESULTS
            }
            new = {r: counted[r] - reported[r] for r in EXPORT_RESULTS if counted[r] > reported[r]}
            if new:
                reported = counted
                self._writer.write(frame(spans_message(new)))
            connections = (
                int(http_registry.get_sample_value("http_connections_open") or 0),
                int(http_registry.get_sample_value("http_connections_refused_total") or 0),
            )
            if connections != connections_reported:
                refused_new = connections[1] - connections_reported[1]
                connections_reported = connections
                self._writer.write(frame(connections_message(connections[0], refused_new)))


class _Observed:
    def __init__(self, sink: list[Observation], route: str, method: str, status: int) -> None:
        self._sink, self._key = sink, (route, method, status)

    def observe(self, seconds: float) -> None:
        self._sink.append((*self._key, seconds))


class RelayedHttpMetrics(HttpMetrics):
    """This front's request timings, kept for the ledger process to count (one `/metrics`)."""

    def __init__(self, remote: RemoteLedger) -> None:
        self.registry = CollectorRegistry()  # unexported: the series live in the ledger process
        super().__init__(self.registry)
        self._remote = remote

    def request_duration(self, route: str, method: str, status: int) -> Any:
        return _Observed(self._remote.observed, route, method, status)


def _claim_check(request: web.Request, who: auth.Principal) -> None:
    """The caller's epoch claim goes with its commands, judged by the ledger process."""
    epoch = claimed_epoch(request.headers.get(EPOCH_HEADER))
    if epoch is not None:
        request[EPOCH_CLAIM] = epoch


@auth.public  # the ledger process authenticates what it is relayed
async def relay(request: web.Request) -> web.StreamResponse:
    """Any route a front does not serve, to the ledger process's private listener, streamed back."""
    body = await read_body(request)  # within the body deadline: this route reads before any credential is checked
    sent = {k: v for k, v in request.headers.items() if k.lower() not in NOT_RELAYED_REQUEST}
    sent[request_ids.HEADER] = request_id(request)  # one request id in both processes' lines
    try:
        async with request.app[RELAY].request(
            request.method,
            URL("http://ledger" + relay_target(request), encoded=True),
            headers=sent,
            data=body,
            allow_redirects=False,
        ) as upstream:
            answer = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in NOT_RELAYED},
            )
            request[RELAYED] = True
            await answer.prepare(request)
            async for chunk in upstream.content.iter_any():
                await answer.write(chunk)
            await answer.write_eof()
            return answer
    except aiohttp.ClientError as e:
        if request.get(RELAYED):
            raise  # the answer had begun: the connection is cut, as the ledger's own would be
        log.warning("ledger_front_relay_failed", route=request.path, error=repr(e))
        raise Unavailable("the ledger process is not answering", code="ledger_unavailable") from None


def relay_target(request: web.Request) -> str:
    """The path and query as sent, not re-encoded; of an absolute-form target
    (`GET http://host/v1/limits`), its path and query only."""
    raw = request.raw_path
    return raw if raw.startswith("/") else request.rel_url.raw_path_qs


def front_routes() -> list[Route]:
    return [r for r in ROUTES if r.path in FRONT_ROUTES]


def create_front_app(
    config: LedgerConfig, remote: RemoteLedger, tokens: auth.TokenStore, ledger_socket: Path
) -> web.Application:
    trace_registry = CollectorRegistry()  # read and relayed to the ledger process, never scraped here
    tracing = setup_tracing(
        config.tracing_otlp_endpoint,
        config.tracing_service_name,
        config.tracing_sample_ratio,
        metrics=TraceMetrics(trace_registry),
    )
    app = make_app(
        tokens=tokens,
        registry=CollectorRegistry(),
        body_bytes_max=config.body_bytes_max,
        body_timeout_s=config.http_body_timeout_s,
        outer_middlewares=tracing.middlewares(),
        caller_check=_claim_check,
        probes=False,
    )
    app[HTTP_METRICS_KEY] = relayed_metrics = RelayedHttpMetrics(remote)
    app[CONFIG] = config
    app[SUBMIT] = remote.submit
    for route in front_routes():
        app.router.add_route(route.method, route.path, route.handler)
    app.router.add_route("*", RELAY_ROUTE, relay)

    def announce_epoch(request: web.Request, response: web.StreamResponse) -> None:
        if not request.get(RELAYED):  # a relayed answer carries the ledger's own
            response.headers[EPOCH_HEADER] = str(remote.epoch)

    app[ANSWER_HEADERS_KEY].append(announce_epoch)

    async def lifecycle(app: web.Application) -> Any:
        connector = aiohttp.UnixConnector(path=str(ledger_socket), limit=0)
        app[RELAY] = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=5), auto_decompress=False
        )
        serving = asyncio.create_task(_serve_until_ledger_ends(remote))
        flushing = asyncio.create_task(remote.flush_observed(trace_registry, relayed_metrics.registry))
        flushing.add_done_callback(_stop_if_failed)
        log.info("ledger_front_started", pid=os.getpid(), host=config.host, port=config.port)
        try:
            yield
        finally:
            for task in (serving, flushing):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await app[RELAY].close()
            await asyncio.to_thread(tracing.shutdown)
            log.info("ledger_front_stopped", pid=os.getpid())

    app.cleanup_ctx.append(lifecycle)
    return app


def _stop_if_failed(task: asyncio.Task[None]) -> None:
    """A front whose metrics relay failed stops (logged): the ledger starts a new one and counts it."""
    if not task.cancelled() and task.exception() is not None:
        log.error("ledger_front_relay_of_metrics_failed", error=repr(task.exception()))
        signal.raise_signal(signal.SIGTERM)


async def _serve_until_ledger_ends(remote: RemoteLedger) -> None:
    """The channel served until it ends, however it ends; then this front stops serving (the
    ledger process, if it lives, starts a new one and counts the end)."""
    try:
        await remote.serve()
    except asyncio.IncompleteReadError:
        log.info("ledger_front_channel_ended")
    except (ChannelError, OSError) as e:
        log.error("ledger_front_channel_broken", error=repr(e))
    # A bug: logged with its traceback; the front stops (never stays up answering 503 to
    # everything), and the ledger counts its end as the `fronts` task's failure and starts another.
    except Exception:
        log.exception("ledger_front_channel_failed")
    signal.raise_signal(signal.SIGTERM)  # (not when cancelled: the front is stopping already)


def run_front(config: LedgerConfig, ledger_socket: Path, channel_fd: int) -> None:
    """Serve as a front until SIGTERM or the channel's end (the `croupier ledger front` command)."""
    loop = event_loop.new_loop()
    asyncio.set_event_loop(loop)
    channel = socket.socket(fileno=channel_fd)
    reader, writer = loop.run_until_complete(_open(channel))
    tokens = auth.TokenStore(())  # none until the ledger process pushes its own
    remote = RemoteLedger(reader, writer, tokens)
    # The fronts share the ledger's address (`reuse_port`): the kernel spreads connections over them.
    listener = http_serving.Listener(
        host=config.host, port=config.port, ssl_context=config.tls.server_context(), reuse_port=True
    )
    app = create_front_app(config, remote, tokens, ledger_socket)
    http_serving.serve(app, config.connection_limits, listener, loop=loop)


async def _open(channel: socket.socket) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(sock=channel, limit=FRAME_BYTES_MAX)
