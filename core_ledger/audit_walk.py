"""Whole-journal chain walks in a child process at the lowest CPU priority (`ChildWalk`), so that a
serving ledger's periodic whole walk (the first after start-up, then one in `AUDIT_FULL_EVERY`)
takes no time from its event loop: the operating system's scheduler gives the walk only the CPU
that serving leaves. See docs/decisions/whole-audits-in-a-low-priority-process.md.

The parent (`ChildWalk.walk`) runs `python -m core_ledger.audit_walk` and writes one JSON line to
its standard input: where the store is (`Store.child_location`: a DSN may hold a password, so it
never goes on the command line, where any local user's `ps` reads it) and the sequence to walk up
to. The child (`main`) lowers its priority (`lowest_priority`), opens that store without migrating or
creating anything, walks it with the same `verify_store` the offline `croupier ledger verify`
runs, and prints its report as one JSON line. The parent keeps the child's standard input open for
as long as it waits: a child whose parent died sees it close and exits.

What the child prints is checked before it is believed (`WalkReport`); a child that exits
without a valid report, or says more than `OUTPUT_MAX_BYTES`, is a failed walk (`AuditWalkFailed`:
the auditor counts it and tries again), never a verdict on the chain. A walk that is cancelled
(the ledger stopping) kills its child.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import orjson
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core_ledger.store import Store

log = structlog.get_logger("croupier.audit")

CHILD_NICENESS = 19  # the lowest nice value; on Linux the child also takes the SCHED_IDLE policy
# Shorter journals are walked in the parent (paced): starting a child costs about 0.3 s of CPU,
# what checking some 15,000 entries there does.
CHILD_WALK_MIN_ENTRIES = 20_000
OUTPUT_MAX_BYTES = 64 * 1024  # a report is a few hundred bytes; standard error is kept to this too
WALK_CACHE_MIB = 16  # the child's SQLite page cache: a walk reads each journal page once
EXIT_CANNOT_OPEN = 2  # the store could not be opened (the message is on standard error)
EXIT_ORPHANED = 3  # standard input closed before the walk ended: the parent is gone
EXIT_PRIORITY_REFUSED = 4  # the system refused to lower its priority (a syscall filter): it walked nothing


class AuditWalkFailed(Exception):
    """The child gave no valid report (it crashed, could not open the store, or printed something
    else): the walk did not happen, which says nothing about the chain."""


class PriorityRefused(AuditWalkFailed):
    """The child could not lower its priority (a sandbox's syscall filter refused `setpriority`) and
    walked nothing: a walk at normal priority would compete with serving for a whole core."""


class WalkRequest(BaseModel):
    """The line the parent writes to the child's standard input."""

    model_config = ConfigDict(extra="forbid", strict=True)
    backend: Literal["sqlite", "postgres"]
    location: str = Field(min_length=1)  # the SQLite file, or the PostgreSQL DSN
    postgres_schema: str = "public"
    up_to_sequence: int = Field(ge=0)


class WalkReport(BaseModel):
    """The line the child prints: `verify_store`'s report and the priority it ran at."""

    model_config = ConfigDict(extra="forbid", strict=True)
    ok: bool
    entries_checked: int = Field(ge=0)
    head_sequence: int = Field(ge=0)
    head_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    first_bad_sequence: int | None = Field(default=None, ge=1)
    niceness: int
    sched_idle: bool  # Linux's SCHED_IDLE policy: it runs only where no other task wants the CPU

    def is_whole_walk_to(self, up_to_sequence: int) -> bool:
        """Whether this says what a walk from the first entry says: every entry up to its head
        checked, and when broken, the entry after that head named. A head beyond the walk's end
        would start the next incremental audit after entries nobody checked."""
        if self.head_sequence > up_to_sequence or self.entries_checked != self.head_sequence:
            return False
        if self.ok and self.head_sequence != up_to_sequence:  # a whole walk that passed reached it
            return False
        return self.first_bad_sequence == (None if self.ok else self.head_sequence + 1)


class ChildWalk:
    """Whole walks of one store in a child process, for journals of at least `min_entries`;
    `command` is the child's argv (tests swap it for a child that misbehaves)."""

    def __init__(
        self,
        location: dict[str, str],
        command: Sequence[str] | None = None,
        *,
        min_entries: int = CHILD_WALK_MIN_ENTRIES,
    ) -> None:
        self.location = location
        self.command = list(command or [sys.executable, "-m", "core_ledger.audit_walk"])
        self.min_entries = min_entries

    @classmethod
    def of(cls, store: Store) -> ChildWalk | None:
        """Whole walks of `store` in a child; None when no other process can open it."""
        location = store.child_location()
        return None if location is None else cls(location)

    async def walk(self, up_to_sequence: int) -> dict[str, Any]:
        request = WalkRequest.model_validate({**self.location, "up_to_sequence": up_to_sequence})
        started = time.perf_counter()
        child = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        log.info("audit_walk_started", pid=child.pid, up_to_sequence=up_to_sequence)
        assert child.stdin is not None and child.stdout is not None and child.stderr is not None  # all PIPE
        try:
            child.stdin.write(request.model_dump_json().encode() + b"\n")
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it died: its status says why
                await child.stdin.drain()
            out, err = await asyncio.gather(_read_bounded(child.stdout), _read_bounded(child.stderr))
            returncode = await child.wait()
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
            child.stdin.close()
        report = _report_of(out, returncode, err, up_to_sequence)
        log.info(
            "audit_walk_finished",
            pid=child.pid,
            ok=report["ok"],
            entries_checked=report["entries_checked"],
            niceness=report["niceness"],
            sched_idle=report["sched_idle"],
            seconds=round(time.perf_counter() - started, 3),
        )
        return report


async def _read_bounded(stream: asyncio.StreamReader) -> bytes:
    """Everything up to the end of the stream; AuditWalkFailed beyond OUTPUT_MAX_BYTES."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(OUTPUT_MAX_BYTES):
        size += len(chunk)
        if size > OUTPUT_MAX_BYTES:
            raise AuditWalkFailed(f"the audit walk's child wrote more than {OUTPUT_MAX_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _report_of(out: bytes, returncode: int, err: bytes, up_to_sequence: int) -> dict[str, Any]:
    said = err.decode(errors="replace").strip()[-1000:]
    if returncode == EXIT_PRIORITY_REFUSED:
        raise PriorityRefused(f"the audit walk's child could not lower its priority: {said}")
    if returncode != 0:
        raise AuditWalkFailed(f"the audit walk's child exited with status {returncode}: {said}")
    try:
        report = WalkReport.model_validate(orjson.loads(out))
    except (orjson.JSONDecodeError, ValidationError) as e:
        raise AuditWalkFailed(f"the audit walk's child printed no valid report: {e}") from None
    if not report.is_whole_walk_to(up_to_sequence):
        raise AuditWalkFailed(f"the audit walk's child printed a report no walk to {up_to_sequence} gives: {out!r}")
    return report.model_dump()


def _exit_when_orphaned() -> None:
    """The parent holds our standard input open while it waits; its end means the parent is gone."""
    while os.read(0, 4096):  # the raw descriptor: a daemon thread must hold no lock of the interpreter's
        pass
    os._exit(EXIT_ORPHANED)


def _store_of(request: WalkRequest) -> Store:
    """The store the request names, opened by nobody yet: never migrated, never created."""
    from core_ledger.store import SqliteStore, StorageError

    if request.backend == "postgres":
        from core_ledger.store.postgres import PostgresLimits, PostgresStore

        limits = PostgresLimits(pool_size_max=2)  # the commit pool's one connection and one to read with
        return PostgresStore(
            request.location, limits, schema=request.postgres_schema, allow_migration=False, create=False
        )
    path = Path(request.location)
    if not path.is_file():  # opening would create an empty ledger there, and it would verify
        raise StorageError(f"no ledger database at {path}")
    return SqliteStore(path, allow_migration=False, cache_mib=WALK_CACHE_MIB)


async def _walk(store: Store, up_to_sequence: int) -> dict[str, Any]:
    from core_ledger.journal_checks import verify_store

    await store.open()
    try:
        return await verify_store(store, up_to_sequence)
    finally:
        await store.close()


def lowest_priority() -> None:
    """Nice 19 and, where there is one (Linux), the SCHED_IDLE policy; PermissionError when nice 19
    is refused. Nice 19 alone still competes with serving (a nice-19 task holds its CPU against a
    waking task for a while); a CPU that runs only SCHED_IDLE tasks counts as idle when the
    scheduler places a waking task, which then preempts the walk at once. Where only SCHED_IDLE is
    refused the walk goes on at nice 19 (its report says `sched_idle: false`)."""
    os.nice(CHILD_NICENESS - os.nice(0))
    if hasattr(os, "sched_setscheduler"):
        with contextlib.suppress(PermissionError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def _priority() -> dict[str, Any]:
    """The priority this process runs at, read back."""
    sched_idle = hasattr(os, "sched_getscheduler") and os.sched_getscheduler(0) == os.SCHED_IDLE
    return {"niceness": os.nice(0), "sched_idle": sched_idle}


def main() -> None:
    try:
        lowest_priority()
    except PermissionError as e:
        sys.stderr.write(f"audit walk: {e}\n")
        sys.exit(EXIT_PRIORITY_REFUSED)
    from shared import logs

    from core_ledger.store import StorageError

    logs.configure("warning", service="ledger")  # to standard error: standard output is the report
    request = WalkRequest.model_validate_json(sys.stdin.buffer.readline())
    threading.Thread(target=_exit_when_orphaned, name="audit-walk-lifeline", daemon=True).start()
    try:
        report = asyncio.run(_walk(_store_of(request), request.up_to_sequence))
    except StorageError as e:
        sys.stderr.write(f"audit walk: {e}\n")
        sys.exit(EXIT_CANNOT_OPEN)
    sys.stdout.buffer.write(orjson.dumps({**report, **_priority()}) + b"\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
