"""Ledger at scale: single bets over HTTP against an empty journal and against 1M and 10M entries.

For each size the ledger's database is seeded FAST straight into the store, not over HTTP and not
through the writer: harness/journal_seed.py folds the commands with the writer's own domain code
(decide, seal, evolve) and commits `--seed-group` entries per `Store.commit`, so every seeded
entry is a real, sealed, chained entry and the chain verifies. On SQLite the seeder writes a new
file in bulk (core_ledger/store/sqlite_bulk.py: no fsync while loading, indexes built after the
rows, made WAL and fsynced before the ledger opens it). A size of N entries holds
min(--players, N/2) players (each created and funded: two entries); the rest are bets, player
after player, in rounds of four, each round closed by a win. The empty size holds only the
players the load needs.

Then the ledger is started as a process (`harness/cluster.py`) and measured as in
`bench/ledger_throughput.py` (wrk, `bench/wrk/bets.lua`, a fresh id per request, warm-up first).
The bets go to `--active-players` players at random (1,000 by default, as in
`ledger_throughput.py`, the same players at every size), so the ratios compare the size of the
database and nothing else; `--active-players 0` spreads them over every seeded player instead
(then a bigger size also means a bigger working set, which no cache keeps warm).

Before the load, the ledger is left to settle after its start-up (`settle_s`: its key filter
filled, `ledger_key_filter_filled`, which takes minutes at 10M entries, and its CPU below a fifth
of a core for two seconds running), so the sizes compare steady states. On a long journal the
start-up chain audit then still walks the whole journal in a low-priority child process for
minutes (as it does once a day); that child takes the CPU serving leaves and shares the machine's
caches with it. So one load runs while it walks (`during_startup_audit`: what serving gets then),
and the measured loads only after it ended (`startup_audit_wait_s`, at most AUDIT_WAIT_MAX_S;
`audit_walk_during_load` says whether it still walked during them).

`--rounds N` measures N loads of `--seconds` back to back, after one warm-up, and reports the load
of median throughput with its latencies (each load's figures in `loads`; the checks and CPU per bet
cover all of them), so one stall on a shared machine does not decide a ratio.

`--seeded DIR` takes each non-empty size's database from an earlier run's `--dir DIR` instead of
seeding it again (most of an hour at 10M on SQLite): the file, moved here, or on PostgreSQL the
schema that run's ledger config names; it then also holds the bets that run measured.

Reported per size: throughput, p50, p99, the ledger's start-up time and RSS (after start-up, and
its peak over the run), the writer's side of the load from the ledger's own histograms (`store`:
commits, how long and how many bets each, and on SQLite the WAL checkpoints beside them and the
writer's part of them, with how many took over 10, 25, 50 and 100 ms), the chain verification
(`POST /admin/v1/audit/verify`, timed, must verify the whole journal) and, with the ledger
stopped, `croupier ledger verify` and `croupier ledger rebuild` (timed, with their peak RSS: they
read the journal page by page, so their memory must not grow with it). `--rebuild-max-size 1e6`
times the rebuild only up to that size (at 10M it takes most of an hour on a 2-core machine); the
chain is still verified at every size, over HTTP and offline.

    .venv/bin/python bench/ledger_scale.py [--sizes 0,1e6,1e7] [--players 1e6] [--seconds 10] [--rounds 1]
        [--ledger-set KEY=VALUE ...]

The ledger runs with the config's defaults, as deployed by default: one process, no fronts (so
its p99 is not `ledger_throughput.py`'s, which runs one front on two cores or more).
`--ledger-set fronts=1`, or any other `[ledger]` setting, tries another (repeatable; the value
is read as TOML).

PostgreSQL: `--postgres-dsn-file FILE` (a DSN of a running server, run with `fsync=on` for figures
that count; each size gets a fresh schema, left in place: use a throwaway server). The offline tools are
SQLite-only: on PostgreSQL `verify` is timed over HTTP, and the rebuild replays the journal
(`journal_checks.replay_journal`) into a scratch SQLite file. After seeding, the server is settled
as after any bulk load (`VACUUM (ANALYZE)`, then `CHECKPOINT`; timed, `postgres_settled`), so the
load does not meet the first autovacuum of tables millions of rows long.

Quick run: `--sizes 0,1e5 --players 1e4 --seconds 5`. Keys of the last JSON line:
`throughput_ratio_<size>_vs_empty` and `p99_ratio_<size>_vs_empty` for every size (for the issue's
sizes: `throughput_ratio_10m_vs_empty`, target >= 0.85; `p99_ratio_10m_vs_empty`, <= 1.25).
Exit status 1 if a run had errors or a verification failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import ledger_settings, load_average, median_by, process_cpu_s, run_wrk
from core_ledger.journal_checks import REBUILD_CACHE_MIB, replay_journal
from core_ledger.store import Store
from core_ledger.store.sqlite import SqliteStore
from core_ledger.store.sqlite_bulk import SqliteBulkStore
from harness.cluster import JACKPOT_GAMES, JACKPOT_ID, Cluster
from harness.journal_seed import SeedPlan, seed_commands, seed_store
from ledger_metrics import ledger_gauge, ledger_samples, store_figures
from ledger_throughput import BET_MINOR, BETS_SCRIPT, CURRENCY, DEPOSIT_MINOR, GAME_IDS, admin_call, settled_head

DEFAULT_SIZES = (0, 1_000_000, 10_000_000)
EMPTY_PLAYERS = 1000  # players of the empty size: what the load needs
PROGRESS_EVERY_S = 10.0
TARGETS = {"throughput_ratio_min": 0.85, "p99_ratio_max": 1.25}
TOOL_TIMEOUT_S = 3600.0
# A size above --rebuild-max-size: no rebuild timed (a rebuild of 10M entries takes most of an hour here).
NOT_REBUILT = {"s": None, "exit": 0, "peak_rss_kib": None, "cpu_s": None, "report": {"rebuilt": "skipped"}}
IDLE_SECONDS = 3.0  # the ledger's CPU with no load is measured over this long after start-up
# The ledger has settled after start-up once it uses less than this much CPU per second, two seconds
# running (the paced chain audit alone takes about a tenth of a core): at most 15 minutes.
SETTLED_CPU_S_PER_S = 0.2
SETTLED_WINDOWS = 2
SETTLE_MAX_S = 900.0
# The start-up chain audit's whole walk, waited for before the measured loads: a 10M journal takes
# about 4 minutes on an idle ledger here; the walk must end within 6 hours in service (the stale alert).
AUDIT_WAIT_MAX_S = 1800.0
AUDIT_POLL_S = 2.0
LOAD_KEYS = ("ok_per_s", "p50_ms", "p99_ms", "max_ms")
# `python -m croupier ...` that also prints its own peak RSS (KiB) on stderr when it exits: VmHWM of
# its own memory, not `ru_maxrss`, which Linux carries over fork and exec from the parent (this
# benchmark, holding its seeding cache: every tool then "peaked" at the benchmark's size).
PEAK_RSS_WRAPPER = (
    "import atexit, os, pathlib, runpy, sys\n"
    "def peak():\n"
    "    status = pathlib.Path('/proc/self/status').read_text().splitlines()\n"
    "    return next(line.split()[1] for line in status if line.startswith('VmHWM:'))\n"
    "atexit.register(lambda: print('PEAK_RSS_KIB', peak(), file=sys.stderr))\n"
    "atexit.register(lambda: print('CPU_S', sum(os.times()[:2]), file=sys.stderr))\n"
    "sys.argv = ['croupier', *sys.argv[1:]]\n"
    "runpy.run_module('croupier', run_name='__main__')\n"
)


@dataclass(frozen=True)
class Options:
    sizes: tuple[int, ...]
    players: int
    seconds: float
    warmup_seconds: float
    connections: int
    threads: int
    seed_group: int
    active_players: int  # players the measured bets go to (0: every seeded player)
    postgres_dsn_file: Path | None  # PostgreSQL instead of SQLite
    root: Path
    keep_dir: bool
    rebuild_max_size: int | None = None  # no rebuild timed above this size (None: at every size)
    seeded: Path | None = None  # an earlier run's --dir: its seeded databases are used again
    rounds: int = 1  # measured loads per size, back to back; the median one is reported
    ledger_settings: dict[str, Any] = field(default_factory=dict)  # --ledger-set: more [ledger] settings


def seeding_store(opts: Options, db_path: Path, schema: str) -> Store:
    """Where the seeder writes: on SQLite a new file bulk-loaded (core_ledger/store/sqlite_bulk.py)
    in place of the empty database the ledger made at its first start (nothing in it yet)."""
    if opts.postgres_dsn_file is not None:
        return new_store(opts, db_path, schema)
    for made in database_files(db_path):
        made.unlink()
    return SqliteBulkStore(db_path)


def database_files(db_path: Path) -> list[Path]:
    """A SQLite database's files: the file itself, its WAL and shared-memory index."""
    return list(db_path.parent.glob(db_path.name + "*"))


def postgres_dsn(opts: Options) -> str:
    assert opts.postgres_dsn_file is not None, "a PostgreSQL run"
    return opts.postgres_dsn_file.read_text().strip()


def new_store(opts: Options, db_path: Path, schema: str) -> Store:
    """The store of a size: its SQLite file, or on PostgreSQL its schema."""
    return SqliteStore(db_path) if opts.postgres_dsn_file is None else postgres_store(opts, schema)


def postgres_store(opts: Options, schema: str) -> Store:
    from core_ledger.store.postgres import PostgresLimits, PostgresStore

    return PostgresStore(postgres_dsn(opts), PostgresLimits(), schema=schema)


async def replay_time(source: Store, scratch: Path) -> dict[str, Any]:
    """The bounded-memory rebuild (what `croupier ledger rebuild` runs), timed, into a scratch file."""
    target = SqliteBulkStore(scratch, cache_mib=REBUILD_CACHE_MIB)
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        await target.open()
        head = await replay_journal(source, target)
        await target.finish()
    finally:
        await target.close()
    for leftover in database_files(scratch):
        leftover.unlink()
    return {
        "s": round(time.perf_counter() - started, 2),
        "exit": 0,
        "peak_rss_kib": None,
        "cpu_s": round(time.process_time() - cpu_started, 1),  # this process (PostgreSQL's reads not counted)
        "report": {"head_sequence": head.sequence, "rebuilt": True},
    }


def size_label(size: int) -> str:
    for unit, suffix in ((1_000_000, "m"), (1_000, "k")):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix}"
    return "empty" if size == 0 else str(size)


def players_for(size: int, players: int) -> int:
    return EMPTY_PLAYERS if size == 0 else max(1, min(players, size // 2))


# --- seeding --------------------------------------------------------------------------------


def seed_plan(size: int, players: int) -> SeedPlan:
    return SeedPlan(
        size=size,
        players=players,
        currency=CURRENCY,
        deposit_minor=DEPOSIT_MINOR,
        bet_minor=BET_MINOR,
        game_ids=GAME_IDS,
        jackpot_id=JACKPOT_ID,
        jackpot_games=JACKPOT_GAMES,
    )


async def seed(store: Store, db_path: Path, size: int, players: int, group: int) -> dict[str, Any]:
    """Journal the seed plan straight into the store (harness/journal_seed.py), `group` entries
    per commit."""
    started, cpu_started = time.perf_counter(), time.process_time()  # process: the store's thread too
    last_print = [started]

    def progress(done: int, seconds: float) -> None:
        if time.perf_counter() - last_print[0] > PROGRESS_EVERY_S:
            print(f"  seeded {done:,} of {size:,} entries ({done / seconds:,.0f}/s)", flush=True)
            last_print[0] = time.perf_counter()

    await store.open()
    try:
        head = await seed_store(store, seed_commands(seed_plan(size, players)), group_entries=group, progress=progress)
        if isinstance(store, SqliteBulkStore):
            await store.finish()  # indexes made, WAL and synchronous=FULL, fsynced
    finally:
        await store.close()
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "seed_s": round(seconds, 1),
        # Steadier than entries/s on a shared machine (PostgreSQL: this process only, not the server's).
        "seed_cpu_us_per_entry": round(1e6 * cpu_s / head.sequence, 1),
        "seeded_entries": head.sequence,
        "seed_entries_per_s": round(head.sequence / seconds),
        "seed_refused": {},
        "db_bytes": db_bytes(db_path) if isinstance(store, SqliteStore) else None,
    }


async def settle_postgres(dsn: str, schema: str) -> dict[str, Any]:
    """After seeding a schema, what PostgreSQL's own guide says follows a bulk load: `VACUUM
    (ANALYZE)` of its tables (planner statistics, visibility map, hint bits), then a `CHECKPOINT`.
    Without it the measured load meets the first autovacuum of tables millions of rows long and
    the checkpoints the load left behind: a one-off of a fresh load, not what a ledger that grew to
    this size sees. Only this schema: others on the server (earlier runs') are left as they are."""
    import asyncpg

    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        # Names quoted by the server (format %I), not by string pasting.
        names = ", ".join(
            row["name"]
            for row in await conn.fetch(
                "SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables WHERE schemaname = $1 "
                "ORDER BY tablename",
                schema,
            )
        )
        if names:
            await conn.execute(f"VACUUM (ANALYZE) {names}")
        try:
            await conn.execute("CHECKPOINT")
            checkpointed = True
        except asyncpg.InsufficientPrivilegeError:  # a DSN without pg_checkpoint: the server's own timer then
            checkpointed = False
    finally:
        await conn.close()
    return {"vacuum_analyze_s": round(time.perf_counter() - started, 1), "checkpointed": checkpointed}


def earlier_schema(opts: Options, label: str) -> str | None:
    """On PostgreSQL, the schema an earlier run (`--seeded DIR`) seeded for this size, as its
    ledger config names it; None without one."""
    if opts.seeded is None or opts.postgres_dsn_file is None:
        return None
    config = opts.seeded.resolve() / label / "ledger.toml"
    if not config.exists():
        return None
    from core_ledger.store.postgres import SCHEMA_NAME

    schema = tomllib.loads(config.read_text()).get("ledger", {}).get("postgres_schema")
    if schema is None:
        return None
    if not isinstance(schema, str) or not SCHEMA_NAME.fullmatch(schema):  # the store's own rule, checked first
        raise ValueError(f"{config}: postgres_schema {schema!r} is not a plain lower-case SQL name")
    return schema


async def reused_head(store: Store, what: str, size: int) -> int:
    """The head sequence of `what` an earlier run seeded (`--seeded`), which must hold `size` entries."""
    await store.open()
    try:
        head = await store.head()
    finally:
        await store.close()
    if head.sequence < size:
        raise RuntimeError(f"{what} holds {head.sequence:,} entries, fewer than {size:,}")
    print(f"  reused {what}, seeded earlier: {head.sequence:,} entries", flush=True)
    return head.sequence


async def reuse_seeded_schema(opts: Options, schema: str, size: int) -> dict[str, Any]:
    """Measure the schema an earlier run seeded (`--seeded`) again: it holds that run's bets too."""
    entries = await reused_head(postgres_store(opts, schema), f"the schema {schema}", size)
    return {"seed_reused_from": schema, "seeded_entries": entries, "seed_refused": {}, "db_bytes": None}


async def reuse_seeded(earlier: Path, db_path: Path, size: int) -> dict[str, Any]:
    """Move a database an earlier run seeded (`--seeded`) in place of the new one: seeding 10M
    entries takes most of an hour. It holds what that run journaled on top of its seed as well."""
    for made in database_files(db_path):
        made.unlink()
    for part in database_files(earlier):
        part.rename(db_path.parent / part.name)
    entries = await reused_head(SqliteStore(db_path), str(earlier), size)
    return {
        "seed_reused_from": str(earlier),
        "seeded_entries": entries,
        "seed_refused": {},
        "db_bytes": db_bytes(db_path),
    }


async def settled(cluster: Cluster, pid: int) -> float | None:
    """Seconds until the key filter is filled (or there is none) and the process's CPU stays below
    SETTLED_CPU_S_PER_S for SETTLED_WINDOWS windows of a second (None if not within SETTLE_MAX_S:
    then it is measured anyway). CPU alone said "settled" while the fill went on at 10M on
    PostgreSQL: a page of it waits for the database longer than it holds the loop."""
    started, quiet = time.perf_counter(), 0
    while time.perf_counter() - started < SETTLE_MAX_S:
        cpu_before, window_started = process_cpu_s(pid), time.perf_counter()
        await asyncio.sleep(1.0)
        busy = (process_cpu_s(pid) - cpu_before) / (time.perf_counter() - window_started)
        filling = await ledger_gauge(cluster, "ledger_key_filter_filled") == 0
        quiet = quiet + 1 if busy < SETTLED_CPU_S_PER_S and not filling else 0
        if quiet >= SETTLED_WINDOWS:
            return round(time.perf_counter() - started, 1)
    return None


async def audit_walking(cluster: Cluster) -> bool:
    """Is the ledger's first chain audit since its start still walking? (It publishes its last
    verified time when it ends.)"""
    return math.isnan(await ledger_gauge(cluster, "ledger_audit_last_verified_timestamp_seconds"))


async def startup_audit_ended(cluster: Cluster) -> float | None:
    """Seconds until the start-up chain audit ended (None if not within AUDIT_WAIT_MAX_S)."""
    started = time.perf_counter()
    while await audit_walking(cluster):
        if time.perf_counter() - started > AUDIT_WAIT_MAX_S:
            return None
        await asyncio.sleep(AUDIT_POLL_S)
    return round(time.perf_counter() - started, 1)


def db_bytes(db_path: Path) -> int:
    return sum(p.stat().st_size for p in database_files(db_path))


def page_cached_share(db_path: Path) -> float | None:
    """The share of the database's files in the OS page cache now (util-linux `fincore`; None
    without it or on PostgreSQL). A large database measured right after start reads what is not
    cached from disk, and runs of one size differ by how much of it an earlier run left cached."""
    files = database_files(db_path)
    if not files or shutil.which("fincore") is None:
        return None
    done = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    total = sum(p.stat().st_size for p in files)
    if done.returncode != 0 or not total:
        return None
    return round(sum(int(line) for line in done.stdout.split()) / total, 3)


# --- measuring ------------------------------------------------------------------------------


def rss_kib(pid: int) -> dict[str, int]:
    """Resident set now and at its peak (Linux /proc), KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out["rss_kib" if key == "VmRSS" else "rss_peak_kib"] = int(value.split()[0])
    return out


def offline_tool(args: list[str]) -> dict[str, Any]:
    """Run `croupier ledger ...`: its time, exit status, peak RSS (its own rusage) and report."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", PEAK_RSS_WRAPPER, "ledger", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=TOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - started
    peaks = [line.split()[1] for line in stderr.splitlines() if line.startswith("PEAK_RSS_KIB ")]
    cpu = [line.split()[1] for line in stderr.splitlines() if line.startswith("CPU_S ")]
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        report = {"stdout": stdout[-500:], "stderr": stderr[-500:]}
    return {
        "s": round(seconds, 2),
        "exit": proc.returncode,
        "peak_rss_kib": int(peaks[-1]) if peaks else None,
        "cpu_s": round(float(cpu[-1]), 1) if cpu else None,  # steadier than its wall time on a shared machine
        "report": {
            k: v
            for k, v in report.items()
            if k in ("ok", "entries_checked", "head_sequence", "rebuilt", "stdout", "stderr")
        },
    }


async def measure(size: int, opts: Options) -> dict[str, Any]:
    label = size_label(size)
    players = players_for(size, opts.players)
    reused_schema = earlier_schema(opts, label) if size else None
    schema = reused_schema or f"scale_{label}_{os.getpid()}"
    backend = (
        {"backend": "postgres", "postgres_dsn_file": opts.postgres_dsn_file, "postgres_schema": schema}
        if opts.postgres_dsn_file is not None
        else {}
    )
    cluster = Cluster(
        opts.root / label, edge_ids=(), log_level="warning", ledger_settings={**backend, **opts.ledger_settings}
    )
    print(f"{label}: {size:,} entries, {players:,} players", flush=True)
    try:
        await cluster.start()  # lays out configs and tokens, creates the database
        await cluster.stop_service("ledger")
        db_path = cluster.root / "ledger-data" / "ledger.db"
        earlier = None if opts.seeded is None else opts.seeded.resolve() / label / "ledger-data" / "ledger.db"
        if reused_schema is not None:
            seeded = await reuse_seeded_schema(opts, reused_schema, size)
        elif size and earlier is not None and earlier.exists() and opts.postgres_dsn_file is None:
            seeded = await reuse_seeded(earlier, db_path, size)
        else:
            store = seeding_store(opts, db_path, schema)
            seeded = await seed(store, db_path, max(size, 1 + 2 * players), players, opts.seed_group)
            print(
                f"  seeded {seeded['seeded_entries']:,} entries in {seeded['seed_s']} s "
                f"({seeded['seed_entries_per_s']:,}/s)"
                + (f", {seeded['db_bytes'] / 2**20:,.0f} MiB" if seeded["db_bytes"] else ""),
                flush=True,
            )
            if opts.postgres_dsn_file is not None:
                seeded["postgres_settled"] = await settle_postgres(postgres_dsn(opts), schema)
                print(f"  PostgreSQL settled: {json.dumps(seeded['postgres_settled'])}", flush=True)
        started = time.perf_counter()
        await cluster.start_service("ledger")
        startup_s = time.perf_counter() - started
        proc = cluster.services["ledger"].proc
        assert proc is not None
        rss_after_start = rss_kib(proc.pid)
        # Start-up work in the background (the key filter's fill, paced to a quarter of the loop,
        # takes minutes at 10M entries) is over before the load: the sizes compare steady states.
        settle_s = await settled(cluster, proc.pid)
        # What the ledger spends with no bets (its start-up chain audit, paced to a tenth of the
        # loop, walks a long journal for minutes; timers): measured before the load, so CPU per bet
        # can be told apart from it.
        idle_cpu_before, idle_started = process_cpu_s(proc.pid), time.perf_counter()
        await asyncio.sleep(IDLE_SECONDS)
        idle_cpu_per_s = (process_cpu_s(proc.pid) - idle_cpu_before) / (time.perf_counter() - idle_started)
        token_file = cluster.root / "secrets" / "edge.token"
        active = min(players, opts.active_players) if opts.active_players else players
        args = [str(token_file), "", str(active), ",".join(GAME_IDS), str(BET_MINOR)]
        url = cluster.url("ledger")

        # Ids of this run only: a reused database (`--seeded`) holds an earlier run's bets, whose ids
        # would come back as replays or as reused keys (422).
        run_tag = f"{os.getpid()}x{time.time_ns() // 1_000_000 % 10**9}"

        def wrk(prefix: str, seconds: float) -> Any:
            args[1] = f"{prefix}-{run_tag}"
            return run_wrk(
                url,
                script=BETS_SCRIPT,
                script_args=args,
                threads=opts.threads,
                connections=opts.connections,
                duration_s=seconds,
            )

        during_walk: dict[str, Any] | None = None
        walk_errors = 0
        if await audit_walking(cluster):
            walked_beside = await asyncio.to_thread(wrk, "walk", opts.seconds)
            during_walk = {k: v for k, v in walked_beside.figures().items() if k in LOAD_KEYS}
            walk_errors = walked_beside.errors
            during_walk["walking_at_end"] = await audit_walking(cluster)
            print(f"  while the start-up chain audit walks {json.dumps(during_walk)}", flush=True)
        audit_wait_s = await startup_audit_ended(cluster)
        cached_share = page_cached_share(db_path)  # None on PostgreSQL: no database files here
        warm = await asyncio.to_thread(wrk, "warm", opts.warmup_seconds)
        before = await settled_head(cluster)
        cpu_before, run_started = process_cpu_s(proc.pid), time.perf_counter()
        samples_before = await ledger_samples(cluster)
        loads = [await asyncio.to_thread(wrk, f"run{n}", opts.seconds) for n in range(opts.rounds)]
        result = median_by(loads, lambda load: load.ok_per_s)
        after = await settled_head(cluster)
        store_load = store_figures(samples_before, await ledger_samples(cluster))  # the window of `before`..`after`
        cpu_s, run_s = process_cpu_s(proc.pid) - cpu_before, time.perf_counter() - run_started
        walked_during_load = await audit_walking(cluster)
        rss_after_run = rss_kib(proc.pid)
        load_figures = {k: v for k, v in result.figures().items() if k in ("ok_per_s", "p50_ms", "p99_ms")}
        # Printed before the long verifications: a run cut short still has its load figures.
        load_figures["cpu_ms_per_bet"] = round(1000 * cpu_s / (after - before), 3) if after > before else None
        load_figures["idle_cpu_ms_per_s"] = round(1000 * idle_cpu_per_s, 1)
        load_figures["db_page_cached_share"] = cached_share
        load_figures["store"] = store_load
        print(f"  measured {json.dumps({'size': size, **load_figures})}", flush=True)
        started = time.perf_counter()
        audit = await admin_call(cluster, "POST", "/admin/v1/audit/verify", timeout_s=TOOL_TIMEOUT_S)
        verify_http_s = time.perf_counter() - started
        await cluster.stop_service("ledger")
        rebuilt = opts.rebuild_max_size is None or size <= opts.rebuild_max_size
        if opts.postgres_dsn_file is None:
            verify = await asyncio.to_thread(offline_tool, ["verify", str(db_path)])
            rebuild = await asyncio.to_thread(offline_tool, ["rebuild", str(db_path)]) if rebuilt else NOT_REBUILT
        elif not rebuilt:
            verify = {"s": None, "exit": 0, "peak_rss_kib": None, "report": {"offline": "SQLite only"}}
            rebuild = NOT_REBUILT
        else:
            verify = {"s": None, "exit": 0, "peak_rss_kib": None, "report": {"offline": "SQLite only"}}
            source = new_store(opts, db_path, schema)
            await source.open()
            try:
                rebuild = await replay_time(source, cluster.root / "rebuild-scratch.db")
            finally:
                await source.close()
    finally:
        await cluster.stop()
    committed, seen = after - before, sum(load.statuses.get(201, 0) for load in loads)
    chain_ok = bool(audit["ok"]) and audit["head_sequence"] == after and audit["entries_checked"] == after
    # wrk abandons what is in flight when it stops (at most one bet per connection), at the end of each
    # load and of the warm-up: those may commit unseen, the warm-up's after the head looked settled (a
    # slow commit), so up to one per connection per wrk run may be journaled unseen.
    commits_match = seen <= committed <= seen + (len(loads) + 1) * opts.connections
    tools_ok = verify["exit"] == 0 and rebuild["exit"] == 0
    figures = {
        "size": size,
        "players": players,
        "active_players": active,
        **seeded,
        "startup_s": round(startup_s, 2),
        "settle_s": settle_s,
        "during_startup_audit": during_walk,  # one load while the start-up chain audit walked (None: it had ended)
        "startup_audit_wait_s": audit_wait_s,  # then waited for it to end (None: not within AUDIT_WAIT_MAX_S)
        "audit_walk_during_load": walked_during_load,  # it still walked when the measured loads ended
        "db_page_cached_share": cached_share,  # of the database files, when the load began
        "rss_after_start_kib": rss_after_start.get("rss_kib"),
        "rss_after_run_kib": rss_after_run.get("rss_kib"),
        "rss_peak_kib": rss_after_run.get("rss_peak_kib"),
        **{k: v for k, v in result.figures().items() if k in ("ok_per_s", "p50_ms", "p99_ms", "max_ms", "first_error")},
        "loads": [{k: v for k, v in load.figures().items() if k in LOAD_KEYS} for load in loads],
        "requests": sum(load.requests for load in loads),
        "non_2xx": sum(load.non_2xx for load in loads),
        # Steadier than bets/s on a shared machine: others' work slows the ledger, not its CPU per bet.
        "cpu_ms_per_bet": round(1000 * cpu_s / committed, 3) if committed else None,
        "store": store_load,  # commits and WAL checkpoints during the load: where a p99 comes from
        "idle_cpu_ms_per_s": round(1000 * idle_cpu_per_s, 1),
        # Less what it spent idle over as long (the start-up audit above all): the bets' own cost.
        "cpu_ms_per_bet_less_idle": round(1000 * (cpu_s - idle_cpu_per_s * run_s) / committed, 3)
        if committed
        else None,
        "verify_http_s": round(verify_http_s, 2),
        "verify_offline": verify,
        "rebuild_offline": rebuild,
        "chain_ok": chain_ok,
        "commits_match": commits_match,
        "journal_growth": committed,
        "committed_201_seen": seen,
        "errors": sum(load.errors for load in loads)
        + warm.errors
        + walk_errors
        + (0 if chain_ok and commits_match and tools_ok else 1)
        + sum(seeded["seed_refused"].values()),
    }
    print(
        f"  {figures['ok_per_s']:,.1f} bets/s  p50 {figures['p50_ms']} ms  p99 {figures['p99_ms']} ms  "
        f"CPU {figures['cpu_ms_per_bet']} ms/bet  "
        f"start-up {figures['startup_s']} s, settled {figures['settle_s']} s later  "
        f"RSS {figures['rss_after_start_kib']:,} -> "
        f"{figures['rss_after_run_kib']:,} KiB  verify {figures['verify_http_s']} s (http), "
        f"{verify['s']} s (offline)  rebuild {rebuild['s']} s  chain {'ok' if chain_ok else 'BROKEN'}  "
        f"errors {figures['errors']}",
        flush=True,
    )
    return figures


def summarize(by_size: dict[int, dict[str, Any]], opts: Options, load_before: float) -> dict[str, Any]:
    empty = by_size.get(0)
    backend = "sqlite" if opts.postgres_dsn_file is None else "postgres"
    out: dict[str, Any] = {"benchmark": "ledger_scale", "backend": backend, "targets": TARGETS}
    met = {}
    for size, figures in by_size.items():
        if size == 0 or empty is None:
            continue
        label = size_label(size)
        t = round(figures["ok_per_s"] / empty["ok_per_s"], 3) if empty["ok_per_s"] else None
        p = round(figures["p99_ms"] / empty["p99_ms"], 3) if empty["p99_ms"] else None
        out[f"throughput_ratio_{label}_vs_empty"] = t
        out[f"p99_ratio_{label}_vs_empty"] = p
        c, c0 = figures["cpu_ms_per_bet"], empty["cpu_ms_per_bet"]
        out[f"cpu_per_bet_ratio_{label}_vs_empty"] = round(c / c0, 3) if c and c0 else None
        c, c0 = figures["cpu_ms_per_bet_less_idle"], empty["cpu_ms_per_bet_less_idle"]
        out[f"cpu_per_bet_less_idle_ratio_{label}_vs_empty"] = round(c / c0, 3) if c and c0 else None
        met[label] = (
            t is not None and t >= TARGETS["throughput_ratio_min"] and p is not None and p <= TARGETS["p99_ratio_max"]
        )
    out.update(
        {
            "targets_met": met,
            "errors": sum(f["errors"] for f in by_size.values()),
            "sizes": {size_label(s): f for s, f in by_size.items()},
            "setup": {
                "seconds": opts.seconds,
                "warmup_seconds": opts.warmup_seconds,
                "rounds": opts.rounds,
                "connections": opts.connections,
                "threads": opts.threads,
                "seed_group": opts.seed_group,
                "players_max": opts.players,
                "active_players": opts.active_players,
                "rebuild_max_size": opts.rebuild_max_size,
                "ledger_settings": opts.ledger_settings,
                "load_average_1m_before": load_before,
                "load_average_1m_after": load_average(),
                "cpus": os.cpu_count(),
            },
        }
    )
    return out


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default=",".join(str(s) for s in DEFAULT_SIZES),
        help="journal sizes, comma-separated (0 = empty; 1e6 notation accepted)",
    )
    parser.add_argument("--players", type=float, default=1e6, help="players at most (each size holds up to size/2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per size (1..600)")
    parser.add_argument("--warmup-seconds", type=float, default=3.0, help="warm-up seconds per size (1..60)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="measured loads per size, back to back; the median is reported (1..9)"
    )
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (1..1024)")
    parser.add_argument("--threads", type=int, default=1, choices=(1, 2), help="wrk threads")
    parser.add_argument(
        "--active-players",
        type=int,
        default=EMPTY_PLAYERS,
        help="players the measured bets go to (0: every seeded player)",
    )
    parser.add_argument("--seed-group", type=int, default=20_000, help="seed entries per commit (100..100000)")
    parser.add_argument(
        "--postgres-dsn-file",
        type=Path,
        default=None,
        help="file holding a PostgreSQL DSN: measure the ledger on PostgreSQL instead of SQLite",
    )
    parser.add_argument(
        "--rebuild-max-size",
        type=float,
        default=None,
        help="time `croupier ledger rebuild` only at sizes up to this (default: every size)",
    )
    parser.add_argument("--dir", type=Path, default=None, help="where configs, data and logs go (default: temp)")
    parser.add_argument(
        "--seeded",
        type=Path,
        default=None,
        help="the --dir of an earlier run: a size whose database it holds (SQLite: moved here; PostgreSQL: the "
        "schema its config names) is measured again, not seeded again",
    )
    parser.add_argument(
        "--ledger-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [ledger] setting for the ledger of every size (repeatable; VALUE as TOML, e.g. "
        "derived_flush_groups=8): to try a setting without editing code",
    )
    a = parser.parse_args(argv)
    try:
        settings = ledger_settings(a.ledger_set)
    except ValueError as e:
        parser.error(f"--ledger-set: {e}")
    try:
        sizes = tuple(sorted({int(float(s)) for s in a.sizes.split(",") if s.strip()}))
    except ValueError:
        parser.error("--sizes takes numbers, e.g. 0,1e5,1e6")
    if not sizes or sizes[0] != 0 or sizes[-1] > 100_000_000:
        parser.error("--sizes must include 0 (the baseline) and stay within 1e8")
    if (
        not 1 <= a.players <= 10_000_000
        or not 1 <= a.seconds <= 600
        or not 1 <= a.warmup_seconds <= 60
        or not 100 <= a.seed_group <= 100_000
        or not 1 <= a.connections <= 1024
        or a.active_players < 0
        or not 1 <= a.rounds <= 9
    ):
        parser.error("out of range: see --help")
    root = (a.dir or Path(tempfile.mkdtemp(prefix="croupier-scale-"))).resolve()
    return Options(
        sizes,
        int(a.players),
        a.seconds,
        a.warmup_seconds,
        a.connections,
        a.threads,
        a.seed_group,
        a.active_players,
        a.postgres_dsn_file.resolve() if a.postgres_dsn_file else None,
        root,
        keep_dir=a.dir is not None,
        rebuild_max_size=None if a.rebuild_max_size is None else int(a.rebuild_max_size),
        seeded=a.seeded,
        rounds=a.rounds,
        ledger_settings=settings,
    )


async def run(opts: Options) -> dict[str, Any]:
    load_before = load_average()
    by_size = {}
    for size in opts.sizes:
        by_size[size] = await measure(size, opts)
    return summarize(by_size, opts, load_before)


def main() -> None:
    opts = parse_args()
    summary = asyncio.run(run(opts))
    if opts.keep_dir or summary["errors"]:
        print(f"configs, data and logs kept in {opts.root}", flush=True)
    else:
        shutil.rmtree(opts.root)
    print(json.dumps(summary, sort_keys=True), flush=True)
    sys.exit(1 if summary["errors"] else 0)


if __name__ == "__main__":
    main()
