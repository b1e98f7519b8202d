"""The edge's client of the core ledger: pooled keep-alive HTTP, batching, deadlines, breaker.

Money actions queue here and are sent in `POST /v1/batch` requests (up to `ledger_batch_max`
actions, up to `ledger_batches_in_flight_max` requests at once): while batches are in flight new
actions accumulate, so concurrency turns into batch size (group commit on the client side, as
TigerBeetle's clients do). Each action is still answered only with its own result, after the
ledger committed it.

Every attempt has `attempt_timeout_s`; every action has an overall deadline (`deadline_s` from its
arrival). A failed attempt (connection error, timeout, 5xx, or a per-action 503 or
a code marked retryable in shared/errors.py) is retried with the same body, hence the same
idempotency `id`, after a doubling backoff, while the deadline allows. Past it the caller gets `Unavailable`
(`ledger_unavailable`, rendered 503 with Retry-After). A circuit breaker opens after
`breaker_failures` consecutive failed attempts: while open, calls fail at once; after
`breaker_open_s` one probe is let through.

Failover: the client knows every ledger URL (`ledger_urls`, the primary first) and keeps using the
one that last worked. An attempt that fails (unreachable, timeout, 5xx) or is answered 503
(`not_primary`; `standby_unavailable` from a primary whose standby was promoted) moves it to the
next URL; the action is retried there within the same deadline, with the same id. Each URL has
its own breaker; `not_primary` is an answer, not a failure, so it does not open the standby's
breaker before its promotion. Every request carries `X-Ledger-Epoch`,
the highest epoch any ledger announced to this client (learned only from ledger answers, never
from a game server's request): a primary of a lower epoch that receives it asks its peer ledgers
and fences itself if one proves that epoch (it lost a failover).

Limits: at start the client reads the ledger's `GET /v1/limits` (until it gets an answer) and sends
batches of at most `min(ledger_batch_max, batch_actions_max)` actions and
`min(ledger_batch_bytes_max, body_bytes_max - BODY_MARGIN_BYTES)` bytes. A ledger without the route
(404) is an older one: the configured bounds stay.

Answers are parsed into the contract's models (shared/contract/answers.py): a batch answer that
does not match them is a failed attempt (retried), never half-read.

Request ids: each money action carries the id of the edge request it came from (`request_id` in its
batch entry, kept across retries), and a read made while serving a request sends that id as
`X-Request-Id`, so the ledger logs them under the id the edge logged. Breakers opening and closing
and moves to another ledger URL are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import orjson
import structlog
from opentelemetry import context as otel_context
from pydantic import ValidationError

from shared import request_ids
from shared.contract import headers
from shared.contract.answers import Answer, BatchAnswer, BatchResult, Problem, TransactionAnswer
from shared.contract.answers import Limits as LedgerLimits
from shared.errors import RETRYABLE_CODES, CroupierError, NotFound, Unavailable, error_from_code
from shared.tasks import TaskSet, supervise
from shared.tracing import OFF as tracing_off
from shared.tracing import Tracing

from edge.config import Limits
from edge.metrics import EdgeMetrics

log = structlog.get_logger("croupier.edge.ledger")
A = TypeVar("A", bound=Answer)

PROBLEM_FIELDS = frozenset({"type", "title", "status", "detail", "code", "request_id"})
EPOCH_HEADER = headers.LEDGER_EPOCH
BODY_MARGIN_BYTES = 1024  # room under the ledger's body_bytes_max for the batch's own framing
LIMITS_RETRY_S = 1.0
PARSED_OPERATIONS = ("batch", "limits", "balances", "rounds")  # answers parsed into the contract's models


class AttemptFailed(Exception):
    """One attempt did not reach a decision of the ledger (retryable)."""


class NotPrimary(AttemptFailed):
    """The ledger answered, but it is not (or no longer) the primary: try the next URL."""


def _problem_code(raw: bytes) -> str | None:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def _json_or_none(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def error_from_problem(status: int, body: Any) -> CroupierError:
    """The ledger's problem+json answer as the same error here (extra members kept). A 404 without
    a problem body (a proxy's, or a route an older ledger lacks) is still `not_found`."""
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        if status == 404:
            return NotFound(f"the ledger answered {status} without a problem body")
        return Unavailable(f"the ledger answered {status} without a problem body")
    extra = {k: v for k, v in body.items() if k not in PROBLEM_FIELDS}
    return error_from_code(body["code"], str(body.get("detail", "")), **extra)


class Breaker:
    def __init__(self, failures_max: int, open_s: float, clock: Callable[[], float]) -> None:
        self._failures_max, self._open_s, self._clock = failures_max, open_s, clock
        self._failures = 0
        self._open_until = 0.0
        self._probing = False

    def is_open(self) -> bool:
        """Calls would fail at once (no side effect, unlike `allow`)."""
        return self._failures >= self._failures_max and (self._clock() < self._open_until or self._probing)

    def allow(self) -> bool:
        if self._failures < self._failures_max:
            return True
        if self._clock() < self._open_until or self._probing:
            return False
        self._probing = True  # half-open: one attempt decides
        return True

    def retry_after_s(self) -> int:
        return max(1, math.ceil(self._open_until - self._clock()))

    def success(self) -> bool:
        """Reset; True if the circuit was open (it closes now)."""
        was_open = self._failures >= self._failures_max
        self._failures, self._probing = 0, False
        return was_open

    def release(self) -> None:
        """The call got an answer that says nothing about the link's health (a half-open probe ends)."""
        self._probing = False

    def failure(self) -> bool:
        """Count a failure; True if it opened the circuit (not when a half-open probe failed)."""
        self._failures += 1
        self._probing = False
        if self._failures >= self._failures_max:
            self._open_until = self._clock() + self._open_s
        return self._failures == self._failures_max


@dataclass
class _Action:
    encoded: bytes  # {"op", "body"} as JSON: a batch is these joined
    deadline: float
    future: asyncio.Future[tuple[int, TransactionAnswer]]
    attempts: int = 0
    trace: otel_context.Context | None = None  # the trace context it was queued in (None: tracing off)


class LedgerClient:
    def __init__(self, base_url: str | Sequence[str], token: str | Callable[[], str], *, attempt_timeout_s: float,
                 deadline_s: float, limits: Limits, metrics: EdgeMetrics, clock: Callable[[], float] = time.monotonic,
                 tls: ssl.SSLContext | None = None, tracing: Tracing = tracing_off) -> None:
        self._bases = [base_url] if isinstance(base_url, str) else list(base_url)
        assert self._bases, "at least one ledger URL"
        self._current = 0  # index of the URL in use: the last one that worked
        self.epoch_seen = 0  # the highest epoch a ledger announced (sent back on every request)
        # A callable is read at every request: a reloaded token file takes effect on the next one.
        self._token: Callable[[], str] = token if callable(token) else (lambda: token)
        self._tls = tls  # verifies https:// ledgers (None: aiohttp's default verification)
        self._attempt_timeout_s = attempt_timeout_s
        self.deadline_s = deadline_s
        self._limits = limits
        self._metrics = metrics
        self._clock = clock
        self._breakers = [Breaker(limits.breaker_failures, limits.breaker_open_s, clock) for _ in self._bases]
        self._queue: asyncio.Queue[_Action] = asyncio.Queue(maxsize=limits.ledger_queue_max)
        self._slots = asyncio.Semaphore(limits.ledger_batches_in_flight_max)
        self._tasks = TaskSet(self._failed)
        self._http: aiohttp.ClientSession | None = None
        self._last_ok = -math.inf
        self._tracing = tracing
        self.batch_max = limits.ledger_batch_max  # lowered to the ledger's own limits once read
        self.batch_bytes_max = limits.ledger_batch_bytes_max
        self.ledger_limits: LedgerLimits | None = None  # what the ledger published (None: not yet, or an old one)
        for operation in PARSED_OPERATIONS:  # every series exists from the start: a first failure is an increase
            metrics.ledger_answers_malformed_total.labels(operation)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._limits.ledger_connections_max, keepalive_timeout=30,
                                         ssl=self._tls if self._tls is not None else True)
        self._http = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._attempt_timeout_s))
        # The dispatcher feeds every batch: a bug in it is reported and it starts again, never left dead
        # (which would turn every money action into a 503 after its deadline).
        self._spawn(supervise("ledger_dispatch", self._dispatch, self._dispatch_failed, delay_s=0.1))
        self._spawn(supervise("ledger_limits", self._learn_limits, self._dispatch_failed, delay_s=LIMITS_RETRY_S))

    async def _learn_limits(self) -> None:
        """Read the ledger's published limits once (retrying while it is away) and respect them."""
        while True:
            try:
                limits = await self.read("/v1/limits", "limits", LedgerLimits)
            except NotFound:
                log.info("ledger_limits_unpublished", batch_max=self.batch_max, batch_bytes_max=self.batch_bytes_max)
                return
            except Unavailable:
                await asyncio.sleep(LIMITS_RETRY_S)
                continue
            self.apply_limits(limits)
            return

    def apply_limits(self, limits: LedgerLimits) -> None:
        self.ledger_limits = limits
        self.batch_max = max(1, min(self._limits.ledger_batch_max, limits.batch_actions_max))
        self.batch_bytes_max = max(1, min(self._limits.ledger_batch_bytes_max,
                                          limits.body_bytes_max - BODY_MARGIN_BYTES))
        log.info("ledger_limits_learned", batch_max=self.batch_max, batch_bytes_max=self.batch_bytes_max,
                 ledger_batch_actions_max=limits.batch_actions_max, ledger_body_bytes_max=limits.body_bytes_max)

    async def close(self) -> None:
        await self._tasks.cancel_all()
        if self._http is not None:
            await self._http.close()

    @property
    def breaker(self) -> Breaker:
        """The breaker of the URL in use."""
        return self._breakers[self._current]

    def breaker_open(self, index: int) -> bool:
        """Whether the breaker of the `index`-th ledger URL is open (calls to it fail at once)."""
        return self._breakers[index].is_open()

    @property
    def url_count(self) -> int:
        return len(self._bases)

    @property
    def ledger_url(self) -> str:
        return self._bases[self._current]

    def _closed(self) -> bool:
        return not all(b.is_open() for b in self._breakers)

    def _retry_after_s(self) -> int:
        return min(b.retry_after_s() for b in self._breakers)

    def _pick(self) -> int:
        """The URL to try: the one in use, else the next whose breaker lets a call through."""
        for step in range(len(self._bases)):
            index = (self._current + step) % len(self._bases)
            if self._breakers[index].allow():
                self._switch(index, "circuit open")
                return index
        raise AttemptFailed("the circuit is open for every ledger")

    def _move_on(self, index: int, reason: str) -> None:
        """The URL at `index` failed or is not the primary: the next attempt goes to the next one."""
        if index == self._current:
            self._switch((index + 1) % len(self._bases), reason)

    def _switch(self, index: int, reason: str) -> None:
        if index != self._current:
            log.warning("ledger_url_switched", from_url=self._bases[self._current], to_url=self._bases[index],
                        reason=reason)
            self._current = index

    def _headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self._token()}"}
        if self.epoch_seen:
            headers[EPOCH_HEADER] = str(self.epoch_seen)
        request_id = request_ids.current()
        if request_id is not None:
            headers[request_ids.HEADER] = request_id
        return headers

    def _learn(self, resp: aiohttp.ClientResponse) -> None:
        raw = resp.headers.get(EPOCH_HEADER, "")
        if raw.isdigit() and len(raw) <= 18:
            self.epoch_seen = max(self.epoch_seen, int(raw))

    def reachable(self) -> bool:
        return self._clock() - self._last_ok <= self._limits.reachable_window_s

    async def watch(self) -> None:
        """Forever: probe the ledger when nothing else did lately (readiness, breaker recovery)."""
        while True:
            if self._clock() - self._last_ok > self._limits.reachable_window_s / 4:
                with contextlib.suppress(CroupierError):  # counted by the metrics; /readyz reports it
                    await self.get("/readyz", "readyz", deadline_s=self._attempt_timeout_s)
            await asyncio.sleep(min(1.0, self._limits.reachable_window_s / 4))

    # --- money --------------------------------------------------------------------------------

    async def money(self, op: str, body: dict[str, Any], *,
                    request_id: str | None = None) -> tuple[int, TransactionAnswer]:
        """The ledger's answer (status, body) to one money action, or the error it decided. The action
        is logged at the ledger under `request_id` (default: the id of the request being served)."""
        if not self._closed():
            raise Unavailable("the ledger is unavailable (circuit open)", retry_after_s=self._retry_after_s())
        request_id = request_id or request_ids.current()
        entry: dict[str, Any] = {"op": op, "body": body}
        if request_id is not None:
            entry["request_id"] = request_id
        encoded = orjson.dumps(entry)
        action = _Action(encoded, self._clock() + self.deadline_s, asyncio.get_running_loop().create_future(),
                         trace=self._tracing.capture())
        try:
            self._queue.put_nowait(action)
        except asyncio.QueueFull:
            raise Unavailable("too many money actions waiting for the ledger") from None
        try:
            return await asyncio.wait_for(asyncio.shield(action.future), self.deadline_s)
        except TimeoutError:
            action.future.cancel()  # nobody waits any more; an answer arriving later is dropped
            raise Unavailable("the ledger did not answer within the deadline",
                              retry_after_s=self._retry_after_s()) from None

    async def _dispatch(self) -> None:
        carry: _Action | None = None  # taken from the queue but did not fit the last batch
        while True:
            first = carry or await self._queue.get()
            carry = None
            await self._slots.acquire()
            batch, size = [first], len(first.encoded)
            while len(batch) < self.batch_max and not self._queue.empty():
                action = self._queue.get_nowait()
                if size + len(action.encoded) + 1 > self.batch_bytes_max:
                    carry = action
                    break
                batch.append(action)
                size += len(action.encoded) + 1
            batch = [a for a in batch if not a.future.done()]
            if batch:
                self._spawn(self._send(batch))
            else:
                self._slots.release()

    async def _send(self, batch: list[_Action]) -> None:
        try:
            index, results = await self._post_batch(batch)
        except AttemptFailed as e:
            for action in batch:
                self._retry_or_fail(action, str(e))
            return
        finally:
            self._slots.release()
        for action, result in zip(batch, results, strict=True):  # same length: checked by _post_batch
            status, body = result.status, result.body
            if status < 400 and isinstance(body, TransactionAnswer):
                _resolve(action, (status, body))
            elif status < 400 or not isinstance(body, Problem):
                self._metrics.ledger_answers_malformed_total.labels("batch").inc()
                log.error("ledger_answer_malformed", operation="batch", status=status, body_kind=type(body).__name__)
                self._retry_or_fail(action, "malformed batch result")
            elif status == 503 or body.code in RETRYABLE_CODES:
                if status == 503:  # this ledger cannot take it (fenced, or its standby went away)
                    self._move_on(index, body.code)
                self._retry_or_fail(action, body.code)
            else:
                _fail(action, error_from_problem(status, body.dump()))

    async def _post_batch(self, batch: list[_Action]) -> tuple[int, list[BatchResult]]:
        """(index of the URL that answered, one result per action)."""
        assert self._http is not None
        payload = b'{"actions":[' + b",".join(a.encoded for a in batch) + b"]}"
        self._metrics.ledger_batch_size.observe(len(batch))
        index = self._pick()
        started, outcome = self._clock(), "error"
        url = self._bases[index] + "/v1/batch"
        # The batch continues the trace of its first action and links those of the others.
        with self._tracing.client_call("POST", url, "POST /v1/batch", parent=batch[0].trace,
                                       links=[a.trace for a in batch[1:]]) as call:
            try:
                async with self._http.post(url, data=payload, headers={
                        "Content-Type": "application/json", **self._headers(), **call.headers}) as resp:
                    self._learn(resp)
                    call.answered(resp.status)
                    raw = await resp.read()
                    if resp.status != 200:
                        outcome = _refused(resp.status, raw)
                        raise AttemptFailed(f"ledger batch answered {resp.status}")
                    results = BatchAnswer.model_validate_json(raw).results
                    if len(results) != len(batch):
                        raise AttemptFailed("ledger batch answered without one result per action")
                    outcome = "ok"
                    return index, results
            except (TimeoutError, aiohttp.ClientError, ValidationError) as e:
                outcome = "timeout" if isinstance(e, asyncio.TimeoutError) else "error"
                if isinstance(e, ValidationError):
                    self._metrics.ledger_answers_malformed_total.labels("batch").inc()
                    log.error("ledger_answer_malformed", operation="batch", errors=e.error_count(),
                              error=str(e)[:500])
                raise AttemptFailed(f"ledger batch failed: {type(e).__name__}") from None
            finally:
                self._observe("batch", outcome, started, index)

    def _retry_or_fail(self, action: _Action, reason: str) -> None:
        action.attempts += 1
        delay = self._limits.ledger_retry_backoff_s * 2 ** min(action.attempts - 1, 10)
        if action.future.done():
            return
        if self._clock() + delay >= action.deadline or not self._closed():
            _fail(action, Unavailable(f"the ledger is unavailable ({reason})",
                                      retry_after_s=self._retry_after_s()))
            return
        self._spawn(self._requeue(action, delay))

    async def _requeue(self, action: _Action, delay: float) -> None:
        await asyncio.sleep(delay)
        if not action.future.done():
            try:
                self._queue.put_nowait(action)
            except asyncio.QueueFull:
                _fail(action, Unavailable("too many money actions waiting for the ledger"))

    # --- reads ----------------------------------------------------------------------------------

    async def get(self, path: str, operation: str, *, deadline_s: float | None = None) -> dict[str, Any]:
        """A read, retried within the deadline; the ledger's own errors (404...) pass through."""
        assert self._http is not None
        deadline = self._clock() + (self.deadline_s if deadline_s is None else deadline_s)
        delay = self._limits.ledger_retry_backoff_s
        while True:
            if not self._closed():
                raise Unavailable("the ledger is unavailable (circuit open)", retry_after_s=self._retry_after_s())
            try:
                return await self._get_once(path, operation, deadline)
            except AttemptFailed as e:
                if self._clock() + delay >= deadline:
                    raise Unavailable(f"the ledger is unavailable ({e})",
                                      retry_after_s=self._retry_after_s()) from None
            await asyncio.sleep(delay)
            delay *= 2

    async def read(self, path: str, operation: str, model: type[A], *, deadline_s: float | None = None) -> A:
        """A read (as `get`) parsed into its contract model. An answer that does not match is a bug
        on one side of the contract: logged, answered 500 (not a retryable 503), never half-read."""
        body = await self.get(path, operation, deadline_s=deadline_s)
        try:
            return model.model_validate(body)
        except ValidationError as e:
            self._metrics.ledger_answers_malformed_total.labels(operation).inc()
            log.error("ledger_answer_malformed", operation=operation, errors=e.error_count(), error=str(e)[:500])
            raise CroupierError(f"the ledger's answer to {operation} does not match the contract") from None

    async def _get_once(self, path: str, operation: str, deadline: float) -> dict[str, Any]:
        assert self._http is not None
        index = self._pick()
        started, outcome = self._clock(), "error"
        timeout = aiohttp.ClientTimeout(total=max(0.001, min(self._attempt_timeout_s, deadline - started)))
        url = self._bases[index] + path
        # Only within a trace: the idle readiness probes of `watch` start none.
        with self._tracing.client_call("GET", url, f"GET {operation}", root=False) as call:
            try:
                async with self._http.get(url, timeout=timeout, headers={**self._headers(), **call.headers}) as resp:
                    self._learn(resp)
                    call.answered(resp.status)
                    raw = await resp.read()
                    if resp.status >= 500:
                        outcome = _refused(resp.status, raw)
                        raise AttemptFailed(f"ledger answered {resp.status}")
                    outcome = "ok" if resp.status < 400 else "rejected"
                    if resp.status >= 400:  # the ledger's answer (a route an older ledger lacks: 404)
                        raise error_from_problem(resp.status, _json_or_none(raw))
                    return orjson.loads(raw)
            except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as e:
                outcome = "timeout" if isinstance(e, asyncio.TimeoutError) else "error"
                raise AttemptFailed(type(e).__name__) from None
            finally:
                self._observe(operation, outcome, started, index)

    # --- plumbing -------------------------------------------------------------------------------

    def _observe(self, operation: str, outcome: str, started: float, index: int) -> None:
        self._metrics.ledger_request_duration_seconds.labels(operation, outcome).observe(self._clock() - started)
        breaker = self._breakers[index]
        if outcome in ("ok", "rejected"):
            self._last_ok = self._clock()
            if breaker.success():
                log.info("ledger_breaker_closed", url=self._bases[index])
            return
        if outcome == "not_primary":  # it answered: not a failure of the link, just the wrong ledger
            breaker.release()
        elif breaker.failure():
            log.warning("ledger_breaker_open", url=self._bases[index], failures=self._limits.breaker_failures,
                        open_s=self._limits.breaker_open_s, last_outcome=outcome, operation=operation)
        self._move_on(index, outcome)

    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro)

    def _failed(self, task: asyncio.Task[Any], error: BaseException) -> None:
        self._metrics.background_failures_total.labels("ledger_client").inc()
        log.error("ledger client task failed", task=task.get_name(), error=repr(error), exc_info=error)

    def _dispatch_failed(self, name: str, error: BaseException) -> None:
        self._metrics.background_failures_total.labels("ledger_client").inc()
        log.error("ledger client task failed", task=name, error=repr(error), exc_info=error)


def _refused(status: int, raw: bytes) -> str:
    """The outcome label of a non-success answer: `not_primary` (try elsewhere) or an error."""
    return "not_primary" if status == 503 and _problem_code(raw) == "not_primary" else "error"


def _resolve(action: _Action, value: tuple[int, TransactionAnswer]) -> None:
    if not action.future.done():
        action.future.set_result(value)


def _fail(action: _Action, exc: CroupierError) -> None:
    if not action.future.done():
        action.future.set_exception(exc)
