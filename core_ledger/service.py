"""The ledger service: one writer task with group commit, and reads of committed state.

The writer drains up to `commit_batch_max` queued commands, loads the rows they need into its
overlay (a cache it alone mutates, so load-then-write is serializable), runs decide+evolve for
each in order, writes journal rows and derived rows in ONE transaction, commits, and only then
answers. A failed commit answers every command of the batch 503 and drops the overlay.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import orjson
import structlog

from shared.errors import CroupierError, Unavailable

from core_ledger.domain import (
    PASSES_MAX, ChainCheck, Command, Context, Replay, State, decide, entry_text, evolve, rows_needed, seal,
)
from core_ledger.metrics import LedgerMetrics
from core_ledger.store import Head, JournalRow, Store

log = structlog.get_logger("croupier.ledger")

Answer = tuple[int, dict]
Result = Answer | CroupierError


class ReplicationError(Exception):
    def __init__(self, detail: str, first_bad_sequence: int | None) -> None:
        super().__init__(detail)
        self.first_bad_sequence = first_bad_sequence


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


@dataclass
class _Job:
    commands: list[Command]
    future: asyncio.Future[list[Result]]


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
        self._head = Head()
        self._task: asyncio.Task[None] | None = None
        self._accepting = False

    @property
    def head(self) -> Head:
        return self._head

    @property
    def ready(self) -> bool:
        return self._accepting and self._task is not None and not self._task.done()

    async def start(self) -> None:
        await self.store.open()
        self._head = await self.store.head()
        self.metrics.journal_head_sequence.set(self._head.sequence)
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
        await self.store.close()

    async def submit(self, commands: list[Command]) -> list[Result]:
        """Queue commands as one group; their results in order, once committed."""
        if self.role != "primary":
            raise Unavailable("this ledger is a standby: write to the primary", code="not_primary")
        if not self.ready:
            raise Unavailable("the ledger is not accepting writes", code="ledger_unavailable")
        future: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Job(commands, future))
        except asyncio.QueueFull:
            raise Unavailable("the ledger's write queue is full", code="ledger_unavailable") from None
        return await future

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            job = await self._queue.get()
            if job is None:
                break
            jobs, size = [job], len(job.commands)
            while size < self.limits.commit_batch_max and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                jobs.append(nxt)
                size += len(nxt.commands)
            await self._serve(jobs)

    async def _serve(self, jobs: list[_Job]) -> None:
        commands = [c for j in jobs for c in j.commands]
        if self.limits.group_commit:
            results = await self._execute(commands)
        else:
            results = [r for c in commands for r in await self._execute([c])]
        start = 0
        for job in jobs:
            if not job.future.done():  # the caller may have gone away
                job.future.set_result(results[start:start + len(job.commands)])
            start += len(job.commands)

    async def _execute(self, commands: list[Command]) -> list[Result]:
        try:
            return await self._judge_and_commit(commands)
        except Exception as e:  # storage failure or a broken invariant: nothing is acknowledged
            self.metrics.commit_failures_total.inc()
            log.error("ledger_batch_failed", error=repr(e), batch_size=len(commands))
            self._cache = State(complete=False)
            try:
                self._head = await self.store.head()
            except Exception as again:
                log.error("ledger_head_reload_failed", error=repr(again))
            failure = Unavailable("the ledger could not commit; retry with the same id",
                                  code="storage_unavailable")
            return [failure] * len(commands)

    async def _judge_and_commit(self, commands: list[Command]) -> list[Result]:
        await self._load(commands)
        ctx = Context(self._clock())
        head, journal, results, counts = self._head, [], [], []
        replays = 0
        for cmd in commands:
            try:
                outcome = decide(self._cache, cmd, ctx)
            except CroupierError as e:  # non-binding: not journaled
                results.append(e)
                if e.code == "idempotency_key_reused":
                    counts.append(("conflict", e.code))
                continue
            if isinstance(outcome, Replay):
                replays += 1
                results.append((outcome.status, outcome.body))
                continue
            entry = seal(outcome.transaction, outcome.postings, sequence=head.sequence + 1,
                         epoch=head.epoch, prev_hash=head.hash)
            results.append(evolve(self._cache, entry))
            journal.append(JournalRow(entry["sequence"], entry["transaction"]["id"], entry_text(entry)))
            head = Head(entry["sequence"], entry["hash"], head.epoch)
            tx = entry["transaction"]
            counts.append((tx["type"], tx["outcome"]))
            if tx["outcome"] == "rejected":
                counts.append(("conflict", tx["code"]))
        if journal:
            started = time.perf_counter()
            await self.store.commit(journal, self._cache.take_dirty(), head)
            self.metrics.commit_duration_seconds.observe(time.perf_counter() - started)
            self.metrics.commit_batch_size.observe(len(commands))
        self._head = head
        self._cache.forget_entries()
        self._count(counts, replays)
        if self._cache.size() > self.limits.cache_rows_max:
            self._cache = State(complete=False)
        return results

    def _count(self, counts: list[tuple[str, str]], replays: int) -> None:
        m = self.metrics
        for kind, label in counts:
            if kind == "conflict":
                m.conflicts_total.labels(label).inc()
            else:
                m.transactions_total.labels(kind, label).inc()
        if replays:
            m.idempotent_replays_total.inc(replays)
        m.journal_head_sequence.set(self._head.sequence)

    async def apply_replicated(self, rows: list[tuple[int, str]]) -> None:
        """Standby: verify (sequence, text) journal rows against the local head and apply them with
        the same `evolve`, in one commit. Raises `ReplicationError` on a broken chain."""
        assert self.role == "standby", "only a standby applies another ledger's journal"
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
            await self.store.commit(journal, self._cache.take_dirty(), head)
        except Exception:
            self._cache = State(complete=False)  # the overlay may hold half-applied rows
            raise
        self._cache.forget_entries()
        self._head = head
        self.metrics.journal_head_sequence.set(head.sequence)

    async def promote(self) -> Head:
        """Standby → primary: raise the epoch (stored durably) so every later entry carries it.
        The caller has stopped the tailer, so nothing else mutates the store."""
        if self.role == "standby":
            head = Head(self._head.sequence, self._head.hash, self._head.epoch + 1)
            await self.store.commit([], {}, head)
            self._head, self.role = head, "primary"
            log.warning("ledger_promoted", epoch=head.epoch, head_sequence=head.sequence)
        return self._head

    async def _load(self, commands: list[Command]) -> None:
        """Bring every row the commands need into the overlay, a few IN-queries per pass."""
        for _ in range(PASSES_MAX):
            missing: dict[str, dict[tuple, None]] = {}
            for cmd in commands:
                for table, key in rows_needed(self._cache, cmd):
                    if not self._cache.known(table, key):
                        missing.setdefault(table, {})[key] = None
            if not missing:
                return
            found = await self.store.load({table: list(keys) for table, keys in missing.items()})
            for table, keys in missing.items():
                rows = found.get(table, {})
                for key in keys:
                    self._cache.fill(table, key, rows.get(key))
