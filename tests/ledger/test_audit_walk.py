"""Whole-journal audits in a low-priority child process (core_ledger/audit_walk.py): the child's
report is the walk's, on both backends other processes can open; it runs at nice 19; a child that
crashes, lies about its shape or talks too much is a failed walk (retried), never a verdict on the
chain; a cancelled walk kills its child, and a child whose parent is gone exits."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from core_ledger.app import create_app
from core_ledger.app_keys import AUDITOR, SERVICE
from core_ledger.audit import Auditor
from core_ledger.audit_walk import (
    CHILD_NICENESS,
    EXIT_ORPHANED,
    OUTPUT_MAX_BYTES,
    AuditWalkFailed,
    ChildWalk,
    PriorityRefused,
    WalkRequest,
)
from core_ledger.journal_checks import verify_store
from core_ledger.store import MemoryStore, SqliteStore, Store
from harness.journal_seed import SeedPlan, seed_commands, seed_store
from tests.support.clock import FakeClock
from tests.support.ledger import Api, ledger_config
from tests.support.polling import wait_for
from tests.support.tamper import delete_last_entries, rewrite_entry

PLAN = SeedPlan(120, 6, "EUR", 10_000, 100, ("slots-1",), "mega", ("slots-1",))


async def test_a_child_walk_reports_what_the_walk_in_this_process_reports(storage: Callable[[], Store]) -> None:
    store = storage()
    await store.open()
    try:
        await seed_store(store, seed_commands(PLAN))
        walk = ChildWalk.of(store)
        if isinstance(store, MemoryStore):
            assert walk is None  # no other process can read it: its whole walks stay in this one
            return
        assert walk is not None
        assert not any(walk.location["location"] in arg for arg in walk.command)  # a DSN is no argument
        in_process = await verify_store(store, 100)
        report = await walk.walk(100)
    finally:
        await store.close()
    assert report.pop("niceness") == CHILD_NICENESS
    assert report.pop("sched_idle") is sys.platform.startswith("linux")
    assert report == in_process and report["ok"] and report["entries_checked"] == 100 == report["head_sequence"]


async def _started(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> tuple[Any, Api, Auditor]:
    """A SQLite ledger, a client of it, and its auditor once the start-up audit is done (the audits
    a test then runs by hand are the only ones), sending every whole walk to its child."""
    app = create_app(ledger_config(tmp_path / "l"), clock=clock)
    api = Api(await aiohttp_client(app))
    auditor = app[AUDITOR]
    await wait_for(lambda: auditor.verified is not None, 20)
    assert auditor.child_walk is not None
    auditor.child_walk.min_entries = 0  # whole walks of this short journal go to the child too
    return app, api, auditor


async def test_the_auditor_walks_the_whole_journal_in_the_child_and_what_is_new_in_process(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    app, api, auditor = await _started(aiohttp_client, tmp_path, clock)
    auditor.full_every = 2
    assert auditor.child_walk is not None
    child_walks: list[int] = []
    real = auditor.child_walk.walk

    async def recording(up_to: int) -> dict[str, Any]:
        child_walks.append(up_to)
        return await real(up_to)

    auditor.child_walk.walk = recording  # type: ignore[method-assign]  # a recording stand-in
    for i in range(3):
        await api.player(f"p{i}", deposit=100)
    head = app[SERVICE].head.sequence
    new = await auditor.audit()  # incremental: in this process, from the head the start-up walk verified
    assert child_walks == [] and new["ok"] and new["entries_checked"] == head
    whole = await auditor.audit()  # the second since a whole walk: the whole journal, in the child
    assert child_walks == [head] and whole["ok"] and whole["entries_checked"] == head

    await api.player("p9", deposit=100)
    assert (await auditor.audit())["entries_checked"] == 2  # from the head the child verified
    rewrite_entry(
        Path(auditor.child_walk.location["location"]), 2, lambda t: t.replace('"amount_minor":', '"amount_minor":1', 1)
    )
    broken = await auditor.audit()  # the whole walk again, in the child: it finds the old entry
    assert child_walks == [head, head + 2] and broken["ok"] is False and broken["first_bad_sequence"] == 2
    _, metrics = await api.get("admin_read", "/metrics")
    assert "ledger_audit_chain_ok 0.0" in metrics and auditor.verified is None


async def test_an_on_demand_audit_walks_a_long_journal_in_the_child_and_answers_as_before(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    app, api, auditor = await _started(aiohttp_client, tmp_path, clock)
    assert auditor.child_walk is not None
    for i in range(3):
        await api.player(f"p{i}", deposit=100)
    head = app[SERVICE].head.sequence
    in_process = await auditor.reads.verify(head)
    with capture_logs() as logs:
        status, answer = await api.post("admin_read", "/admin/v1/audit/verify")
    assert [e["event"] for e in logs if e["event"].startswith("audit_walk")] == [
        "audit_walk_started",
        "audit_walk_finished",
    ]
    assert status == 200 and answer == in_process and answer["ok"]  # the answer's shape does not say who walked

    rewrite_entry(
        Path(auditor.child_walk.location["location"]), 2, lambda t: t.replace('"amount_minor":', '"amount_minor":1', 1)
    )
    _, broken = await api.post("admin_read", "/admin/v1/audit/verify")
    assert broken["ok"] is False and broken["first_bad_sequence"] == 2 and auditor.verified is None


async def test_an_on_demand_audit_whose_child_fails_is_walked_here_and_still_finds_a_bad_entry(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    """The operator gets the chain's verdict, not the child's failure (the periodic audit counts those)."""
    app, api, auditor = await _started(aiohttp_client, tmp_path, clock)
    assert auditor.child_walk is not None
    location = Path(auditor.child_walk.location["location"])
    auditor.child_walk = ChildWalk({"backend": "sqlite", "location": "x"}, command=LIARS["crashes"], min_entries=0)
    await api.player("p1", deposit=100)
    with capture_logs() as logs:
        status, answer = await api.post("admin_read", "/admin/v1/audit/verify")
    assert status == 200 and answer["ok"] and answer["entries_checked"] == app[SERVICE].head.sequence
    assert next(e for e in logs if e["event"] == "audit_walk_failed")["on_demand"] is True
    rewrite_entry(location, 2, lambda t: t.replace('"amount_minor":', '"amount_minor":1', 1))
    _, broken = await api.post("admin_read", "/admin/v1/audit/verify")
    assert broken["ok"] is False and broken["first_bad_sequence"] == 2


async def test_one_child_walks_at_a_time(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> None:
    """Operators asking at once, and the periodic whole walk, queue for the child: each walk still
    happens (up to the head when it was asked), one process at a time."""
    _, api, auditor = await _started(aiohttp_client, tmp_path, clock)
    assert auditor.child_walk is not None
    auditor.full_every = 1
    walking, most, walks = 0, 0, 0
    real = auditor.child_walk.walk

    async def counting(up_to: int) -> dict[str, Any]:
        nonlocal walking, most, walks
        walking, walks = walking + 1, walks + 1
        most = max(most, walking)
        try:
            return await real(up_to)
        finally:
            walking -= 1

    auditor.child_walk.walk = counting  # type: ignore[method-assign]  # a counting stand-in
    asked = [api.post("admin_read", "/admin/v1/audit/verify") for _ in range(3)]
    answers = await asyncio.wait_for(asyncio.gather(auditor.audit(), *asked), 60)
    assert walks == 4 and most == 1
    assert all(answer["ok"] for answer in [answers[0], *(body for status, body in answers[1:] if status == 200)])
    assert [status for status, _ in answers[1:]] == [200, 200, 200]


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


GOOD = (
    '{"ok":true,"entries_checked":1,"head_sequence":1,"head_hash":"' + "a" * 64 + '","niceness":19,"sched_idle":true}'
)
COUNT_AS_STRING = GOOD.replace('"entries_checked":1', '"entries_checked":"1"')
NOT_A_HASH = GOOD.replace("a" * 64, "z" * 64)
EXTRA_FIELD = GOOD[:-1] + ',"trust_me":true}'
BEYOND_THE_WALK = GOOD.replace('"entries_checked":1,"head_sequence":1', '"entries_checked":9,"head_sequence":9')
FEWER_CHECKED = GOOD.replace('"entries_checked":1', '"entries_checked":0')
OK_AND_BROKEN = GOOD[:-1] + ',"first_bad_sequence":2}'
BROKEN_ELSEWHERE = GOOD.replace('"ok":true', '"ok":false')[:-1] + ',"first_bad_sequence":7}'
LIARS = {
    "crashes": _python("import sys; sys.exit(70)"),
    "killed": _python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
    "says nothing": _python("pass"),
    "not JSON": _python("print('all fine')"),
    "a report and a failure": _python(f"print({GOOD!r}); raise SystemExit(1)"),
    "a count that is a string": _python(f"print({COUNT_AS_STRING!r})"),
    "a hash that is no hash": _python(f"print({NOT_A_HASH!r})"),
    "a field no report has": _python(f"print({EXTRA_FIELD!r})"),
    "two reports": _python(f"print({GOOD!r}); print({GOOD!r})"),
    "a head beyond the walk": _python(f"print({BEYOND_THE_WALK!r})"),
    "fewer entries checked than its head": _python(f"print({FEWER_CHECKED!r})"),
    "ok and a bad entry": _python(f"print({OK_AND_BROKEN!r})"),
    "broken, not after its head": _python(f"print({BROKEN_ELSEWHERE!r})"),
    "too much": _python(f"import sys; sys.stdout.write('x' * {OUTPUT_MAX_BYTES * 4})"),
    "too much on stderr": _python(f"import sys; sys.stderr.write('x' * {OUTPUT_MAX_BYTES * 4}); print({GOOD!r})"),
}


@pytest.mark.parametrize("liar", sorted(LIARS))
async def test_a_child_without_a_valid_report_is_a_failed_walk_not_a_broken_chain(liar: str) -> None:
    walk = ChildWalk({"backend": "sqlite", "location": "/nowhere/ledger.db"}, command=LIARS[liar])
    with pytest.raises(AuditWalkFailed):
        await asyncio.wait_for(walk.walk(1), 30)


async def test_the_good_report_the_liars_are_made_from_is_believed() -> None:
    """The liars above fail for what they change, not because the stand-in is wrong."""
    report = await ChildWalk({"backend": "sqlite", "location": "x"}, command=_python(f"print({GOOD!r})")).walk(1)
    assert report["ok"] and report["head_sequence"] == 1


async def test_the_auditor_counts_a_failed_child_walk_and_keeps_its_verdict(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    _, api, auditor = await _started(aiohttp_client, tmp_path, clock)
    verified = auditor.verified
    auditor.full_every = 1  # every periodic audit is a whole walk
    auditor.child_walk = ChildWalk({"backend": "sqlite", "location": "x"}, command=LIARS["crashes"], min_entries=0)
    with pytest.raises(AuditWalkFailed, match="status 70"):
        await auditor.audit()
    assert auditor.verified == verified  # nothing was walked, nothing changes
    _, metrics = await api.get("admin_read", "/metrics")
    assert "ledger_audit_chain_ok 1.0" in metrics


async def test_a_child_that_keeps_failing_turns_the_audit_task_failing(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    """The failure has the audit task's metric, which `CroupierLedgerTaskFailing` matches."""
    app = create_app(ledger_config(tmp_path / "l"), clock=clock)
    service = app[SERVICE]
    crashing = ChildWalk({"backend": "sqlite", "location": "x"}, command=LIARS["crashes"], min_entries=0)
    app[AUDITOR] = Auditor(service, app[AUDITOR].reads, service.metrics, clock, interval_s=0.02, child_walk=crashing)
    api = Api(await aiohttp_client(app))
    await wait_for(lambda: app[AUDITOR].health.failing, 30)
    _, metrics = await api.get("admin_read", "/metrics")
    assert 'ledger_task_failing{task="audit"} 1.0' in metrics
    assert "ledger_audit_chain_ok 0.0" not in metrics  # no walk happened: no verdict on the chain


def _refusing(call: str) -> list[str]:
    """The real child, in a sandbox whose syscall filter refuses `os.<call>` (as systemd's
    `SystemCallFilter=~@resources` refuses `setpriority` and `sched_setscheduler`)."""
    return _python(
        f"import os\ndef refused(*_): raise PermissionError(1, 'Operation not permitted')\nos.{call} = refused\n"
        "from core_ledger.audit_walk import main\nmain()"
    )


NICE_REFUSED, IDLE_REFUSED = _refusing("nice"), _refusing("sched_setscheduler")


async def test_a_child_refused_its_priority_walks_nothing_and_the_auditor_walks_in_process(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    app, api, auditor = await _started(aiohttp_client, tmp_path, clock)
    assert auditor.child_walk is not None
    location = auditor.child_walk.location
    with pytest.raises(PriorityRefused, match="Operation not permitted"):
        await ChildWalk(location, command=NICE_REFUSED).walk(0)
    for i in range(3):
        await api.player(f"p{i}", deposit=100)
    auditor.child_walk = ChildWalk(location, command=NICE_REFUSED, min_entries=0)
    auditor.verified = None  # as after a failed audit: the next one is a whole walk
    with capture_logs() as logs:
        report = await auditor.audit()
    assert report["ok"] and report["entries_checked"] == app[SERVICE].head.sequence and "niceness" not in report
    assert [e["event"] for e in logs if e["event"].startswith("audit_walk")] == [
        "audit_walk_started",
        "audit_walk_in_process",
    ]
    assert auditor.child_walk is None  # from now on, as before there were children


async def test_a_child_refused_only_sched_idle_walks_at_nice_19_and_says_so(sqlite_store: SqliteStore) -> None:
    await seed_store(sqlite_store, seed_commands(PLAN))
    report = await ChildWalk(sqlite_store.child_location(), command=IDLE_REFUSED).walk(100)
    assert report["ok"] and report["entries_checked"] == 100
    assert report["niceness"] == CHILD_NICENESS and report["sched_idle"] is False


async def test_a_child_that_cannot_open_its_store_fails_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such" / "ledger.db"
    with pytest.raises(AuditWalkFailed, match="no ledger database"):
        await ChildWalk({"backend": "sqlite", "location": str(missing)}).walk(5)
    assert not missing.exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_cancelled_walk_kills_its_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    sleeper = _python(
        "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)", str(pid_file)
    )
    walking = asyncio.create_task(ChildWalk({"backend": "sqlite", "location": "x"}, command=sleeper).walk(1))
    await wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", 20)
    pid = int(pid_file.read_text())
    assert _alive(pid)
    walking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await walking
    assert not _alive(pid)  # killed and reaped


@pytest.mark.parametrize(
    "request_line",
    [
        b"not json\n",
        b'{"backend": "sqlite", "location": "LEDGER", "up_to_sequence": 5, "migrate": true}\n',
        b'{"backend": "oracle", "location": "LEDGER", "up_to_sequence": 5}\n',
        b'{"backend": "sqlite", "location": "LEDGER", "up_to_sequence": "5"}\n',
        b'{"backend": "sqlite", "location": "MISSING", "up_to_sequence": 5}\n',
    ],
)
def test_the_child_refuses_a_request_it_was_not_built_for_and_prints_no_report(
    sqlite_store: SqliteStore, tmp_path: Path, request_line: bytes
) -> None:
    """Anyone on the host may run `python -m core_ledger.audit_walk`: an extra member (a wish to
    migrate), an unknown backend, a sequence as text or a missing file get an error exit, no
    report, and nothing created."""
    missing = tmp_path / "no-such" / "ledger.db"
    line = request_line.replace(b"LEDGER", str(sqlite_store.path).encode()).replace(b"MISSING", str(missing).encode())
    ran = subprocess.run(
        [sys.executable, "-m", "core_ledger.audit_walk"], input=line, capture_output=True, timeout=60, check=False
    )
    assert ran.returncode != 0 and ran.stdout == b"" and not missing.exists()


def test_a_child_whose_parent_is_gone_exits() -> None:
    """The child's standard input stays open while its parent waits: its end means the parent
    died. Here the child waits on a PostgreSQL that accepts connections and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        request = WalkRequest(backend="postgres", location=f"postgresql://u@127.0.0.1:{port}/db", up_to_sequence=5)
        child = subprocess.Popen(
            [sys.executable, "-m", "core_ledger.audit_walk"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert child.stdin is not None
            child.stdin.write(request.model_dump_json().encode() + b"\n")
            child.stdin.flush()
            time.sleep(1.0)
            assert child.poll() is None  # still waiting on the database
            child.stdin.close()  # what the parent's death does
            assert child.wait(timeout=8) == EXIT_ORPHANED  # well before the 10 s connect timeout
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
            for pipe in (child.stdin, child.stdout, child.stderr):
                if pipe is not None:
                    pipe.close()


@pytest.mark.parametrize("in_child", [True, False])
async def test_a_journal_whose_last_entries_are_gone_does_not_verify(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock, in_child: bool
) -> None:
    app, api, auditor = await _started(aiohttp_client, tmp_path, clock)
    assert auditor.child_walk is not None
    if not in_child:
        auditor.child_walk.min_entries = 10**9  # this journal is walked in this process
    for i in range(3):
        await api.player(f"p{i}", deposit=100)
    head = app[SERVICE].head.sequence
    db = Path(auditor.child_walk.location["location"])
    delete_last_entries(db, 2)  # every entry left still chains
    status, report = await api.post("admin_read", "/admin/v1/audit/verify")
    assert status == 200 and report["ok"] is False and report["first_bad_sequence"] == head - 1, report
    _, metrics = await api.get("admin_read", "/metrics")
    assert "ledger_audit_chain_ok 0.0" in metrics
    offline = SqliteStore(db)  # as `croupier ledger verify` walks it: up to the stored head
    await offline.open()
    try:
        assert (await verify_store(offline))["first_bad_sequence"] == head - 1
    finally:
        await offline.close()
