"""The ledger writer: one task with group commit and pipelining; the only code that journals.

The writer drains up to `commit_batch_max` queued commands (a group), loads the rows they need
into the overlay (core_ledger/overlay.py: a cache only it mutates, so load-then-write is
serializable), runs decide+evolve for each in order, and writes the journal rows and derived rows
in ONE transaction. A group is taken only once fewer groups than the pipeline depth are in
flight, so whatever arrived meanwhile joins it. At depth 2 groups are pipelined: the next group is
judged (against the overlay, which already holds the previous group's effects) while the previous
one commits; at depth 1 it is taken once the previous one committed. The store sets the depth
(`Store.pipeline_depth`): 1 on SQLite, whose commit needs this interpreter (see
docs/decisions/writer-pipeline-depth-one.md), 2 on PostgreSQL, whose commit runs in the server
(docs/decisions/pipeline-depth-by-backend.md). Each group commits only after its predecessor did,
and is answered only after its own commit. A failed commit (or a failed
load) fails that group and every group judged on top of it with 503, and the overlay restarts from
storage.

Fail-stop: planning the rows a group needs and judging it are pure, so an exception there (an
`InvariantBroken`, or any other bug) would repeat on every retry. The writer halts instead: the
failing command is logged, that group and every later write are answered 500 `ledger_halted` (not
retryable), /readyz turns red and `ledger_halted` is 1 until an operator restarts the ledger. So
does a commit that fails on what it was given rather than on the backend (anything but a
`StorageError` or an `OSError`). A failed store read while loading rows, or a failed commit, stays
a retryable 503.

Failover (core_ledger/failover.py) decides whether it may write: a standby takes none, a fenced
primary answers every write 503 `not_primary`, even one whose commit was under way, except the one
group that journals an `unfence`. With `synchronous_standby`, a committed group's answers are held
until a standby acknowledged its last sequence; past `standby_ack_timeout_s` they are 503
`standby_unavailable` instead (the entries stay journaled: a retry with the same id replays them,
and that replay too waits for a standby).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from prometheus_client import Counter as PromCounter

from shared.errors import CroupierError, Halted, Unavailable

from core_ledger.domain import (
    Command,
    Context,
    Rejection,
    Replay,
    decide,
    evolve,
    sealed,
)
from core_ledger.domain.reports import day_of
from core_ledger.failover import Failover
from core_ledger.metrics import LIMIT_REASONS, LedgerMetrics
from core_ledger.overlay import Overlay, PlanningFailed
from core_ledger.rejections import as_error, status_and_body
from core_ledger.store import Head, JournalRow, StorageError, Store

log = structlog.get_logger("croupier.ledger")

Answer = tuple[int, dict]
Result = Answer | CroupierError


class _JudgeFailed(Exception):
    """Judging one command raised: a bug (judging is pure), so the writer halts."""

    def __init__(self, command: Command, error: BaseException) -> None:
        super().__init__(repr(error))
        self.command = command
        self.error = error


@dataclass(frozen=True)
class WriterLimits:
    group_commit: bool = True
    commit_batch_max: int = 256
    queue_depth_max: int = 10_000
    cache_rows_max: int = 200_000  # the overlay is dropped (and reloaded lazily) beyond this
    synchronous_standby: bool = False  # answer a commit only once a standby has applied it
    standby_ack_timeout_s: float = 2.0  # then 503 standby_unavailable (retry with the same id)
    # Groups in flight (judged, not yet answered). 1: the next group is taken once the previous one
    # committed. 2: it is judged while the previous one commits. None: the store's own
    # (`Store.pipeline_depth`: 1 on SQLite, 2 on PostgreSQL); tests set it to exercise either.
    pipeline_depth: int | None = None
    # Skip the store lookup of keys certainly absent (core_ledger/key_filter.py); off only to
    # measure what it earns (see docs/decisions/writer-key-filter.md).
    key_filter: bool = True
    # An idle writer writes the derived rows its store holds behind the journal after this long
    # without a command (store/held_rows.py); under load every so many commits write them.
    derived_idle_flush_s: float = 0.2


@dataclass(slots=True)
class _Job:
    commands: list[Command]
    future: asyncio.Future[list[Result]]
    lifting_fence: bool = False  # the journaled unfence: the one write a fenced primary takes


@dataclass(slots=True)
class _Judged:
    """A group decided against the overlay, waiting for its commit."""

    head: Head  # the head the group stands on until it is judged, then its last entry's
    results: list[Result] = field(default_factory=list)
    journal: list[JournalRow] = field(default_factory=list)
    rows: dict = field(default_factory=dict)
    counts: list[tuple[str, str]] = field(default_factory=list)
    replays: int = 0


@dataclass(slots=True)
class _Chain:
    """Where the group being judged has taken the chain: its last entry's sequence and hash (a
    `Head` is built once per group from it, not once per entry)."""

    sequence: int
    hash: str
    epoch: int


class LedgerWriter:
    def __init__(
        self,
        store: Store,
        limits: WriterLimits,
        overlay: Overlay,
        failover: Failover,
        *,
        clock: Callable[[], datetime],
        metrics: LedgerMetrics,
    ) -> None:
        self.store = store
        self.limits = limits
        self._overlay = overlay
        self._failover = failover
        self._clock = clock
        self.metrics = metrics
        # Bounded in commands, not jobs (`queued_commands`): a batch is one job of up to
        # batch_actions_max commands, and a bound in jobs let 256 times the limit wait.
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._queued_commands = 0
        self._broken = False  # a judge or commit failed: restart the overlay from storage
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
        self.halted: str | None = None  # why the writer stopped taking writes (fail-stop); None: it did not
        self._held: set[asyncio.Task[None]] = set()  # committed answers waiting for a standby
        self._counters: dict[tuple[str, str], PromCounter] = {}  # labelled children of the counters `_count` adds to
        self.pipeline_depth = limits.pipeline_depth or store.pipeline_depth  # groups in flight at most

    @property
    def queue_depth(self) -> int:
        """Commands queued for the writer and not yet taken into a group."""
        return self._queued_commands

    @property
    def ready(self) -> bool:
        return self._accepting and self._task is not None and not self._task.done() and self.halted is None

    def start(self) -> None:
        """Start the writer task (the overlay's heads are already read from the store)."""
        self._task = asyncio.create_task(self._run(), name="ledger-writer")
        self._accepting = True

    async def stop(self) -> None:
        """Refuse new work, let the writer finish everything queued and every held answer."""
        self._accepting = False
        if self._task is not None:
            if not self._task.done():
                await self._queue.put(None)
            await self._task
            self._task = None
        while self._held:  # each waits at most standby_ack_timeout_s
            await asyncio.gather(*self._held, return_exceptions=True)

    async def submit(self, commands: list[Command], *, lifting_fence: bool = False) -> list[Result]:
        """Queue commands as one group; their results in order, once committed. Only `unfence`
        passes `lifting_fence` (a fenced primary takes that group, and only when it is alone)."""
        return await self.enqueue(commands, lifting_fence=lifting_fence)

    def enqueue(self, commands: list[Command], *, lifting_fence: bool = False) -> asyncio.Future[list[Result]]:
        """`submit` without a coroutine: the refusals raised now, else the future of the results
        (a front's channel answers from its callback: no task per request)."""
        if self._failover.role != "primary":
            raise Unavailable(
                f"this ledger copy is {self._failover.role}, not the primary: write to the primary", code="not_primary"
            )
        if self._failover.fenced and not lifting_fence:
            raise self._failover.refusal()
        future: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        if self.halted is not None:  # per command, so a batch answers each action (edges do not retry it)
            future.set_result([self._halted_error()] * len(commands))
            return future
        if not self.ready:
            raise Unavailable("the ledger is not accepting writes", code="ledger_unavailable")
        queued = self._queued_commands
        if queued and queued + len(commands) > self.limits.queue_depth_max:  # alone, any job fits
            raise Unavailable("the ledger's write queue is full", code="ledger_unavailable")
        self._queue.put_nowait(_Job(commands, future, lifting_fence=lifting_fence))
        self._queued_commands = queued + len(commands)
        return future

    async def _run(self) -> None:
        inflight: deque[asyncio.Task[bool]] = deque()
        jobs: list[_Job] | None = []
        try:
            while True:
                await self._slot(inflight)
                jobs = await self._take()
                if jobs is None:
                    return
                if self.limits.group_commit and self.pipeline_depth == 1:
                    # Nothing overlaps a commit at depth 1: commit and answer here, without a task
                    # (and its scheduling) per group.
                    await self._finish(*await self._prepare(jobs, inflight))
                elif self.limits.group_commit:
                    inflight.append(await self._pipeline(jobs, inflight))
                else:  # the benchmark baseline: every command its own commit, nothing overlapped
                    for job in jobs:
                        partial: list[Result] = []  # results so far, one commit per command
                        for command in job.commands:
                            sub = _Job(
                                [command], asyncio.get_running_loop().create_future(), lifting_fence=job.lifting_fence
                            )
                            await (await self._pipeline([sub], inflight))
                            partial.append(sub.future.result()[0])
                        if not job.future.done():
                            job.future.set_result(partial)
        except Exception as e:  # noqa: BLE001 (a bug in the writer loop itself: fail-stop, never a silent death)
            self._halt(e, None)
            self._answer(jobs or [], self._halted_error())
            while not self._queue.empty():  # whoever waits is answered, not left hanging
                queued = self._queue.get_nowait()
                if queued is not None:
                    self._queued_commands -= len(queued.commands)
                    self._answer([queued], self._halted_error())
        finally:
            for task in inflight:
                await task

    async def _slot(self, inflight: deque[asyncio.Task[bool]]) -> None:
        """Wait until a group may be judged (fewer than `pipeline_depth` in flight) BEFORE taking
        one: jobs taken earlier would wait in a small group while later arrivals queue for the next."""
        while inflight and (len(inflight) >= self.pipeline_depth or inflight[0].done()):
            await inflight.popleft()

    async def _take(self) -> list[_Job] | None:
        """The next group of queued jobs (up to commit_batch_max commands); None once stopped.
        Derived rows the store holds behind the journal are written once nothing came for
        `derived_idle_flush_s`."""
        if self._queue.empty() and self.store.holds_derived():
            try:
                async with asyncio.timeout(self.limits.derived_idle_flush_s):
                    job = await self._queue.get()
            except TimeoutError:
                await self._flush_derived()
                job = await self._queue.get()
        else:
            job = await self._queue.get()
        if job is None:
            return None
        jobs, size = [job], len(job.commands)
        while size < self.limits.commit_batch_max and not self._queue.empty():
            nxt = self._queue.get_nowait()
            if nxt is None:
                self._queue.put_nowait(None)  # seen again, after this group
                break
            jobs.append(nxt)
            size += len(nxt.commands)
        self._queued_commands -= size
        return jobs

    async def _pipeline(self, jobs: list[_Job], inflight: deque[asyncio.Task[bool]]) -> asyncio.Task[bool]:
        """Judge a group against the overlay while the previous group may still be committing;
        the returned task commits it after its predecessor and then answers it."""
        return asyncio.create_task(self._finish(*await self._prepare(jobs, inflight)))

    async def _prepare(
        self, jobs: list[_Job], inflight: deque[asyncio.Task[bool]]
    ) -> tuple[asyncio.Task[bool] | None, list[_Job], _Judged | None]:
        """Judge a group (once a slot is free): the commit it must follow, its jobs, and what was
        judged (None: loading or judging failed, the group is answered with an error)."""
        await self._slot(inflight)
        if self._broken or self._overlay.rows.size() > self.limits.cache_rows_max:
            await self._settle(inflight)
        self._overlay.rows.forget_entries(self._overlay.committed.sequence)
        previous = inflight[-1] if inflight else None
        if previous is not None:
            # Judging is CPU-bound and may not need to await anything (every row cached or known
            # absent): yield once first, so the previous group's commit, ready to start, is sent
            # before this group is judged rather than after (docs/decisions/pipeline-depth-by-backend.md).
            await asyncio.sleep(0)
        commands = [c for j in jobs for c in j.commands]
        judged: _Judged | None = None
        if self.halted is None:
            try:
                judged = await self._judge(commands)
            except _JudgeFailed as e:  # a bug: every retry would hit it again
                self._halt(e.error, e.command)
            except Exception as e:  # noqa: BLE001  loading rows failed: the overlay may be half-filled
                log.error("ledger_judge_failed", error=repr(e), batch_size=len(commands))
                self._broken = True
        return previous, jobs, judged

    async def _settle(self, inflight: deque[asyncio.Task[bool]]) -> None:
        """Wait for every commit in flight, then restart the overlay from what storage holds."""
        while inflight:
            await inflight.popleft()
        try:
            # Also advances `commits`: a commit whose outcome was unknown may have landed, and long
            # polls waiting for it are due now.
            await self._overlay.reload()
        except Exception as e:  # noqa: BLE001  still broken: the next group fails and tries again
            log.error("ledger_head_reload_failed", error=repr(e))
            return
        self._broken = False

    async def _judge(self, commands: list[Command]) -> _Judged:
        ctx = Context(self._clock())  # first: the group's day names the report rows it is judged on
        try:
            await self._overlay.load(commands)  # a store error raises as is: 503, retryable
            await self._overlay.hold_report_units(commands, day_of(ctx.now_text))
        except PlanningFailed as e:  # planning is pure: a bug, not an outage
            raise _JudgeFailed(e.command, e.error) from e
        judged = _Judged(head=self._overlay.head)
        chain = _Chain(judged.head.sequence, judged.head.hash, judged.head.epoch)
        for cmd in commands:
            try:
                self._judge_one(cmd, ctx, judged, chain)
            except Exception as e:  # judging is pure: this is a bug, not an outage
                raise _JudgeFailed(cmd, e) from e
        try:
            judged.rows = self._overlay.take_dirty() if judged.journal else {}
        except Exception as e:
            raise _JudgeFailed(commands[-1], e) from e
        judged.head = self._overlay.head = Head(chain.sequence, chain.hash, chain.epoch)  # one per group
        return judged

    def _judge_one(self, cmd: Command, ctx: Context, judged: _Judged, chain: _Chain) -> None:
        state = self._overlay.rows
        try:
            outcome = decide(state, cmd, ctx)
        except Rejection as refusal:  # non-binding: not journaled
            e = as_error(refusal)
            judged.results.append(e)
            if e.code == "idempotency_key_reused" or e.code in LIMIT_REASONS:  # a settlement's limit refusal
                judged.counts.append(("conflict", e.code))
            return
        if isinstance(outcome, Replay):
            judged.replays += 1
            judged.results.append(status_and_body(outcome.answer, replayed=True))
            return
        tx, sequence = outcome.transaction, chain.sequence + 1
        entry, text = sealed(tx, outcome.postings, sequence=sequence, epoch=chain.epoch, prev_hash=chain.hash)
        judged.results.append(status_and_body(evolve(state, entry), replayed=False))
        judged.journal.append(JournalRow(sequence, tx["id"], text))
        chain.sequence, chain.hash = sequence, entry["hash"]
        judged.counts.append((tx["type"], tx["outcome"]))
        if tx["outcome"] == "rejected":
            judged.counts.append(("conflict", tx["code"]))

    def _halt(self, error: BaseException, command: Command | None) -> None:
        """Fail-stop: refuse every later write (500 ledger_halted) and say why, once."""
        self._broken = True
        if self.halted is None:
            self.halted = f"{type(error).__name__}: {error}"
        self.metrics.halted.set(1)
        self.metrics.invariant_failures_total.inc()
        log.critical(
            "ledger_halted",
            error=repr(error),
            head_sequence=self._overlay.committed.sequence,
            command_type=command.type if command else None,
            client_id=command.key[0] if command and command.key else None,
            id=command.key[1] if command and command.key else None,
            via=command.via if command else None,
            principal=command.principal if command else None,
            request=command.request if command else None,
        )

    def _halted_error(self) -> Halted:
        return Halted(
            f"the ledger halted on a broken invariant ({self.halted}); it takes no write until an "
            "operator restarts it: do not retry"
        )

    async def _finish(self, previous: asyncio.Task[bool] | None, jobs: list[_Job], judged: _Judged | None) -> bool:
        """Commit after the predecessor did (its effects are in this group's answers), then
        answer. If the predecessor or this commit failed, nothing here is acknowledged."""
        ok = judged is not None and (previous is None or await previous)
        if self._refuses(jobs):
            self._broken = True  # judged, never stored: the overlay is ahead of storage
            self._answer(jobs, self._failover.refusal())
            return False
        if ok and judged is not None and judged.journal:
            ok = await self._commit(judged)
        if (not ok or judged is None) and self.halted is not None:
            self._answer(jobs, self._halted_error())  # nothing of it was stored
            return False
        if not ok or judged is None:
            self._broken = True
            self.metrics.commit_failures_total.inc()
            self._answer(
                jobs, Unavailable("the ledger could not commit; retry with the same id", code="storage_unavailable")
            )
            return False
        self._overlay.committed = max(self._overlay.committed, judged.head, key=lambda h: h.sequence)
        self._overlay.commits.advance(self._overlay.committed.sequence)
        self._count(judged.counts, judged.replays)
        if self._refuses(jobs):  # fenced while this commit ran: stored, never acknowledged
            self._answer(jobs, self._failover.refusal())
        elif self.limits.synchronous_standby:
            task = asyncio.create_task(self._release(jobs, judged.results, judged.head.sequence))
            self._held.add(task)
            task.add_done_callback(self._held.discard)
        else:
            self._answer(jobs, judged.results)
        return True

    async def _commit(self, judged: _Judged) -> bool:
        started = time.perf_counter()
        try:
            await self.store.commit(judged.journal, judged.rows, judged.head)
        except (StorageError, OSError) as e:  # the backend failed: nothing of this group is acknowledged, retried
            log.error("ledger_commit_failed", error=repr(e), batch_size=len(judged.results))
            await self._observe_stored_head()
            return False
        except Exception as e:  # noqa: BLE001  a bug (a gap in the journal, rows that do not encode):
            # every retry of the group would hit it again, so it is not answered as retryable.
            self._halt(e, None)
            await self._observe_stored_head()
            return False
        self.metrics.commit_duration_seconds.observe(time.perf_counter() - started)
        self.metrics.commit_batch_size.observe(len(judged.results))
        return True

    async def _flush_derived(self) -> None:
        """Write the derived rows the store holds. A failure is a failed commit: counted, logged,
        and the store gives up what it held, which the next group's `_settle` folds again."""
        try:
            await self.store.flush_derived()
        except (StorageError, OSError) as e:
            log.error("ledger_commit_failed", error=repr(e), batch_size=0)
            self.metrics.commit_failures_total.inc()
            self._broken = True

    async def _observe_stored_head(self) -> None:
        """After a failed commit, whose outcome may be unknown (the connection died after COMMIT was
        sent): what the store holds is committed, and journal long polls must see it now, not at
        the next commit. The overlay is restarted by the next group (`_settle`)."""
        try:
            stored = await self.store.head()
        except Exception as e:  # noqa: BLE001 (any failure: the next group's `_settle` reloads it again)
            log.error("ledger_head_reload_failed", error=repr(e))
            return
        if stored.sequence > self._overlay.committed.sequence:
            log.warning("ledger_commit_outcome_landed", head_sequence=stored.sequence)
            self._overlay.committed = stored
            self._overlay.commits.advance(stored.sequence)

    async def _release(self, jobs: list[_Job], results: list[Result], sequence: int) -> None:
        """Synchronous standby: answer once some standby has applied up to `sequence` (which
        covers replays too: they answer for entries at or before the judged head)."""
        started = time.perf_counter()
        acked = await self._failover.acks.best.reach(sequence, self.limits.standby_ack_timeout_s)
        self.metrics.standby_ack_wait_seconds.observe(time.perf_counter() - started)
        if not acked:
            self.metrics.standby_ack_timeouts_total.inc()
            self._answer(
                jobs,
                Unavailable(
                    "no standby confirmed the commit in time; it is journaled here: retry with the same id",
                    code="standby_unavailable",
                ),
            )
        else:
            self._answer(jobs, self._failover.refusal() if self._refuses(jobs) else results)

    @staticmethod
    def _answer(jobs: list[_Job], results: list[Result] | CroupierError) -> None:
        start = 0
        for job in jobs:
            if not job.future.done():  # the caller may have gone away
                n = len(job.commands)
                job.future.set_result(
                    [results] * n if isinstance(results, CroupierError) else results[start : start + n]
                )
            start += len(job.commands)

    def _refuses(self, jobs: list[_Job]) -> bool:
        """A fenced primary stores and answers nothing but a group that only lifts its fence."""
        return self._failover.fenced and not all(job.lifting_fence for job in jobs)

    def _count(self, counts: list[tuple[str, str]], replays: int) -> None:
        m = self.metrics
        tally: dict[tuple[str, str], int] = {}
        for pair in counts:
            tally[pair] = tally.get(pair, 0) + 1
        for pair, n in tally.items():
            child = self._counters.get(pair)
            if child is None:  # a labelled child is looked up once, not once per group
                kind, label = pair
                child = (
                    m.conflicts_total.labels(label) if kind == "conflict" else m.transactions_total.labels(kind, label)
                )
                self._counters[pair] = child
            child.inc(n)
        if replays:
            m.idempotent_replays_total.inc(replays)
        m.journal_head_sequence.set(self._overlay.committed.sequence)
