"""The ledger service: one writer task with group commit, and reads of committed state.

The writer drains up to `commit_batch_max` queued commands (a group), loads the rows they need
into its overlay (a cache only it mutates, so load-then-write is serializable), runs
decide+evolve for each in order, and writes the journal rows and derived rows in ONE
transaction. Groups are pipelined: the next group is judged (against the overlay, which already
holds the previous group's effects) while the previous one commits; each group commits only after
its predecessor did, and is answered only after its own commit. A failed commit (or a failed load) fails
that group and every group judged on top of it with 503, and the overlay restarts from storage.

Fail-stop: judging is pure, so an exception there (an `InvariantBroken`, or any other bug) would
repeat on every retry. The writer halts instead: the failing command is logged, that group and
every later write are answered 500 `ledger_halted` (not retryable), /readyz turns red and
`ledger_halted` is 1 until an operator restarts the ledger.

Failover: a primary fenced by a higher epoch (`fence`, called only on verified evidence: see
core_ledger/fencing.py) answers every write 503 `not_primary`, even one whose commit was under way,
until an operator lifts the fence (`unfence`, itself journaled). With `synchronous_standby`, a
committed group's answers are held until a standby acknowledged its last sequence; past
`standby_ack_timeout_s` they are 503 `standby_unavailable` instead (the entries stay journaled: a
retry with the same id replays them, and that replay too waits for a standby).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import structlog

from shared.errors import Conflict, CroupierError, Halted, Unavailable

from core_ledger.domain import (
    GENESIS_HASH,
    PASSES_MAX,
    PLANNED_FROM,
    ChainCheck,
    Command,
    Context,
    InvariantBroken,
    Rejection,
    Replay,
    State,
    decide,
    entry_text,
    evolve,
    rows_needed,
    seal,
)
from core_ledger.metrics import LedgerMetrics
from core_ledger.rejections import as_error
from core_ledger.replication import Acks, Watermark
from core_ledger.store import Head, JournalRow, Store

log = structlog.get_logger("croupier.ledger")

Answer = tuple[int, dict]
Result = Answer | CroupierError


class ReplicationError(Exception):
    def __init__(self, detail: str, first_bad_sequence: int | None) -> None:
        super().__init__(detail)
        self.first_bad_sequence = first_bad_sequence


class _JudgeFailed(Exception):
    """Judging one command raised: a bug (judging is pure), so the writer halts."""

    def __init__(self, command: Command, error: BaseException) -> None:
        super().__init__(repr(error))
        self.command = command
        self.error = error


def command_of(entry: dict) -> Command:
    """The command an entry was decided from: names the rows its `evolve` touches."""
    tx = entry["transaction"]
    key = (tx["client_id"], tx["id"]) if tx["id"] is not None else None
    return Command(tx["type"], tx["request"], tx["principal"], key, tx["via"])


@dataclass(frozen=True)
class WriterLimits:
    group_commit: bool = True
    commit_batch_max: int = 256
    queue_depth_max: int = 10_000
    cache_rows_max: int = 200_000  # the overlay is dropped (and reloaded lazily) beyond this
    synchronous_standby: bool = False  # answer a commit only once a standby has applied it
    standby_ack_timeout_s: float = 2.0  # then 503 standby_unavailable (retry with the same id)


PIPELINE_DEPTH = 2  # groups judged but not yet committed: one committing, one waiting behind it


@dataclass
class _Job:
    commands: list[Command]
    future: asyncio.Future[list[Result]]
    partial: list[Result] = field(default_factory=list)  # results so far, one commit per command
    lifting_fence: bool = False  # the journaled unfence: the one write a fenced primary takes


@dataclass
class _Judged:
    """A group decided against the overlay, waiting for its commit."""

    head: Head
    results: list[Result] = field(default_factory=list)
    journal: list[JournalRow] = field(default_factory=list)
    rows: dict = field(default_factory=dict)
    counts: list[tuple[str, str]] = field(default_factory=list)
    replays: int = 0


class LedgerService:
    def __init__(self, store: Store, limits: WriterLimits, *, clock: Callable[[], datetime],
                 metrics: LedgerMetrics, standby: bool = False) -> None:
        self.store = store
        self.role = "standby" if standby else "primary"
        self.limits = limits
        self._clock = clock
        self.metrics = metrics
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue(maxsize=limits.queue_depth_max)
        self._cache = State(complete=False)
        self._head = Head()  # of the last judged entry (the overlay's view)
        self._committed = Head()  # of the last durably committed entry (what readers see)
        self._broken = False  # a judge or commit failed: restart the overlay from storage
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
        self.fenced_by = 0  # the higher epoch that fenced this primary (0: not fenced)
        self.halted: str | None = None  # why the writer stopped taking writes (fail-stop); None: it did not
        # Test-only fault point: seconds a standby apply pauses before its commit (chaos runs).
        self.apply_fault_delay: Callable[[], float] = lambda: 0.0
        self.commits = Watermark()  # the committed head sequence (journal long polls wait on it)
        self._acked_floor = 0  # entries acknowledged before this process (or this copy) was primary
        self.acks = Acks()  # what standbys have applied (synchronous answers wait on it)
        self._held: set[asyncio.Task[None]] = set()  # committed answers waiting for a standby
        self._head_stale = False  # standby: an apply failed or was cut, reload the head before the next
        self._promoting = asyncio.Lock()

    @property
    def head(self) -> Head:
        return self._committed

    @property
    def queue_depth(self) -> int:
        """Jobs queued for the writer and not yet taken into a group."""
        return self._queue.qsize()

    @property
    def epoch(self) -> int:
        return self._head.epoch

    @property
    def acknowledged_sequence(self) -> int:
        """The highest sequence whose answer may have gone out as a success: with a synchronous
        standby, what some standby confirmed (never more than committed); else every commit."""
        if self.limits.synchronous_standby:
            return max(self._acked_floor, min(self.acks.best.value, self._committed.sequence))
        return self._committed.sequence

    @property
    def fenced(self) -> bool:
        """A fence holds against a primary of a lower epoch only: once this copy is promoted above
        it (promotion raises the epoch past every fence it heard of), the fence is history. On a
        standby the stored fence is only the highest epoch it heard of (see `heard_of_epoch`)."""
        return self.role == "primary" and self.fenced_by > self._head.epoch

    @property
    def ready(self) -> bool:
        return self._accepting and self._task is not None and not self._task.done() and self.halted is None

    async def start(self) -> None:
        await self.store.open()
        plan = self.store.schema_plan
        self.metrics.store_schema_version.set(plan.target if plan is not None else 0)
        self._head = self._committed = await self.store.head()
        # What this copy holds at start may all have been answered before (by it, before a restart):
        # it counts as acknowledged, so no standby that holds less is ever promoted over it.
        self._acked_floor = self._head.sequence
        self.fenced_by = await self.store.fenced_by()
        self.commits.advance(self._head.sequence)
        self._observe_role()
        self._task = asyncio.create_task(self._run(), name="ledger-writer")
        self._accepting = True

    async def stop(self) -> None:
        """Refuse new work, let the writer finish everything queued, close the store."""
        self._accepting = False
        if self._task is not None:
            if not self._task.done():
                await self._queue.put(None)
            await self._task
            self._task = None
        while self._held:  # each waits at most standby_ack_timeout_s
            await asyncio.gather(*self._held, return_exceptions=True)
        await self.store.close()

    async def submit(self, commands: list[Command], *, lifting_fence: bool = False) -> list[Result]:
        """Queue commands as one group; their results in order, once committed. Only `unfence`
        passes `lifting_fence` (a fenced primary takes that group, and only when it is alone)."""
        if self.role != "primary":
            raise Unavailable("this ledger is a standby: write to the primary", code="not_primary")
        if self.fenced and not lifting_fence:
            raise self._refusal()
        if self.halted is not None:  # per command, so a batch answers each action (edges do not retry it)
            return [self._halted_error()] * len(commands)
        if not self.ready:
            raise Unavailable("the ledger is not accepting writes", code="ledger_unavailable")
        future: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Job(commands, future, lifting_fence=lifting_fence))
        except asyncio.QueueFull:
            raise Unavailable("the ledger's write queue is full", code="ledger_unavailable") from None
        return await future

    async def _run(self) -> None:
        inflight: deque[asyncio.Task[bool]] = deque()
        jobs: list[_Job] | None = []
        try:
            while True:
                jobs = await self._take()
                if jobs is None:
                    return
                if self.limits.group_commit:
                    inflight.append(await self._pipeline(jobs, inflight))
                else:  # the benchmark baseline: every command its own commit, nothing overlapped
                    for job in jobs:
                        for command in job.commands:
                            sub = _Job([command], asyncio.get_running_loop().create_future(),
                                       lifting_fence=job.lifting_fence)
                            await (await self._pipeline([sub], inflight))
                            job.partial.append(sub.future.result()[0])
                        if not job.future.done():
                            job.future.set_result(job.partial)
        except Exception as e:  # noqa: BLE001 (a bug in the writer loop itself: fail-stop, never a silent death)
            self._halt(e, None)
            self._answer(jobs or [], self._halted_error())
            while not self._queue.empty():  # whoever waits is answered, not left hanging
                queued = self._queue.get_nowait()
                if queued is not None:
                    self._answer([queued], self._halted_error())
        finally:
            for task in inflight:
                await task

    async def _take(self) -> list[_Job] | None:
        """The next group of queued jobs (up to commit_batch_max commands); None once stopped."""
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
        return jobs

    async def _pipeline(self, jobs: list[_Job], inflight: deque[asyncio.Task[bool]]) -> asyncio.Task[bool]:
        """Judge a group against the overlay while the previous group may still be committing;
        the returned task commits it after its predecessor and then answers it."""
        while inflight and (len(inflight) >= PIPELINE_DEPTH or inflight[0].done()):
            await inflight.popleft()
        if self._broken or self._cache.size() > self.limits.cache_rows_max:
            await self._settle(inflight)
        self._cache.forget_entries(self._committed.sequence)
        previous = inflight[-1] if inflight else None
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
        return asyncio.create_task(self._finish(previous, jobs, judged))

    async def _settle(self, inflight: deque[asyncio.Task[bool]]) -> None:
        """Wait for every commit in flight, then restart the overlay from what storage holds."""
        while inflight:
            await inflight.popleft()
        self._cache = State(complete=False)
        try:
            self._head = self._committed = await self.store.head()
            self._broken = False
        except Exception as e:  # noqa: BLE001  still broken: the next group fails and tries again
            log.error("ledger_head_reload_failed", error=repr(e))
            return
        # A commit whose outcome was unknown may have landed: long polls waiting for it are due now.
        self.commits.advance(self._committed.sequence)

    async def _judge(self, commands: list[Command]) -> _Judged:
        await self._load(commands)
        ctx = Context(self._clock())
        judged = _Judged(head=self._head)
        for cmd in commands:
            try:
                self._judge_one(cmd, ctx, judged)
            except Exception as e:  # judging is pure: this is a bug, not an outage
                raise _JudgeFailed(cmd, e) from e
        try:
            judged.rows = self._cache.take_dirty() if judged.journal else {}
        except Exception as e:
            raise _JudgeFailed(commands[-1], e) from e
        self._head = judged.head
        return judged

    def _judge_one(self, cmd: Command, ctx: Context, judged: _Judged) -> None:
        try:
            outcome = decide(self._cache, cmd, ctx)
        except Rejection as refusal:  # non-binding: not journaled
            e = as_error(refusal)
            judged.results.append(e)
            if e.code == "idempotency_key_reused":
                judged.counts.append(("conflict", e.code))
            return
        if isinstance(outcome, Replay):
            judged.replays += 1
            judged.results.append((outcome.status, outcome.body))
            return
        head = judged.head
        entry = seal(outcome.transaction, outcome.postings, sequence=head.sequence + 1,
                     epoch=head.epoch, prev_hash=head.hash)
        judged.results.append(evolve(self._cache, entry))
        judged.journal.append(JournalRow(entry["sequence"], entry["transaction"]["id"], entry_text(entry)))
        judged.head = Head(entry["sequence"], entry["hash"], head.epoch)
        tx = entry["transaction"]
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
        log.critical("ledger_halted", error=repr(error), head_sequence=self._committed.sequence,
                     command_type=command.type if command else None,
                     client_id=command.key[0] if command and command.key else None,
                     id=command.key[1] if command and command.key else None,
                     via=command.via if command else None, principal=command.principal if command else None,
                     request=command.request if command else None)

    def _halted_error(self) -> Halted:
        return Halted(f"the ledger halted on a broken invariant ({self.halted}); it takes no write until an "
                      "operator restarts it: do not retry")

    async def _finish(self, previous: asyncio.Task[bool] | None, jobs: list[_Job], judged: _Judged | None) -> bool:
        """Commit after the predecessor did (its effects are in this group's answers), then
        answer. If the predecessor or this commit failed, nothing here is acknowledged."""
        ok = judged is not None and (previous is None or await previous)
        if self._refuses(jobs):
            self._broken = True  # judged, never stored: the overlay is ahead of storage
            self._answer(jobs, self._refusal())
            return False
        if ok and judged is not None and judged.journal:
            ok = await self._commit(judged)
        if (not ok or judged is None) and self.halted is not None:
            self._answer(jobs, self._halted_error())  # nothing of it was stored
            return False
        if not ok or judged is None:
            self._broken = True
            self.metrics.commit_failures_total.inc()
            self._answer(jobs, Unavailable("the ledger could not commit; retry with the same id",
                                           code="storage_unavailable"))
            return False
        self._committed = max(self._committed, judged.head, key=lambda h: h.sequence)
        self.commits.advance(self._committed.sequence)
        self._count(judged.counts, judged.replays)
        if self._refuses(jobs):  # fenced while this commit ran: stored, never acknowledged
            self._answer(jobs, self._refusal())
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
        except InvariantBroken as e:  # the store refused a gap in the journal: a writer bug
            self._halt(e, None)
            return False
        except Exception as e:  # noqa: BLE001  storage failure: nothing of this group is acknowledged
            log.error("ledger_commit_failed", error=repr(e), batch_size=len(judged.results))
            await self._observe_stored_head()
            return False
        self.metrics.commit_duration_seconds.observe(time.perf_counter() - started)
        self.metrics.commit_batch_size.observe(len(judged.results))
        return True

    async def _observe_stored_head(self) -> None:
        """After a failed commit, whose outcome may be unknown (the connection died after COMMIT was
        sent): what the store holds is committed, and journal long polls must see it now, not at
        the next commit. The overlay is restarted by the next group (`_settle`)."""
        try:
            stored = await self.store.head()
        except Exception as e:  # noqa: BLE001 (any failure: the next group's `_settle` reloads it again)
            log.error("ledger_head_reload_failed", error=repr(e))
            return
        if stored.sequence > self._committed.sequence:
            log.warning("ledger_commit_outcome_landed", head_sequence=stored.sequence)
            self._committed = stored
            self.commits.advance(stored.sequence)

    async def _release(self, jobs: list[_Job], results: list[Result], sequence: int) -> None:
        """Synchronous standby: answer once some standby has applied up to `sequence` (which
        covers replays too: they answer for entries at or before the judged head)."""
        started = time.perf_counter()
        acked = await self.acks.best.reach(sequence, self.limits.standby_ack_timeout_s)
        self.metrics.standby_ack_wait_seconds.observe(time.perf_counter() - started)
        if not acked:
            self.metrics.standby_ack_timeouts_total.inc()
            self._answer(jobs, Unavailable("no standby confirmed the commit in time; it is journaled here: "
                                           "retry with the same id", code="standby_unavailable"))
        else:
            self._answer(jobs, self._refusal() if self._refuses(jobs) else results)

    @staticmethod
    def _answer(jobs: list[_Job], results: list[Result] | CroupierError) -> None:
        start = 0
        for job in jobs:
            if not job.future.done():  # the caller may have gone away
                n = len(job.commands)
                job.future.set_result([results] * n if isinstance(results, CroupierError)
                                      else results[start:start + n])
            start += len(job.commands)

    def _refuses(self, jobs: list[_Job]) -> bool:
        """A fenced primary stores and answers nothing but a group that only lifts its fence."""
        return self.fenced and not all(job.lifting_fence for job in jobs)

    def _refusal(self) -> Unavailable:
        return Unavailable(f"this ledger was fenced by epoch {self.fenced_by}: write to the current primary",
                           code="not_primary")

    async def fence(self, epoch: int, evidence: dict[str, Any]) -> bool:
        """Verified evidence (a configured peer announced it) that a ledger of `epoch` exists: if
        that is above ours, this primary is fenced at once (in memory, before any other answer) and
        durably (it survives a restart). True when this call fenced it. Never call this with an
        epoch a caller merely claimed."""
        if self.role != "primary" or epoch <= self._head.epoch:
            return False
        fenced_now = epoch > self.fenced_by
        if fenced_now:
            self.fenced_by = epoch
            self._observe_role()
            log.warning("ledger_fenced", own_epoch=self._head.epoch, fenced_by_epoch=epoch, evidence=evidence)
        await self.store.fence(self.fenced_by)  # again on every proof: a failed store write is retried
        return fenced_now

    async def heard_of_epoch(self, epoch: int) -> None:
        """Standby: its primary announced `epoch`. Kept durably (as the store's fence record) so a
        later promotion goes above it even when no entry of that epoch reached this copy yet: a
        primary promoted to epoch E that has journaled nothing since, then fails, must never see
        this copy promoted to E as well (two copies writing under one epoch)."""
        if self.role != "standby" or epoch <= max(self._head.epoch, self.fenced_by):
            return
        await self.store.fence(epoch)
        self.fenced_by = epoch
        log.info("ledger_heard_of_epoch", epoch=epoch, own_epoch=self._head.epoch)

    async def unfence(self, command: Command, lifted: int) -> Result:
        """Journal `command` (an `unfence`: who, why, the evidence), then clear the durable fence of
        epoch `lifted`. A higher fence that arrived meanwhile stays in force."""
        [result] = await self.submit([command], lifting_fence=True)
        if isinstance(result, CroupierError):
            return result
        remaining = await self.store.unfence(lifted)
        if self.fenced_by <= lifted:
            self.fenced_by = remaining
        self._observe_role()
        log.warning("ledger_unfenced", lifted_epoch=lifted, still_fenced_by=self.fenced_by or None,
                    principal=command.principal, forced=command.request.get("force"))
        return result

    async def acknowledge(self, name: str, sequence: int, claimed_hash: str, now: float) -> None:
        """A standby polled after `sequence`, proving with `claimed_hash` (its entry's hash there)
        that it holds this ledger's chain up to it: only then has it durably applied everything up
        to `sequence`. A hash that differs, or a sequence this ledger never stored, means its copy
        diverged: `Conflict` `replica_diverged`, nothing recorded."""
        own = await self._hash_at(sequence)
        if own != claimed_hash:
            self.metrics.standby_divergences_total.inc()
            log.error("standby_diverged", standby=name, sequence=sequence, head_sequence=self._committed.sequence,
                      held_here=own is not None)
            raise Conflict(f"the standby's entry {sequence} is not this ledger's "
                           f"({'another hash' if own is not None else 'no such entry here'}): "
                           "its copy diverged and must be rebuilt from this primary",
                           code="replica_diverged", sequence=sequence)
        self.acks.record(name, sequence, now)
        self.metrics.standby_acked_sequence.set(self.acks.best.value)

    async def _hash_at(self, sequence: int) -> str | None:
        """The hash of this ledger's stored entry at `sequence` (the genesis hash at 0); None if absent."""
        if sequence == 0:
            return GENESIS_HASH
        if sequence == self._committed.sequence:
            return self._committed.hash
        rows = await self.store.journal(sequence - 1, 1)
        if not rows or rows[0][0] != sequence:
            return None
        return str(orjson.loads(rows[0][1])["hash"])

    def _observe_role(self) -> None:
        self.metrics.epoch.set(self._head.epoch)
        self.metrics.fenced.set(1 if self.fenced else 0)

    def _count(self, counts: list[tuple[str, str]], replays: int) -> None:
        m = self.metrics
        for (kind, label), n in Counter(counts).items():
            if kind == "conflict":
                m.conflicts_total.labels(label).inc(n)
            else:
                m.transactions_total.labels(kind, label).inc(n)
        if replays:
            m.idempotent_replays_total.inc(replays)
        m.journal_head_sequence.set(self._committed.sequence)

    async def apply_replicated(self, rows: list[tuple[int, str]]) -> None:
        """Standby: verify (sequence, text) journal rows against the local head and apply them with
        the same `evolve`, in one commit. Raises `ReplicationError` on a broken chain."""
        if self.role != "standby":
            raise InvariantBroken("only a standby applies another ledger's journal")
        if self._head_stale:  # a previous apply failed or was cut: start from what is stored
            await self._reload_head()
        check = ChainCheck(head_sequence=self._head.sequence, head_hash=self._head.hash)
        if not check.feed(rows):
            raise ReplicationError(f"the primary's journal does not verify at {check.first_bad_sequence}",
                                   check.first_bad_sequence)
        entries = [orjson.loads(text) for _, text in rows]
        try:
            await self._load([command_of(e) for e in entries])
            journal = []
            for entry in entries:
                evolve(self._cache, entry)
                journal.append(JournalRow(entry["sequence"], entry["transaction"]["id"], entry_text(entry)))
            head = Head(entries[-1]["sequence"], entries[-1]["hash"], entries[-1]["epoch"])
            if (delay := self.apply_fault_delay()) > 0:  # test-only fault point: off unless configured
                await asyncio.sleep(delay)
            await self.store.commit(journal, self._cache.take_dirty(), head)
        except BaseException:  # cancelled too: the commit may still land (or have landed)
            self._head_stale = True
            self._cache = State(complete=False)  # the overlay may hold half-applied rows
            with contextlib.suppress(Exception):
                await self._reload_head()
            raise
        self._cache.forget_entries(head.sequence)
        self._head = self._committed = head
        self.commits.advance(head.sequence)
        self._observe_role()
        self.metrics.journal_head_sequence.set(head.sequence)

    async def _reload_head(self) -> None:
        """Standby: the head (and an empty overlay) from what the store holds. On SQLite a read
        queues behind a commit still running on the writer connection, so it sees its outcome."""
        self._cache = State(complete=False)
        stored = await self.store.head()
        self._head = self._committed = stored
        self._head_stale = False
        self.commits.advance(stored.sequence)
        self.metrics.journal_head_sequence.set(stored.sequence)

    async def promote(self) -> Head:
        """Standby → primary: raise the epoch (stored durably) so every later entry carries it.
        The caller has stopped the tailer, so nothing else mutates the store. The head is read
        back from the store first: the new primary extends exactly what is stored."""
        async with self._promoting:  # two promote calls at once raise the epoch once
            if self.role == "standby":
                await self._reload_head()
                # Above every epoch this copy has heard of, so no two primaries ever share one.
                head = Head(self._head.sequence, self._head.hash, max(self._head.epoch, self.fenced_by) + 1)
                await self.store.commit([], {}, head)
                self._head = self._committed = head
                self._acked_floor = head.sequence  # the old primary may have acknowledged all it gave us
                self.role = "primary"
                self._observe_role()
                log.warning("ledger_promoted", epoch=head.epoch, head_sequence=head.sequence)
        return self._head

    async def _load(self, commands: list[Command]) -> None:
        """Bring every row the commands need into the overlay, a few IN-queries per pass. A command
        is planned again only if a row it may plan from was just found (`PLANNED_FROM`)."""
        cache, pending = self._cache, commands
        for _ in range(PASSES_MAX):
            missing: dict[str, dict[tuple, None]] = {}
            watched: list[tuple[Command, list[tuple[str, tuple]]]] = []
            for cmd in pending:
                unknown = [(t, k) for t, k in rows_needed(cache, cmd) if not cache.known(t, k)]
                for table, key in unknown:
                    missing.setdefault(table, {})[key] = None
                if unknown:
                    watched.append((cmd, [(t, k) for t, k in unknown if t in PLANNED_FROM]))
            if not missing:
                return
            found = await self.store.load({table: list(keys) for table, keys in missing.items()})
            for table, keys in missing.items():
                rows = found.get(table, {})
                for key in keys:
                    cache.fill(table, key, rows.get(key))
            pending = [cmd for cmd, keys in watched if any(cache.peek(t, k) is not None for t, k in keys)]
