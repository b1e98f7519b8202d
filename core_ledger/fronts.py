"""The ledger process's side of its front processes (`ledger.fronts`): starts each front, serves
its channel (core_ledger/front_channel.py), restarts it when it ends.

One interpreter runs the ledger's writer; its HTTP work (parsing, validating, rendering and logging
requests) takes more of that interpreter's one core than judging and committing do. A front
process serves the money routes' HTTP on another core and sends the commands here over a socket
pair that only this process and that child hold. Here each submit is checked as the ledger's own
handlers would: the forwarded `Authorization` is authenticated, each command is built again from
its request by the handlers' own `money_command` (validated against its operation's model; type,
principal, client id and via authorized against the credential), the caller's epoch claim is
judged, and only then are the commands submitted. Every other route a front relays to this
process's private listener, where it is served as before.

A front that ends (crash, kill, broken frame) is a failure of the `fronts` task (TaskHealth:
`ledger_task_failures_total{task="fronts"}`, failing after five in a row) and lowers
`ledger_fronts_up`; it is started again after the backoff. A client whose request was in flight
there gets no answer or a 503, and retries with the same id (exactly once, as every retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Sequence
from functools import partial
from typing import Any

import structlog

from shared import auth
from shared.contract import headers
from shared.contract.operations import BATCH_OPS, MONEY_OPS
from shared.errors import BadRequest, CroupierError, Forbidden, Unavailable
from shared.metrics import HttpMetrics
from shared.tracing import TraceMetrics

from core_ledger.domain import Command
from core_ledger.fencing import Fencing
from core_ledger.front_channel import (
    FRAME_BYTES_MAX,
    ChannelError,
    FrameReader,
    Outbox,
    connections_of,
    epoch_message,
    observed_of,
    refused_message,
    results_message,
    spans_of,
    submit_of,
    tokens_message,
)
from core_ledger.http import money_command
from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.task_health import TaskHealth
from core_ledger.writer import Result

log = structlog.get_logger("croupier.ledger.fronts")

EPOCH_CLAIM_MAX = 10**headers.EPOCH_DIGITS_MAX  # as the ledger's own handlers take
HEALTHY_AFTER_S = 10.0  # a front that served this long resets the failure streak when it ends
TOKENS_CHECK_S = 1.0  # credential reloads reach the fronts within this
STOP_WAIT_S = 10.0  # a front's graceful stop, then it is killed
WRITE_BUFFER_MAX = 4 * FRAME_BYTES_MAX  # answers a front does not read: it is stuck, and restarted
FRONT_ROUTES = frozenset({*(op.path for op in MONEY_OPS.values()), "/v1/batch"})
RELAY_ROUTE = "/{tail:.*}"  # a front's route for every other path, relayed to this process
RELAY_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def rebuilt(who: auth.Principal, commands: Sequence[Command]) -> list[Command]:
    """Each forwarded command as the ledger's own handler builds it from a caller's request
    (`money_command`: the request validated against its operation's model, the idempotency key,
    client id and via taken as that handler takes them), never the front's own: a command of another
    type or in another caller's name is refused (Forbidden), a request its model refuses is refused
    as over HTTP (422 validation_error), whatever the front says."""
    checked = []
    for command in commands:
        spec = MONEY_OPS.get(command.type)
        if spec is None or who.role not in spec.roles:
            raise Forbidden(f"{who.role} may not send {command.type!r}")
        if command.principal != who.name or command.key is None:
            raise Forbidden("a forwarded command names another principal than its credential")
        raw = dict(command.request)
        if who.role == "edge":  # what an edge named in its body; its own name is the default
            if command.key[0] != who.name:
                raw["client_id"] = command.key[0]
            if command.via is not None and command.via != who.name:
                raw["via"] = command.via
        elif command.via is not None or command.key[0] != who.name:
            raise Forbidden("via and client_id are accepted only from an edge credential")
        own = money_command(command.type, raw, who)
        if own.key != command.key:
            raise Forbidden("a forwarded command's idempotency key is not its request's")
        checked.append(own)
    return checked


class Fronts:
    def __init__(
        self,
        count: int,
        argv: Sequence[str],
        service: LedgerService,
        fencing: Fencing,
        tokens: auth.TokenStore,
        http_metrics: HttpMetrics,
        trace_metrics: TraceMetrics,
        metrics: LedgerMetrics,
        batch_actions_max: int,
    ) -> None:
        self.count = count
        self._batch_actions_max = batch_actions_max
        self._argv = list(argv)  # the front command; `--channel-fd N` is appended
        self._service = service
        self._fencing = fencing
        self._tokens = tokens
        self._http_metrics = http_metrics
        self._front_connections: dict[int, int] = {}  # client connections each running front holds
        http_metrics.connection_sources.append(lambda: sum(self._front_connections.values()))
        self._trace_metrics = trace_metrics
        self._health = TaskHealth("fronts", metrics, base_delay_s=0.5, max_delay_s=30.0)
        self._up = metrics.fronts_up
        self._outboxes: dict[int, Outbox] = {}  # of the fronts serving now
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._keep(i), name=f"front-{i}") for i in range(self.count)]
        self._tasks.append(asyncio.create_task(self._push_state(), name="front-state"))

    async def stop(self) -> None:
        """Cancel the fronts' tasks (each stops its front) and wait for all of them; a task that
        had failed is logged, and the ledger's stop goes on."""
        for task in self._tasks:
            task.cancel()
        for outcome in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(outcome, Exception):
                log.error("ledger_fronts_task_failed", error=repr(outcome))

    async def _keep(self, index: int) -> None:
        """Front `index`, started again whenever it ends (whatever ended it: logged and counted)."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                reason = await self._run(index)
            # A front's end of any kind, a bug too, is logged and counted just below (the `fronts`
            # task's failures; alert CroupierLedgerFrontsDown while it is down) and it starts again.
            except Exception as e:  # noqa: BLE001
                reason = repr(e)
            if loop.time() - started >= HEALTHY_AFTER_S:
                self._health.succeeded()
            delay = self._health.failed()
            log.error(
                "ledger_front_ended",
                front=index,
                reason=reason,
                failures=self._health.consecutive_failures,
                retry_in_s=delay,
            )
            await asyncio.sleep(delay)

    async def _run(self, index: int) -> str:
        """Start front `index` and serve its channel until either ends; why it ended."""
        parent, child = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv,
                "--channel-fd",
                str(child.fileno()),
                pass_fds=(child.fileno(),),
                start_new_session=True,  # a terminal's Ctrl-C stops the ledger, which stops its fronts in order
            )
        except BaseException:  # our end is closed and the error goes on: nothing is swallowed here
            parent.close()
            raise
        finally:
            child.close()
        reader, writer = await asyncio.open_connection(sock=parent, limit=FRAME_BYTES_MAX)
        outbox = Outbox(writer)
        serving = asyncio.create_task(self._serve(reader, outbox, index))
        exited = asyncio.create_task(process.wait())
        self._outboxes[index] = outbox
        self._up.inc()
        log.info("ledger_front_started", front=index, pid=process.pid)
        try:
            outbox.send(tokens_message(self._tokens.entries))
            outbox.send(epoch_message(self._service.epoch))
            done, _ = await asyncio.wait((serving, exited), return_when=asyncio.FIRST_COMPLETED)
            if exited in done:
                return f"exited with status {exited.result()}"
            error = serving.exception()
            return "channel ended" if error is None else f"channel broken: {error!r}"
        finally:
            self._up.dec()
            self._outboxes.pop(index, None)
            self._front_connections.pop(index, None)
            # SIGTERM first: the front drains its requests, whose answers still come over the channel.
            await _end(process)
            serving.cancel()
            exited.cancel()
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, outbox: Outbox, front: int) -> None:
        """The front's frames, in order, until its channel ends. A submit is answered from its
        future's callback (no task per request); only one whose epoch claim must be judged first
        runs as a task, cancelled if the front goes away (what was committed stays committed)."""
        frames = FrameReader(reader)
        judging: set[asyncio.Task[None]] = set()
        try:
            while True:
                for message in await frames.next_frames():
                    if message[0] == "submit":
                        task = self._submit(*submit_of(message), outbox)
                        if task is not None:
                            judging.add(task)
                            task.add_done_callback(judging.discard)
                    elif message[0] == "observed":
                        self._observe(observed_of(message))
                    elif message[0] == "connections":
                        self._count_connections(front, *connections_of(message))
                    elif message[0] == "spans":
                        for result, count in spans_of(message).items():
                            self._trace_metrics.spans_exported_total.labels(result).inc(count)
                    else:
                        raise ChannelError(f"unknown frame kind {message[0]!r}")
        except asyncio.IncompleteReadError:
            return
        finally:
            for task in judging:
                task.cancel()

    def _submit(
        self, n: int, authorization: str, claim: int | None, commands: list[Command], outbox: Outbox
    ) -> asyncio.Task[None] | None:
        """Check a forwarded submit as the ledger's own handlers would, then queue its commands; a
        refusal is answered at once. Returns the task of a claim that must be judged first."""
        try:
            who = self._tokens.authenticate(authorization)
            if len(commands) > 1:  # only an edge's batch carries more than one
                self._check_batch(who, commands)
            commands = rebuilt(who, commands)
            if claim is not None:
                if not 0 <= claim < EPOCH_CLAIM_MAX:
                    raise BadRequest("X-Ledger-Epoch: a non-negative integer is required", field="X-Ledger-Epoch")
                judging = self._fencing.claim(claim, who)
                if judging is not None:
                    return asyncio.create_task(self._submit_once_judged(judging, n, commands, outbox))
            self._queue(n, commands, outbox)
        # Every error is answered: an operating error as itself; a bug logged with its traceback by
        # `_refuse` and answered 500 `internal_error`, which the front counts in the ledger's
        # http_request_duration_seconds{status="500"} (this submit only: the next one is served).
        except Exception as e:  # noqa: BLE001
            self._refuse(n, outbox, e)
        return None

    def _check_batch(self, who: auth.Principal, commands: list[Command]) -> None:
        """Many commands in one submit: what `POST /v1/batch` admits, and no more (the writer takes
        a submit as one job, never split: a front must not make one group of any size)."""
        if who.role != "edge" or any(c.type not in BATCH_OPS for c in commands):
            raise Forbidden("only an edge's batch of batchable actions forwards more than one command")
        if len(commands) > self._batch_actions_max:
            raise BadRequest(f"actions: at most {self._batch_actions_max} per batch", field="actions")

    async def _submit_once_judged(
        self, judging: Awaitable[None], n: int, commands: list[Command], outbox: Outbox
    ) -> None:
        try:
            await judging
            self._queue(n, commands, outbox)
        except Exception as e:  # noqa: BLE001  answered, logged and counted as in `_submit`
            self._refuse(n, outbox, e)

    def _queue(self, n: int, commands: list[Command], outbox: Outbox) -> None:
        """The writer takes the commands; their results go back to the front when committed."""
        self._service.enqueue(commands).add_done_callback(partial(self._answered, n, outbox))

    def _answered(self, n: int, outbox: Outbox, future: asyncio.Future[list[Result]]) -> None:
        """Every submit gets one answer (a callback's exception would only reach the loop's log
        and leave the front's request waiting)."""
        if future.cancelled():  # the writer stopped before committing them
            self._refuse(n, outbox, Unavailable("the ledger is stopping", code="ledger_unavailable"))
            return
        try:
            self._send(outbox, results_message(n, self._service.epoch, future.result()))
        # An operating error is answered as itself; anything else (answers over the frame bound
        # too) is a bug, logged with its traceback by `_refuse` and answered 500 `internal_error`,
        # which the front counts in http_request_duration_seconds{status="500"}; the next is served.
        except Exception as e:  # noqa: BLE001
            self._refuse(n, outbox, e)

    def _refuse(self, n: int, outbox: Outbox, error: BaseException) -> None:
        """A whole submit refused: an operating error as it is, a bug as the ledger's own handlers
        answer one (logged with its traceback, answered without details)."""
        if not isinstance(error, CroupierError):
            log.error("unhandled error", route="front submit", exc_info=error)
            error = CroupierError("an internal error occurred; it has been logged")
        try:
            self._send(outbox, refused_message(n, self._service.epoch, error))
        # Not even a refusal leaves: logged, and the channel cut, so the front answers what waits
        # 503 and ends, which the ledger counts (the `fronts` task) before it starts it again.
        except Exception:
            log.exception("ledger_front_answer_failed")
            outbox.writer.transport.abort()

    @staticmethod
    def _send(outbox: Outbox, reply: list[Any]) -> None:
        if outbox.writer.is_closing():
            return
        if outbox.buffered_bytes > WRITE_BUFFER_MAX:
            log.error("ledger_front_stuck", buffered_bytes=outbox.buffered_bytes)
            outbox.writer.transport.abort()
            return
        outbox.send(reply)  # raises ChannelError for a frame over the bound: nothing is queued then

    def _count_connections(self, front: int, open_now: int, refused: int) -> None:
        """A front's client connections into this process's `http_connections_open` (summed over
        the fronts while they run) and `http_connections_refused_total`."""
        self._front_connections[front] = open_now
        if refused:
            self._http_metrics.connections_refused_total.inc(refused)

    def _observe(self, observations: list[tuple[str, str, int, float]]) -> None:
        """A front's answered requests into this process's `http_request_duration_seconds`: only
        the routes a front serves, so a broken front cannot grow the metric's label sets."""
        for route, method, status, seconds in observations:
            served = route in FRONT_ROUTES and method == "POST"
            relayed = route == RELAY_ROUTE and method in RELAY_METHODS  # the front's own answer: 503, 413
            if (served or relayed) and 100 <= status <= 599 and 0 <= seconds < 3600:
                self._http_metrics.request_duration(route, method, status).observe(seconds)

    async def _push_state(self) -> None:
        """Every front accepts the credentials this process accepts (pushed after each reload) and
        knows its epoch (pushed after each change), within TOKENS_CHECK_S."""
        sent_tokens, sent_epoch = self._tokens.entries, self._service.epoch
        while True:
            await asyncio.sleep(TOKENS_CHECK_S)
            entries, epoch = self._tokens.entries, self._service.epoch
            if entries is sent_tokens and epoch == sent_epoch:
                continue
            for outbox in list(self._outboxes.values()):
                try:
                    if entries is not sent_tokens:
                        outbox.send(tokens_message(entries))
                    if epoch != sent_epoch:
                        outbox.send(epoch_message(epoch))
                # A bug: logged, and that front's channel cut, so it ends, is counted as the
                # `fronts` task's failure and starts again with the credentials and epoch of now.
                except Exception:
                    log.exception("ledger_front_push_failed")
                    outbox.writer.transport.abort()
            sent_tokens, sent_epoch = entries, epoch


async def _end(process: asyncio.subprocess.Process) -> None:
    """Stop a front gracefully (SIGTERM: it drains its requests), then kill it."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        async with asyncio.timeout(STOP_WAIT_S):
            await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
