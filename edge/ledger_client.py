"""The edge's HTTP client of the core ledger: pooled keep-alive connections, deadlines, answers.

It composes the jobs around the HTTP calls: `edge.batcher` (money actions in `POST /v1/batch`
requests), `edge.ledger_failover` (which ledger URL, per-URL breakers, the epoch to claim),
`edge.ledger_limits` (batch bounds lowered to the ledger's published limits) and
`edge.ledger_problems` (problem+json answers as errors here).

Every attempt has `attempt_timeout_s`; every action or read has an overall deadline (`deadline_s`
from its arrival), within which a failed attempt (connection error, timeout, 5xx) is retried. Past
it the caller gets `Unavailable` (`ledger_unavailable`, rendered 503 with Retry-After). While every
URL's breaker is open, calls fail at once.

Answers are parsed into the contract's models (shared/contract/answers.py): a batch answer that
does not match them is a failed attempt (retried), never half-read; a read that does not match is
a 500 (a bug on one side of the contract), not a retryable 503.

Request ids: each money action carries the id of the edge request it came from (`request_id` in its
batch entry, kept across retries), and a read made while serving a request sends that id as
`X-Request-Id`, so the ledger logs them under the id the edge logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import aiohttp
import orjson
import structlog
from pydantic import ValidationError

from shared import request_ids
from shared.client_reads import read_capped
from shared.contract import headers
from shared.contract.answers import Answer, BatchAnswer, BatchResult, TransactionAnswer
from shared.contract.answers import Limits as LedgerLimits
from shared.errors import CroupierError, Unavailable
from shared.tasks import TaskSet, supervise
from shared.tracing import OFF as tracing_off
from shared.tracing import Tracing

from edge.batcher import Action, Asked, Batcher
from edge.breaker import Breaker
from edge.config import Limits
from edge.ledger_failover import LedgerFailover
from edge.ledger_limits import LIMITS_RETRY_S, bounds_within, learn_limits
from edge.ledger_problems import (
    AttemptFailed,
    BatchRefused,
    error_from_problem,
    json_or_none,
    refused_outcome,
    refuses_batch,
)
from edge.metrics import EdgeMetrics

ANSWER_BYTES_MAX = 16 * 1024 * 1024  # of a ledger's answer, decompressed (a batch's is well under 1 MiB)

log = structlog.get_logger("croupier.edge.ledger")
A = TypeVar("A", bound=Answer)

PARSED_OPERATIONS = ("batch", "limits", "balances", "rounds", "jackpot", "bonuses")  # answers parsed into models


class LedgerClient:
    def __init__(
        self,
        base_url: str | Sequence[str],
        token: str | Callable[[], str],
        *,
        attempt_timeout_s: float,
        deadline_s: float,
        limits: Limits,
        metrics: EdgeMetrics,
        clock: Callable[[], float] = time.monotonic,
        tls: ssl.SSLContext | None = None,
        tracing: Tracing = tracing_off,
    ) -> None:
        self.failover = LedgerFailover([base_url] if isinstance(base_url, str) else list(base_url), limits, clock)
        # A callable is read at every request: a reloaded token file takes effect on the next one.
        self._token: Callable[[], str] = token if callable(token) else (lambda: token)
        self._tls = tls  # verifies https:// ledgers (None: aiohttp's default verification)
        self._attempt_timeout_s = attempt_timeout_s
        self.deadline_s = deadline_s
        self._limits = limits
        self._metrics = metrics
        self._clock = clock
        self._tasks = TaskSet(self._failed)
        # Reads may hold every connection of the pool but one per batch in flight, and wait here,
        # never in the pool: a flood of slow reads (400 balance reads) had taken every connection,
        # so money batches waited behind them, and their waits timed out as ledger failures that
        # opened the breaker for every caller.
        self._read_slots = asyncio.Semaphore(
            max(1, limits.ledger_connections_max - limits.ledger_batches_in_flight_max)
        )
        self.batcher = Batcher(self._post_batch, self.failover, limits, metrics, clock, self._spawn)
        self._http: aiohttp.ClientSession | None = None
        self._last_ok = -math.inf
        self._tracing = tracing
        self.ledger_limits: LedgerLimits | None = None  # what the ledger published (None: not yet, or an old one)
        for operation in PARSED_OPERATIONS:  # every series exists from the start: a first failure is an increase
            metrics.ledger_answers_malformed_total.labels(operation)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._limits.ledger_connections_max,
            keepalive_timeout=30,
            ssl=self._tls if self._tls is not None else True,
        )
        self._http = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self._attempt_timeout_s)
        )
        # The dispatcher feeds every batch: a bug in it is reported and it starts again, never left dead
        # (which would turn every money action into a 503 after its deadline).
        self._spawn(supervise("ledger_dispatch", self.batcher.dispatch, self._dispatch_failed, delay_s=0.1))
        self._spawn(supervise("ledger_limits", self._learn_limits, self._dispatch_failed, delay_s=LIMITS_RETRY_S))

    async def _learn_limits(self) -> None:
        await learn_limits(
            lambda: self.read("/v1/limits", "limits", LedgerLimits), self.apply_limits, lambda: self.batcher.bounds
        )

    def apply_limits(self, limits: LedgerLimits) -> None:
        self.ledger_limits = limits
        self.batcher.bounds = bounds = bounds_within(self._limits, limits)
        log.info(
            "ledger_limits_learned",
            batch_max=bounds.actions_max,
            batch_bytes_max=bounds.bytes_max,
            ledger_batch_actions_max=limits.batch_actions_max,
            ledger_body_bytes_max=limits.body_bytes_max,
        )

    async def close(self) -> None:
        await self._tasks.cancel_all()
        if self._http is not None:
            await self._http.close()

    # --- what the rest of the edge reads ----------------------------------------------------------

    @property
    def batch_max(self) -> int:
        return self.batcher.bounds.actions_max

    @property
    def batch_bytes_max(self) -> int:
        return self.batcher.bounds.bytes_max

    @property
    def epoch_seen(self) -> int:
        return self.failover.epoch_seen

    @property
    def breaker(self) -> Breaker:
        """The breaker of the URL in use."""
        return self.failover.breaker

    def breaker_open(self, index: int) -> bool:
        """Whether the breaker of the `index`-th ledger URL is open (calls to it fail at once)."""
        return self.failover.breaker_open(index)

    @property
    def url_count(self) -> int:
        return len(self.failover.urls)

    @property
    def ledger_url(self) -> str:
        return self.failover.urls[self.failover.current]

    def _headers(self) -> dict[str, str]:
        sent = {"Authorization": f"Bearer {self._token()}", **self.failover.epoch_headers()}
        request_id = request_ids.current()
        if request_id is not None:
            sent[request_ids.HEADER] = request_id
        return sent

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

    async def money(
        self, op: str, body: dict[str, Any], *, request_id: str | None = None
    ) -> tuple[int, TransactionAnswer]:
        """The ledger's answer (status, body) to one money action, or the error it decided. The action
        is logged at the ledger under `request_id` (default: the id of the request being served)."""
        if not self.failover.any_closed():
            raise Unavailable("the ledger is unavailable (circuit open)", retry_after_s=self.failover.retry_after_s())
        request_id = request_id or request_ids.current()
        entry: dict[str, Any] = {"op": op, "body": body}
        if request_id is not None:
            entry["request_id"] = request_id
        asked = Asked(op, str(body["id"]), body.get("client_id"), request_id)
        return await self.batcher.submit(orjson.dumps(entry), self.deadline_s, self._tracing.capture(), asked)

    async def _post_batch(self, batch: list[Action]) -> tuple[int, list[BatchResult]]:
        """(index of the URL that answered, one result per action)."""
        assert self._http is not None
        payload = b'{"actions":[' + b",".join(a.encoded for a in batch) + b"]}"
        self._metrics.ledger_batch_size.observe(len(batch))
        index = self.failover.pick()
        started, outcome = self._clock(), "error"
        url = self.failover.urls[index] + "/v1/batch"
        # The batch continues the trace of its first action and links those of the others.
        with self._tracing.client_call(
            "POST", url, "POST /v1/batch", parent=batch[0].trace, links=[a.trace for a in batch[1:]]
        ) as call:
            try:
                async with self._http.post(
                    url, data=payload, headers={"Content-Type": "application/json", **self._headers(), **call.headers}
                ) as resp:
                    self.failover.learn_epoch(resp.headers)
                    call.answered(resp.status)
                    raw = await read_capped(resp, ANSWER_BYTES_MAX)
                    if refuses_batch(resp.status, raw):  # it answered: the link is fine, the batch is not
                        outcome = "rejected"
                        raise BatchRefused(resp.status, json_or_none(raw))
                    if resp.status != 200:
                        outcome = refused_outcome(resp.status, raw)
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
                    log.error("ledger_answer_malformed", operation="batch", errors=e.error_count(), error=str(e)[:500])
                raise AttemptFailed(f"ledger batch failed: {type(e).__name__}") from None
            finally:
                self._observe("batch", outcome, started, index)

    # --- reads ----------------------------------------------------------------------------------

    async def get(self, path: str, operation: str, *, deadline_s: float | None = None) -> dict[str, Any]:
        """A read, retried within the deadline; the ledger's own errors (404...) pass through."""
        assert self._http is not None
        deadline = self._clock() + (self.deadline_s if deadline_s is None else deadline_s)
        delay = self._limits.ledger_retry_backoff_s
        while True:
            if not self.failover.any_closed():
                raise Unavailable(
                    "the ledger is unavailable (circuit open)", retry_after_s=self.failover.retry_after_s()
                )
            try:
                return await self._get_once(path, operation, deadline)
            except AttemptFailed as e:
                if self._clock() + delay >= deadline:
                    raise Unavailable(
                        f"the ledger is unavailable ({e})", retry_after_s=self.failover.retry_after_s()
                    ) from None
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
        try:  # waiting for a slot is this edge's own queue, not the ledger's doing: no attempt made
            async with asyncio.timeout(max(0.0, deadline - self._clock())):
                await self._read_slots.acquire()
        except TimeoutError:
            raise Unavailable("too many reads are waiting for the ledger", code="edge_overloaded") from None
        try:
            return await self._read_attempt(path, operation, deadline)
        finally:
            self._read_slots.release()

    async def _read_attempt(self, path: str, operation: str, deadline: float) -> dict[str, Any]:
        assert self._http is not None
        index = self.failover.pick()
        started, outcome = self._clock(), "error"
        allowed_s = min(self._attempt_timeout_s, deadline - started)
        # An attempt the deadline cut short proves nothing of the ledger when it times out: its
        # timeout is counted in the metric, not against the breaker.
        cut_short = allowed_s < self._attempt_timeout_s
        timeout = aiohttp.ClientTimeout(total=max(0.001, allowed_s))
        url = self.failover.urls[index] + path
        # Only within a trace: the idle readiness probes of `watch` start none.
        with self._tracing.client_call("GET", url, f"GET {operation}", root=False) as call:
            try:
                async with self._http.get(url, timeout=timeout, headers={**self._headers(), **call.headers}) as resp:
                    self.failover.learn_epoch(resp.headers)
                    call.answered(resp.status)
                    if resp.headers.get(headers.LEDGER_ROLE, "primary") != "primary":
                        # A standby (maybe behind) or a fenced copy: money is read from the primary
                        # only; the next attempt goes to the next URL. (An older ledger sends no role.)
                        outcome = "not_primary"
                        raise AttemptFailed(f"ledger answered as {resp.headers[headers.LEDGER_ROLE]}")
                    raw = await read_capped(resp, ANSWER_BYTES_MAX)
                    if resp.status >= 500:
                        outcome = refused_outcome(resp.status, raw)
                        raise AttemptFailed(f"ledger answered {resp.status}")
                    outcome = "ok" if resp.status < 400 else "rejected"
                    if resp.status >= 400:  # the ledger's answer (a route an older ledger lacks: 404)
                        raise error_from_problem(resp.status, json_or_none(raw))
                    return orjson.loads(raw)
            except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as e:
                outcome = "timeout" if isinstance(e, asyncio.TimeoutError) else "error"
                raise AttemptFailed(type(e).__name__) from None
            finally:
                self._observe(operation, outcome, started, index, judged=not (cut_short and outcome == "timeout"))

    # --- plumbing -------------------------------------------------------------------------------

    def _observe(self, operation: str, outcome: str, started: float, index: int, *, judged: bool = True) -> None:
        """An attempt's outcome, in the metric, and (when `judged`: it says something of the link)
        in the breaker of its URL."""
        self._metrics.ledger_request_duration_seconds.labels(operation, outcome).observe(self._clock() - started)
        if outcome in ("ok", "rejected"):
            self._last_ok = self._clock()
        if judged:
            self.failover.record(index, outcome, operation)
        else:
            self.failover.unjudged(index)

    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro)

    def _failed(self, task: asyncio.Task[Any], error: BaseException) -> None:
        self._metrics.background_failures_total.labels("ledger_client").inc()
        log.error("ledger client task failed", task=task.get_name(), error=repr(error), exc_info=error)

    def _dispatch_failed(self, name: str, error: BaseException) -> None:
        self._metrics.background_failures_total.labels("ledger_client").inc()
        log.error("ledger client task failed", task=name, error=repr(error), exc_info=error)
