"""Group commit on the client side: money actions queue here and leave in `POST /v1/batch` requests.

Up to the batch bounds (`edge.ledger_limits`) go in one request, and up to
`ledger_batches_in_flight_max` requests are in flight at once: while batches are in flight new
actions accumulate, so concurrency turns into batch size (as TigerBeetle's clients do). Each
action is still answered only with its own result, after the ledger committed it.

Every action has an overall deadline (`deadline_s` from its arrival). A failed attempt (the
request failed, a per-action 503 or a code marked retryable in shared/errors.py) is retried with
the same body, hence the same idempotency `id`, after a doubling backoff, while the deadline
allows; past it the caller gets `Unavailable` (`ledger_unavailable`, 503 with Retry-After). A
per-action 503 (fenced, or its standby went away) also moves the client to the next ledger URL.

A batch the ledger refuses as a whole as a bad request (400, 413, 422: versions apart, a bound
lowered, a bug) is not a failure of the link and would be refused again as it is: it is split in
halves, sent again, until the action at fault is alone, and that one gets the ledger's problem.
One bad action then fails itself only, instead of every action batched with it (retried until
their deadline) and, through the breaker, every caller.

The HTTP request itself is the client's (`post`): this module only forms batches and settles
their actions.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NamedTuple

import structlog
from opentelemetry import context as otel_context

from shared.contract.answers import BatchResult, Problem, TransactionAnswer
from shared.errors import RETRYABLE_CODES, CroupierError, Unavailable

from edge.config import Limits
from edge.ledger_failover import LedgerFailover
from edge.ledger_limits import BatchBounds, configured_bounds
from edge.ledger_problems import AttemptFailed, BatchRefused, error_from_problem
from edge.metrics import EdgeMetrics

log = structlog.get_logger("croupier.edge.ledger")


class Asked(NamedTuple):
    """What a money action asks, which its result in the ledger's batch answer must name: results
    are in the actions' order, and a result that names another action (a ledger or proxy that
    reordered them) would hand one caller another's answer and effects."""

    op: str  # the transaction type
    id: str
    client_id: str | None  # None: the ledger takes the credential's name
    request_id: str | None

    def answered_by(self, status: int, body: TransactionAnswer | Problem) -> bool:
        if isinstance(body, TransactionAnswer):
            tx = body.transaction
            return (
                (tx.id, tx.type) == (self.id, self.op)
                and self.client_id in (None, tx.client_id)
                and (tx.outcome == "committed" or status >= 400)
            )
        return self.request_id is None or body.request_id in (None, self.request_id)


@dataclass
class Action:
    """One queued money action."""

    encoded: bytes  # {"op", "body"[, "request_id"]} as JSON: a batch is these joined
    deadline: float
    future: asyncio.Future[tuple[int, TransactionAnswer]]
    attempts: int = 0
    trace: otel_context.Context | None = None  # the trace context it was queued in (None: tracing off)
    asked: Asked | None = None  # what it asks: its result must answer exactly that
    # Its client's place in the queue is held until it left the queue AND was settled: a caller
    # that gave up at its deadline leaves its action queued until dispatch drops it, and a place
    # given back then let one client fill the queue every client shares with dead actions.
    in_queue: bool = False
    released: bool = False

    @property
    def client(self) -> str:
        return (self.asked.client_id or "") if self.asked is not None else ""


# Sends one batch: (index of the ledger URL that answered, one result per action), or raises
# AttemptFailed (retry) or BatchRefused (split).
PostBatch = Callable[[list[Action]], Awaitable[tuple[int, list[BatchResult]]]]
Spawn = Callable[[Coroutine[Any, Any, None]], None]


class Batcher:
    def __init__(
        self,
        post: PostBatch,
        failover: LedgerFailover,
        limits: Limits,
        metrics: EdgeMetrics,
        clock: Callable[[], float],
        spawn: Spawn,
    ) -> None:
        self._post = post
        self._failover = failover
        self._limits = limits
        self._metrics = metrics
        self._clock = clock
        self._spawn = spawn
        self._queue: asyncio.Queue[Action] = asyncio.Queue(maxsize=limits.ledger_queue_max)
        self._slots = asyncio.Semaphore(limits.ledger_batches_in_flight_max)
        self.bounds: BatchBounds = configured_bounds(limits)  # lowered to the ledger's own limits once read
        # Told of an answer that came after its caller's deadline (op, answer): the action may have
        # committed, and nobody applies its effects otherwise.
        self.on_late: Callable[[str, TransactionAnswer], None] | None = None
        self._waiting: Counter[str] = Counter()  # unsettled actions, by client id

    def _release(self, action: Action) -> None:
        """Give the action's client its place back, once it is out of the queue and settled."""
        if action.in_queue or action.released or not action.future.done():
            return
        action.released = True
        client = action.client
        self._waiting[client] -= 1
        if self._waiting[client] <= 0:
            del self._waiting[client]

    async def submit(
        self, encoded: bytes, deadline_s: float, trace: otel_context.Context | None, asked: Asked | None = None
    ) -> tuple[int, TransactionAnswer]:
        """Queue one encoded action and wait for its own result, at most `deadline_s`."""
        loop = asyncio.get_running_loop()
        action = Action(encoded, self._clock() + deadline_s, loop.create_future(), trace=trace, asked=asked)
        client = action.client
        if self._waiting[client] >= self._limits.ledger_queue_per_client_max:
            # One caller cannot fill the queue that every caller shares (the others would get 503s).
            raise Unavailable(
                "too many of this client's money actions are waiting for the ledger", code="edge_overloaded"
            )
        try:
            self._queue.put_nowait(action)
        except asyncio.QueueFull:
            raise Unavailable("too many money actions waiting for the ledger", code="edge_overloaded") from None
        action.in_queue = True
        self._waiting[client] += 1
        action.future.add_done_callback(lambda _: self._release(action))
        try:
            async with asyncio.timeout(deadline_s):
                return await asyncio.shield(action.future)
        except TimeoutError:
            action.future.cancel()  # nobody waits any more; an answer arriving later is dropped
            raise Unavailable(
                "the ledger did not answer within the deadline", retry_after_s=self._failover.retry_after_s()
            ) from None

    async def dispatch(self) -> None:
        """Forever: take queued actions, form a batch within the bounds, send it when a slot is free."""
        carry: Action | None = None  # taken from the queue but did not fit the last batch
        while True:
            first = carry or await self._queue.get()
            carry = None
            await self._slots.acquire()
            batch, size = [first], len(first.encoded)
            while len(batch) < self.bounds.actions_max and not self._queue.empty():
                action = self._queue.get_nowait()
                if size + len(action.encoded) + 1 > self.bounds.bytes_max:
                    carry = action
                    break
                batch.append(action)
                size += len(action.encoded) + 1
            for action in batch:  # out of the queue: a settled one (its caller gave up) is dropped here
                action.in_queue = False
                self._release(action)
            batch = [a for a in batch if not a.future.done()]
            if batch:
                self._spawn(self._send(batch))
            else:
                self._slots.release()

    async def _send(self, batch: list[Action]) -> None:
        try:
            index, results = await self._post(batch)
        except AttemptFailed as e:
            for action in batch:
                self._retry_or_fail(action, str(e))
            return
        except BatchRefused as e:
            self._split(batch, e)
            return
        finally:
            self._slots.release()
        if any(
            a.asked is not None and not a.asked.answered_by(r.status, r.body)
            for a, r in zip(batch, results, strict=True)
        ):  # not this batch's answer: none of it is used, and every action is tried again (by its id)
            self._metrics.ledger_answers_malformed_total.labels("batch").inc()
            log.error("ledger_answer_malformed", operation="batch", reason="a result answers another action")
            for action in batch:
                self._retry_or_fail(action, "a batch answer that does not match its actions")
            return
        for action, result in zip(batch, results, strict=True):  # same length: checked by `post`
            status, body = result.status, result.body
            if status < 400 and isinstance(body, TransactionAnswer):
                if action.future.done() and action.asked is not None and self.on_late is not None:
                    self.on_late(action.asked.op, body)  # its caller gave up at its deadline
                _resolve(action, (status, body))
            elif status < 400 or not isinstance(body, Problem):
                self._metrics.ledger_answers_malformed_total.labels("batch").inc()
                log.error("ledger_answer_malformed", operation="batch", status=status, body_kind=type(body).__name__)
                self._retry_or_fail(action, "malformed batch result")
            elif status == 503 or body.code in RETRYABLE_CODES:
                if status == 503:  # this ledger cannot take it (fenced, or its standby went away)
                    self._failover.move_on(index, body.code)
                self._retry_or_fail(action, body.code)
            else:
                _fail(action, error_from_problem(status, body.dump()))

    def _split(self, batch: list[Action], refusal: BatchRefused) -> None:
        """A batch refused whole: its halves are sent again; an action refused alone gets the problem."""
        self._metrics.ledger_batches_refused_total.labels(str(refusal.status)).inc()
        body = refusal.body if isinstance(refusal.body, dict) else {}
        log.error(
            "ledger_batch_refused",
            status=refusal.status,
            code=body.get("code"),
            detail=str(body.get("detail", ""))[:500],
            actions=len(batch),
        )
        waiting = [a for a in batch if not a.future.done()]
        if len(waiting) == 1 and refusal.status == 500:
            # The ledger's bug may have struck after the commit: the outcome is unknown, so it is
            # tried again by its id within its deadline (a replay if it committed), then 503.
            self._retry_or_fail(waiting[0], "internal_error")
        elif len(waiting) == 1:
            _fail(waiting[0], error_from_problem(refusal.status, refusal.body))
        elif waiting:
            half = len(waiting) // 2
            self._spawn(self._send_alone(waiting[:half]))
            self._spawn(self._send_alone(waiting[half:]))

    async def _send_alone(self, part: list[Action]) -> None:
        """`part` in a batch of its own, when a slot is free (it is not merged with queued actions)."""
        await self._slots.acquire()
        await self._send(part)

    def _retry_or_fail(self, action: Action, reason: str) -> None:
        action.attempts += 1
        delay = self._limits.ledger_retry_backoff_s * 2 ** min(action.attempts - 1, 10)
        if action.future.done():
            return
        if self._clock() + delay >= action.deadline or not self._failover.any_closed():
            _fail(
                action,
                Unavailable(f"the ledger is unavailable ({reason})", retry_after_s=self._failover.retry_after_s()),
            )
            return
        self._spawn(self._requeue(action, delay))

    async def _requeue(self, action: Action, delay: float) -> None:
        await asyncio.sleep(delay)
        if not action.future.done():
            try:
                self._queue.put_nowait(action)
                action.in_queue = True
            except asyncio.QueueFull:
                _fail(action, Unavailable("too many money actions waiting for the ledger"))


def _resolve(action: Action, value: tuple[int, TransactionAnswer]) -> None:
    if not action.future.done():
        action.future.set_result(value)


def _fail(action: Action, exc: CroupierError) -> None:
    if not action.future.done():
        action.future.set_exception(exc)
