"""Ledger throughput: durable bets/s, p50 and p99 over loopback, on SQLite and PostgreSQL, in one run.

Three modes, measured the same way (wrk, `bench/wrk/bets.lua`: a fresh id per request, bets
spread over many funded players and small rounds, same threads/connections/duration, warm-up):

  noop       `bench/noop_server.py`: the ledger's framework cost only (same middleware, model, answer)
  ledger     the ledger on SQLite (WAL, synchronous=FULL) with group commit
  single     the ledger with group commit off: one commit per bet
  batch      `POST /v1/batch` with BATCH_SIZE bets per request from BATCH_CONNECTIONS connections (how
             edges talk to the ledger), driven from Python: every one of the answer's results is checked
  hot        the peer ledger's shape: bets spread over only HOT_PLAYERS players from HOT_CONNECTIONS
             connections (hot rows)

Every ledger mode runs on each backend of `--backends` (default both), one right after the other
with the same load: on SQLite, then on a local PostgreSQL 15 started for that mode alone by
`harness/postgres.py` (durable: fsync=on, synchronous_commit=on, full_page_writes=on; PostgreSQL's
default shared_buffers), the ledger using its schema `ledger`. The PostgreSQL figures are keyed
`pg_*` (`pg_bets_per_s`, `pg_p50_ms`, `pg_p99_ms`, `pg_cpu_ms_per_bet`, `ratio_pg_vs_sqlite`,
`pg_batch_bets_per_s`, ...). CPU per bet is the ledger process's CPU time over the bets committed,
on both backends; on PostgreSQL the database server's own CPU (the postmaster and its backends) is
reported beside it (`pg_database_cpu_ms_per_bet`, and the sum `pg_total_cpu_ms_per_bet`), since
SQLite does that work inside the ledger process. Each ledger mode also reports the writer's side of
its measured run from the ledger's own histograms (`store`, `bench/ledger_metrics.py`): how many
commits, how many bets each and how long (on SQLite also the WAL checkpoints beside them). With few
connections a commit's fsync bounds the mode: a group holds at most the bets in flight.

The ledger runs with `--fronts` front processes (default: one on a machine of two cores or more,
as it is deployed there; `--fronts 0` serves everything from the ledger process). The no-op
baseline is one process: the ratio says what a ledger deployment on this machine serves against
what one aiohttp process serves. The ledger's CPU per bet counts its fronts too.

Every server logs at `--log-level` (default `info`, the services' default): the no-op writes the
`http_request` line of each request, the ledger that line and the `ledger_action` line of each bet,
as in production. (The ledger once ran its benchmark at `warning`, writing no line per request while
the no-op wrote one: its ratio to the no-op flattered it.)

After each ledger run the chain is verified (POST /admin/v1/audit/verify) and the growth of the
journal head (GET /admin/v1/replication, once settled) is compared with the bets seen committed, so the figure
counts real commits; once the ledger stopped, its derived rows (balances included) are compared with
a rebuild from its journal, and it holds exactly one `bets` row per bet journaled (on either backend).
The last line printed is one JSON object with every figure, ratio and target.

    .venv/bin/python bench/ledger_throughput.py [--seconds 10] [--connections 64] [--players 1000]
        [--modes noop,ledger,single,batch,hot] [--backends sqlite,postgres] [--log-level info] [--quick]
        [--rounds 1] [--fronts 1] [--ledger-set KEY=VALUE ...]

`--ledger-set` gives every ledger the run starts one more `[ledger]` setting (repeatable; the
value is read as TOML, e.g. `derived_flush_groups=8`), to try a setting without editing code.

`--rounds N` runs every mode N times over, in turn, so that a burst of other work on the machine
falls on one round of each mode rather than on one mode: each mode's round of median throughput
is reported and the ratios and targets are taken from those; `rounds` lists every round's figures,
and an error in any round fails the run.

`--quick` is a smoke run (2 s per mode after 1 s of warm-up, 100 players, 16 connections, modes
ledger and batch) whose figures mean little; explicit options still win over it.

Exit status 1 if a run had errors (non-2xx, socket errors) or failed verification; missed
targets are reported (`targets_met`) but are not errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from shared.auth import new_token
from shared.config import LOG_LEVELS

from common import WRK_DIR, WrkResult, ledger_settings, load_average, median_by, process_tree_cpu_s, run_wrk
from core_ledger.journal_checks import rebuild_differences, verify_store
from core_ledger.store import SqliteStore, Store
from core_ledger.store.postgres import PostgresStore
from harness.cluster import JACKPOT_GAMES, JACKPOT_ID, Cluster
from harness.launcher import ServiceProcess, free_port
from harness.postgres import SOCKET_PATH_MAX, LocalPostgres
from ledger_metrics import ledger_samples, store_figures
from pg_local import BENCH_SETTINGS, start_with_warm_wal

NOOP_SERVER = Path(__file__).resolve().parent / "noop_server.py"
BETS_SCRIPT = WRK_DIR / "bets.lua"
CURRENCY = "EUR"
GAME_IDS = (*JACKPOT_GAMES, "roulette-1")  # two of three bets feed the jackpot, as in slot-heavy play
BET_MINOR = 100
DEPOSIT_MINOR = 10**9  # far more than any run can bet: no bet is refused for funds
SEED_CONCURRENCY = 32  # seeding requests in flight
HTTP_TIMEOUT_S = 120.0  # seeding calls and the chain verification of a long journal
READY_TIMEOUT_S = 40.0
SETTLE_POLL_S = 0.2  # the head is settled when two reads this far apart agree
SETTLE_POLLS_MAX = 100
BUSY_LOAD_PER_CPU = 0.5  # a 1-minute load above this per CPU before a run: others' work skews the figures
TARGETS = {
    "ledger_vs_noop_min": 0.5,  # issue 12 (an earlier aim was 0.7)
    "ledger_vs_single_min": 3.0,
    "ledger_p99_ms_max": 25.0,
    "batch_bets_per_s_min": 15_000.0,
    "hot_bets_per_s_min": 5_900.0,
    "pg_vs_sqlite_min": 0.9,  # issue 12: PostgreSQL's bets/s at least 0.9 of SQLite's, same run, same load
}
MODES = ("noop", "ledger", "single", "batch", "hot")
LEDGER_MODES = ("ledger", "single", "batch", "hot")  # run on every backend; noop has no store
BACKENDS = ("sqlite", "postgres")
PG_SETTINGS = BENCH_SETTINGS  # durable: fsync, synchronous_commit, full_page_writes on (see pg_local.py)
PG_SCHEMA = "ledger"  # the schema a Cluster gives its ledger copy "ledger"
FULL = {"seconds": 10.0, "warmup_seconds": 3.0, "connections": 64, "players": 1000, "modes": ",".join(MODES)}
QUICK = {"seconds": 2.0, "warmup_seconds": 1.0, "connections": 16, "players": 100, "modes": "ledger,batch"}
BATCH_SIZE = 100  # bets per POST /v1/batch
# The ledger as deployed on a machine of several cores: one front process serving the money routes'
# HTTP beside the ledger process (docs/decisions/front-processes-serve-the-money-routes.md).
DEFAULT_FRONTS = min(1, (os.cpu_count() or 1) - 1)
BATCH_CONNECTIONS = 8  # batches in flight
BETS_PER_ROUND = 5  # as bets.lua
HOT_PLAYERS = 50  # the peer ledger's benchmark: 50 funded accounts...
HOT_CONNECTIONS = 16  # ...from 16 clients


@dataclass(frozen=True)
class Options:
    seconds: float
    warmup_seconds: float
    connections: int
    threads: int
    players: int
    root: Path
    keep_dir: bool  # --dir given: keep what the run wrote; else a temporary dir removed after a clean run
    modes: tuple[str, ...] = MODES
    backends: tuple[str, ...] = BACKENDS
    log_level: str = "info"  # of every server the run starts: the no-op and the ledger alike
    rounds: int = 1  # the modes run this many times over, alternated; each mode's median round is reported
    fronts: int = 0  # the ledger's `fronts` (processes serving the money routes' HTTP beside the writer's)
    ledger_settings: dict[str, Any] = field(default_factory=dict)  # --ledger-set: more [ledger] settings


def wrk_bets(url: str, token_file: Path, prefix: str, opts: Options, seconds: float) -> WrkResult:
    args = [str(token_file), prefix, str(opts.players), ",".join(GAME_IDS), str(BET_MINOR)]
    return run_wrk(
        url,
        script=BETS_SCRIPT,
        script_args=args,
        threads=opts.threads,
        connections=opts.connections,
        duration_s=seconds,
    )


class CpuMeter:
    """CPU time of the server process and its children (a ledger's fronts; the no-op server has
    none), and of its database server if any, from now on."""

    def __init__(self, pid: int, database_pid: int | None = None) -> None:
        self.pid, self.database_pid = pid, database_pid
        self.server_before = process_tree_cpu_s(pid)
        self.database_before = None if database_pid is None else process_tree_cpu_s(database_pid)

    def figures(self, ok: int) -> dict[str, float | None]:
        """CPU seconds used since, and per 2xx answer (`ok` of them) in milliseconds."""
        cpu_s = process_tree_cpu_s(self.pid) - self.server_before
        out: dict[str, float | None] = {
            "server_cpu_s": round(cpu_s, 2),
            "server_cpu_ms_per_ok": round(1000 * cpu_s / ok, 4) if ok else None,
        }
        if self.database_pid is not None and self.database_before is not None:
            db_s = process_tree_cpu_s(self.database_pid) - self.database_before
            out["database_cpu_s"] = round(db_s, 2)
            out["database_cpu_ms_per_ok"] = round(1000 * db_s / ok, 4) if ok else None
        return out


async def measured_run(
    pid: int, url: str, token_file: Path, opts: Options, database_pid: int | None = None
) -> tuple[WrkResult, dict[str, float | None]]:
    """The measured wrk run, and the server's (and its database's) CPU time per 2xx answer during it."""
    meter = CpuMeter(pid, database_pid)
    result = await asyncio.to_thread(wrk_bets, url, token_file, "run", opts, opts.seconds)
    return result, meter.figures(result.ok)


async def run_noop(opts: Options) -> dict[str, Any]:
    root = opts.root / "noop"
    root.mkdir(parents=True)
    token_file = root / "edge.token"
    token_file.write_text(new_token())
    token_file.chmod(0o600)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = ServiceProcess(
        "noop",
        [
            sys.executable,
            str(NOOP_SERVER),
            "--port",
            str(port),
            "--token-file",
            str(token_file),
            "--log-level",
            opts.log_level,
        ],
        log_path=root / "noop.log",
        cwd=root,
    )
    try:
        server.start()
        await server.wait_ready(url + "/healthz", timeout_s=READY_TIMEOUT_S)
        warm = await asyncio.to_thread(wrk_bets, url, token_file, "warm", opts, opts.warmup_seconds)
        result, cpu = await measured_run(server.pid, url, token_file, opts)
    finally:
        await asyncio.to_thread(server.stop)
    return {"warmup_errors": warm.errors, **result.figures(), **cpu, "errors": result.errors}


async def seed_players(cluster: Cluster, players: int) -> None:
    """The jackpot of the slot games, then `players` funded players, SEED_CONCURRENCY at a time."""
    ledger = cluster.url("ledger")
    admin, cashier = cluster.headers("admin_write"), cluster.headers("cashier")
    limit = asyncio.Semaphore(SEED_CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(raise_for_status=True, timeout=timeout) as http:
        await http.post(
            f"{ledger}/admin/v1/jackpots",
            headers=admin,
            json={
                "jackpot_id": JACKPOT_ID,
                "currency": CURRENCY,
                "seed_minor": 100_000,
                "contribution_ppm": 10_000,
                "game_ids": list(JACKPOT_GAMES),
            },
        )

        async def one(i: int) -> None:
            pid = f"bench-p{i}"  # the naming bets.lua uses
            async with limit:
                await http.post(
                    f"{ledger}/admin/v1/players", headers=admin, json={"player_id": pid, "currencies": [CURRENCY]}
                )
                await http.post(
                    f"{ledger}/v1/deposits",
                    headers=cashier,
                    json={
                        "id": f"bench-dep-{pid}",
                        "player_id": pid,
                        "currency": CURRENCY,
                        "amount_minor": DEPOSIT_MINOR,
                    },
                )

        await asyncio.gather(*(one(i) for i in range(players)))


async def admin_call(cluster: Cluster, method: str, path: str, *, timeout_s: float = HTTP_TIMEOUT_S) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with (
        aiohttp.ClientSession(raise_for_status=True, timeout=timeout) as http,
        http.request(method, cluster.url("ledger") + path, headers=cluster.headers("admin_read")) as answer,
    ):
        return await answer.json()


async def settled_head(cluster: Cluster) -> int:
    """The journal head sequence once it stops moving: bets still queued when wrk stopped commit
    after it, and they must count in the run they belong to."""
    last = -1
    for _ in range(SETTLE_POLLS_MAX):
        head = (await admin_call(cluster, "GET", "/admin/v1/replication"))["head"]["sequence"]
        if head == last:
            return head
        last = head
        await asyncio.sleep(SETTLE_POLL_S)
    raise RuntimeError(f"the journal head still moves after {SETTLE_POLLS_MAX * SETTLE_POLL_S:g}s")


def commit_check(result: WrkResult, before: int, after: int, audit: dict[str, Any], connections: int) -> dict[str, Any]:
    """Did the journal grow by the bets wrk saw committed, and does the chain verify? A bet in
    flight when wrk stopped may commit unseen (at most one per connection); nothing else writes."""
    committed = after - before
    seen = result.statuses.get(201, 0)
    return {
        "chain_ok": bool(audit["ok"]) and audit["head_sequence"] == after,
        "entries_checked": audit["entries_checked"],
        "journal_growth": committed,
        "committed_201_seen": seen,
        "commits_match": seen <= committed <= seen + connections,
    }


class BatchBets:
    """Batches of bets like bets.lua's (a random player per bet, rounds of BETS_PER_ROUND bets),
    ids unique per run prefix and driver."""

    def __init__(self, prefix: str, players: int, seed: int) -> None:
        self.prefix, self.players, self.rng = prefix, players, random.Random(seed)
        self.count, self.by_player = 0, [0] * players

    def body(self, size: int) -> dict[str, Any]:
        actions = []
        for _ in range(size):
            p = self.rng.randrange(self.players)
            n, self.count = self.by_player[p], self.count + 1
            self.by_player[p] += 1
            r = n // BETS_PER_ROUND
            actions.append(
                {
                    "op": "bet",
                    "body": {
                        "id": f"{self.prefix}-{self.count}",
                        "player_id": f"bench-p{p}",
                        "currency": CURRENCY,
                        "amount_minor": BET_MINOR,
                        "round_id": f"{self.prefix}-p{p}-r{r}",
                        "game_id": GAME_IDS[(p + r) % len(GAME_IDS)],
                    },
                }
            )
        return {"actions": actions}


WRONG_ANSWER = 0  # counted under this status: a 201 whose body is not a committed bet


def batch_statuses(status: int, answer: Any, size: int) -> tuple[dict[int, int], str | None]:
    """Each action's status (a committed bet counts as 201, anything else as what it was) and the
    first problem (None: all `size` actions are committed bets)."""
    results = answer.get("results") if status == 200 and isinstance(answer, dict) else None
    if not isinstance(results, list) or len(results) != size:
        return {status if status != 200 else WRONG_ANSWER: size}, f"{status}, {size} actions: {str(answer)[:200]}"
    counts: dict[int, int] = {}
    problem = None
    for item in results:
        body = item.get("body") if isinstance(item, dict) else None
        tx = body.get("transaction") if isinstance(body, dict) else None
        committed = (
            item.get("status") == 201
            and isinstance(tx, dict)
            and tx.get("outcome") == "committed"
            and tx.get("type") == "bet"
        )
        code = 201 if committed else (WRONG_ANSWER if item.get("status") == 201 else int(item.get("status", 0)))
        counts[code] = counts.get(code, 0) + 1
        if not committed and problem is None:
            problem = f"an action answered {str(item)[:200]}"
    return counts, problem


async def drive_batches(
    url: str,
    token: str,
    prefix: str,
    players: int,
    seconds: float,
    connections: int = BATCH_CONNECTIONS,
    size: int = BATCH_SIZE,
) -> WrkResult:
    """POST /v1/batch for `seconds` from `connections` loops; every result of every answer checked.
    Counted per bet (statuses of the actions); latencies are those of whole requests."""
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    first_error: list[str] = []
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    started = time.perf_counter()
    deadline = started + seconds

    async def loop(http: aiohttp.ClientSession, bets: BatchBets) -> None:
        while time.perf_counter() < deadline:
            body = bets.body(size)
            sent = time.perf_counter()
            async with http.post(f"{url}/v1/batch", json=body, headers=headers) as answer:
                payload = await answer.json(content_type=None)
                status = answer.status
            latencies.append(time.perf_counter() - sent)
            counts, problem = batch_statuses(status, payload, size)
            for code, n in counts.items():
                statuses[code] = statuses.get(code, 0) + n
            if problem is not None and not first_error:
                first_error.append(problem)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        await asyncio.gather(*(loop(http, BatchBets(f"{prefix}{i}", players, i)) for i in range(connections)))
    latencies.sort()

    def pct(q: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 3) if latencies else 0.0

    mean = round(1000 * sum(latencies) / len(latencies), 3) if latencies else 0.0
    return WrkResult(
        duration_s=time.perf_counter() - started,
        requests=sum(statuses.values()),
        statuses=statuses,
        socket_errors={},
        latency_ms={
            "mean": mean,
            "max": pct(1.0),
            "p50": pct(0.5),
            "p90": pct(0.9),
            "p99": pct(0.99),
            "p999": pct(0.999),
        },
        first_error=first_error[0] if first_error else None,
    )


async def offline_check(where: Path | Store) -> dict[str, Any]:
    """Once the ledger stopped: the chain, its derived rows (balances included) against a rebuild
    from the journal, and one `bets` row per bet journaled (no duplicate). `where` is a SQLite
    ledger file or a store not yet opened (a PostgreSQL schema); it is closed again after."""
    store = SqliteStore(where, allow_migration=False) if isinstance(where, Path) else where
    await store.open()
    try:
        chain = await verify_store(store)
        differences = await rebuild_differences(store)
        bet_rows = len(await store.dump("bets"))
        journaled_bets = sum(
            1 for _, text in await store.journal(0, chain["head_sequence"] + 1) if '"type":"bet"' in text
        )
    finally:
        await store.close()
    return {
        "offline_chain_ok": chain["ok"],
        "tables_equal_rebuild": not differences,
        "tables_differing": differences,
        "bet_rows": bet_rows,
        "journaled_bets": journaled_bets,
        "one_row_per_bet": bet_rows == journaled_bets,
    }


def database_dir(root: Path) -> Path:
    """Where a mode's PostgreSQL lives: `root/postgres`, or a short temporary directory (removed
    after the mode) when that path is too long for the server's unix socket."""
    inside = root.resolve() / "postgres"
    if len(str(inside)) <= SOCKET_PATH_MAX:
        return inside
    return Path(tempfile.mkdtemp(prefix="croupier-pg-"))


def postmaster_pid(database: LocalPostgres) -> int:
    """The pid of a running local PostgreSQL's postmaster (first line of postmaster.pid)."""
    return int((database.data_dir / "postmaster.pid").read_text().split()[0])


async def run_ledger(
    opts: Options, *, group_commit: bool, name: str | None = None, batch: bool = False, backend: str = "sqlite"
) -> dict[str, Any]:
    """One ledger mode on `backend`: a cluster of its own (and on PostgreSQL a server of its own,
    stopped after the offline check), warm-up, the measured run, then the checks."""
    name = name or ("ledger" if group_commit else "single")
    root = opts.root / (name if backend == "sqlite" else f"{name}-{backend}")
    database = LocalPostgres(database_dir(root), settings=PG_SETTINGS) if backend == "postgres" else None
    cluster = Cluster(
        root,
        edge_ids=(),
        group_commit=group_commit,
        log_level=opts.log_level,
        backend=backend,
        database=database,
        ledger_fronts=opts.fronts,
        ledger_settings=opts.ledger_settings,
    )
    try:
        if database is not None:
            await asyncio.to_thread(start_with_warm_wal, database)  # as a server in service: see pg_local.py
        try:
            await cluster.start()
            await seed_players(cluster, opts.players)
            token_file = cluster.root / "secrets" / "edge.token"
            url = cluster.url("ledger")
            ledger_proc = cluster.services["ledger"].proc
            assert ledger_proc is not None
            database_pid = None if database is None else postmaster_pid(database)
            if batch:
                token = token_file.read_text().strip()
                warm = await drive_batches(url, token, "warm", opts.players, opts.warmup_seconds)
                before = await settled_head(cluster)
                samples_before = await ledger_samples(cluster)
                meter = CpuMeter(ledger_proc.pid, database_pid)
                result = await drive_batches(url, token, "run", opts.players, opts.seconds)
                cpu = meter.figures(result.ok)
            else:
                warm = await asyncio.to_thread(wrk_bets, url, token_file, "warm", opts, opts.warmup_seconds)
                before = await settled_head(cluster)
                samples_before = await ledger_samples(cluster)
                result, cpu = await measured_run(ledger_proc.pid, url, token_file, opts, database_pid)
            after = await settled_head(cluster)
            store = store_figures(samples_before, await ledger_samples(cluster))  # the window of `before`..`after`
            audit = await admin_call(cluster, "POST", "/admin/v1/audit/verify")
        finally:
            await cluster.stop()
        # The Python driver waits for every answer it sent: the journal grows by exactly what it saw.
        check = commit_check(result, before, after, audit, 0 if batch else opts.connections)
        stored: Path | Store = (
            cluster.root / "ledger-data" / "ledger.db"
            if database is None
            else PostgresStore(database.dsn, schema=PG_SCHEMA, allow_migration=False, create=False)
        )
        check.update(await offline_check(stored))
    finally:
        if database is not None:
            await asyncio.to_thread(database.stop)
            if not database.root.is_relative_to(opts.root):
                shutil.rmtree(database.root, ignore_errors=True)
    good = (
        check["chain_ok"]
        and check["commits_match"]
        and check["offline_chain_ok"]
        and check["tables_equal_rebuild"]
        and check["one_row_per_bet"]
    )
    bad = result.errors + (0 if good else 1)
    return {"warmup_errors": warm.errors, **result.figures(), **cpu, "store": store, "errors": bad, "verify": check}


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None


def postgres_figures(sqlite: dict[str, dict[str, Any]], pg: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The `pg_*` keys: PostgreSQL's figures of each ledger mode, and its ratio to SQLite's of the
    same mode in the same run (None where a side did not run)."""
    ledger, batch = pg.get("ledger"), pg.get("batch")

    def get(mode: dict[str, Any] | None, key: str) -> Any:
        return mode.get(key) if mode else None

    def both(name: str) -> float | None:
        a, b = pg.get(name), sqlite.get(name)
        return ratio(a["ok_per_s"], b["ok_per_s"]) if a and b else None

    total = None
    if ledger and ledger["server_cpu_ms_per_ok"] is not None and ledger.get("database_cpu_ms_per_ok") is not None:
        total = round(ledger["server_cpu_ms_per_ok"] + ledger["database_cpu_ms_per_ok"], 4)
    return {
        "pg_bets_per_s": get(ledger, "ok_per_s"),
        "pg_p50_ms": get(ledger, "p50_ms"),
        "pg_p99_ms": get(ledger, "p99_ms"),
        "pg_cpu_ms_per_bet": get(ledger, "server_cpu_ms_per_ok"),  # the ledger process, as on SQLite
        "pg_database_cpu_ms_per_bet": get(ledger, "database_cpu_ms_per_ok"),  # the PostgreSQL server
        "pg_total_cpu_ms_per_bet": total,
        "ratio_pg_vs_sqlite": both("ledger"),
        "pg_single_bets_per_s": get(pg.get("single"), "ok_per_s"),
        "ratio_pg_vs_sqlite_single": both("single"),
        "pg_batch_bets_per_s": get(batch, "ok_per_s"),
        "pg_batch_p99_ms": get(batch, "p99_ms"),
        "ratio_pg_vs_sqlite_batch": both("batch"),
        "pg_hot_bets_per_s": get(pg.get("hot"), "ok_per_s"),
        "ratio_pg_vs_sqlite_hot": both("hot"),
    }


def summarize(
    modes: dict[str, dict[str, Any]],
    opts: Options,
    load_before: float,
    pg_modes: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Figures of the modes that ran (a key is None when its mode did not run). `modes` holds the
    no-op server and the ledger modes on SQLite, `pg_modes` the ledger modes on PostgreSQL."""
    pg_modes = pg_modes or {}
    noop, ledger, single = modes.get("noop"), modes.get("ledger"), modes.get("single")
    batch, hot = modes.get("batch"), modes.get("hot")

    def ok_per_s(mode: dict[str, Any] | None) -> float:
        return mode["ok_per_s"] if mode else 0.0

    def cpu(mode: dict[str, Any] | None) -> float:
        return (mode["server_cpu_ms_per_ok"] or 0) if mode else 0.0

    vs_noop = ratio(ok_per_s(ledger), ok_per_s(noop))
    vs_single = ratio(ok_per_s(ledger), ok_per_s(single))
    pg = postgres_figures(modes, pg_modes)
    # (met, judged): only a target whose modes ran is judged
    targets = {
        "ledger_vs_noop": (
            vs_noop is not None and vs_noop >= TARGETS["ledger_vs_noop_min"],
            "ledger" in modes and "noop" in modes,
        ),
        "ledger_vs_single": (
            vs_single is not None and vs_single >= TARGETS["ledger_vs_single_min"],
            "ledger" in modes and "single" in modes,
        ),
        "ledger_p99": (ledger is not None and ledger["p99_ms"] < TARGETS["ledger_p99_ms_max"], "ledger" in modes),
        "batch_bets_per_s": (ok_per_s(batch) >= TARGETS["batch_bets_per_s_min"], "batch" in modes),
        "hot_bets_per_s": (ok_per_s(hot) >= TARGETS["hot_bets_per_s_min"], "hot" in modes),
        "pg_vs_sqlite": (
            (pg["ratio_pg_vs_sqlite"] or 0) >= TARGETS["pg_vs_sqlite_min"],
            "ledger" in modes and "ledger" in pg_modes,
        ),
    }
    met = {name: ok for name, (ok, judged) in targets.items() if judged}
    return {
        "benchmark": "ledger_throughput",
        "backends": list(opts.backends),
        "bets_per_s": ledger["ok_per_s"] if ledger else None,
        "p50_ms": ledger["p50_ms"] if ledger else None,
        "p99_ms": ledger["p99_ms"] if ledger else None,
        "cpu_ms_per_bet": ledger["server_cpu_ms_per_ok"] if ledger else None,
        "ratio_ledger_vs_noop": vs_noop,
        "ratio_ledger_vs_single": vs_single,
        # CPU per bet over CPU per no-op answer: what the ledger's own work costs, steadier than
        # the throughput ratio when other work shares the machine.
        "cpu_per_ok_ledger_vs_noop": ratio(cpu(ledger), cpu(noop)),
        "batch_bets_per_s": batch["ok_per_s"] if batch else None,
        "batch_p99_ms": batch["p99_ms"] if batch else None,  # of a whole request of BATCH_SIZE bets
        "ratio_batch_vs_ledger": ratio(ok_per_s(batch), ok_per_s(ledger)),
        "hot_bets_per_s": hot["ok_per_s"] if hot else None,
        "hot_p99_ms": hot["p99_ms"] if hot else None,
        **pg,
        "targets": TARGETS,
        "targets_met": met,
        "all_targets_met": all(met.values()),
        "errors": run_errors(modes, pg_modes),
        "modes": modes,
        "postgres_modes": pg_modes,
        "setup": {
            "seconds": opts.seconds,
            "warmup_seconds": opts.warmup_seconds,
            "threads": opts.threads,
            "connections": opts.connections,
            "players": opts.players,
            "games": list(GAME_IDS),
            "bet_minor": BET_MINOR,
            "batch_size": BATCH_SIZE,
            "batch_connections": BATCH_CONNECTIONS,
            "hot_players": HOT_PLAYERS,
            "hot_connections": HOT_CONNECTIONS,
            "ledger_fronts": opts.fronts,
            "ledger_settings": opts.ledger_settings,
            "postgres_settings": PG_SETTINGS if pg_modes else None,
            "log_level": opts.log_level,
            "load_average_1m_before": load_before,
            "load_average_1m_after": load_average(),
            "cpus": os.cpu_count(),
            "machine_busy": machine_busy(load_before),
        },
    }


def machine_busy(load: float) -> bool:
    return load > BUSY_LOAD_PER_CPU * (os.cpu_count() or 1)


def print_mode(name: str, figures: dict[str, Any]) -> None:
    line = (
        f"{name:10s} {figures['ok_per_s']:9.1f} ok/s   p50 {figures['p50_ms']:7.2f} ms   "
        f"p99 {figures['p99_ms']:7.2f} ms   cpu/ok {figures['server_cpu_ms_per_ok']} ms"
    )
    if "database_cpu_ms_per_ok" in figures:
        line += f" (+ database {figures['database_cpu_ms_per_ok']} ms)"
    line += f"   requests {figures['requests']}   non-2xx {figures['non_2xx']}"
    store = figures.get("store", {})  # ledger modes only
    commits, group = store.get("commits"), store.get("commit_group")
    if commits and commits["mean"] is not None and group and group["mean"] is not None:
        line += f"   commits {commits['count']} of {group['mean']:.1f} bets, {commits['mean'] * 1000:.2f} ms each"
    if "verify" in figures:
        v = figures["verify"]
        line += (
            f"   chain {'ok' if v['chain_ok'] else 'BROKEN'}, journal +{v['journal_growth']} "
            f"({'matches' if v['commits_match'] else 'DOES NOT MATCH'} {v['committed_201_seen']} seen), "
            f"rebuild {'equal' if v['tables_equal_rebuild'] else 'DIFFERS'}, "
            f"{'one row per bet' if v['one_row_per_bet'] else 'BET ROWS DIFFER FROM THE JOURNAL'}"
        )
    print(line, flush=True)
    if figures["errors"] or figures["warmup_errors"]:
        print(
            f"        ERRORS: {figures['errors']} in the run, {figures['warmup_errors']} in warm-up; "
            f"first: {figures['first_error']}",
            flush=True,
        )


async def run(opts: Options) -> dict[str, Any]:
    load_before = load_average()
    print(
        f"ledger throughput: wrk -t{opts.threads} -c{opts.connections}, {opts.seconds:g}s per mode "
        f"after {opts.warmup_seconds:g}s warm-up, {opts.players} players, backends {','.join(opts.backends)}; "
        f"load average {load_before}",
        flush=True,
    )
    if machine_busy(load_before):
        print(
            f"WARNING: the machine is busy (load {load_before} on {os.cpu_count()} CPUs): "
            "the figures, ratios included, are not representative",
            flush=True,
        )
    rounds: list[tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]] = []
    for number in range(1, opts.rounds + 1):
        if opts.rounds > 1:
            print(f"round {number} of {opts.rounds}", flush=True)
        rounds.append(await run_round(replace(opts, root=opts.root / f"round-{number}") if opts.rounds > 1 else opts))
    summary = summarize(median_round([m for m, _ in rounds]), opts, load_before, median_round([p for _, p in rounds]))
    if opts.rounds > 1:
        summary["errors"] = sum(run_errors(sqlite, pg) for sqlite, pg in rounds)
        summary["rounds"] = [
            {
                label: {"ok_per_s": m["ok_per_s"], "p99_ms": m["p99_ms"]}
                for label, m in (*sqlite.items(), *((f"pg {k}", v) for k, v in pg.items()))
            }
            for sqlite, pg in rounds
        ]
    return summary


async def run_round(opts: Options) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every mode once, in order: the SQLite (and no-op) figures, and PostgreSQL's."""
    modes: dict[str, dict[str, Any]] = {}
    pg_modes: dict[str, dict[str, Any]] = {}
    hot = replace(opts, players=min(opts.players, HOT_PLAYERS), connections=HOT_CONNECTIONS)

    def runner(name: str, backend: str) -> Any:
        if name == "noop":
            return run_noop(opts)
        if name == "hot":
            return run_ledger(hot, group_commit=True, name="hot", backend=backend)
        return run_ledger(opts, group_commit=name != "single", name=name, batch=name == "batch", backend=backend)

    for name in opts.modes:
        # Each ledger mode on one backend right after the other: the same load, the same moment.
        for backend in opts.backends if name in LEDGER_MODES else ("sqlite",):
            if backend == "sqlite":
                modes[name] = await runner(name, backend)
                print_mode(name, modes[name])
            else:
                pg_modes[name] = await runner(name, backend)
                print_mode(f"pg {name}", pg_modes[name])
    return modes, pg_modes


def run_errors(*runs: dict[str, dict[str, Any]]) -> int:
    """Errors of every mode of these runs, in warm-up and measured alike."""
    return sum(m["errors"] + m["warmup_errors"] for modes in runs for m in modes.values())


def median_round(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Of each mode, the round of median throughput, its latencies, CPU and checks with it."""
    names = list(rounds[0]) if rounds else []
    return {name: median_by([r[name] for r in rounds if name in r], lambda mode: mode["ok_per_s"]) for name in names}


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, help=f"measured seconds per mode (1..600; {FULL['seconds']:g})")
    parser.add_argument(
        "--warmup-seconds", type=float, help=f"warm-up seconds per mode (1..60; {FULL['warmup_seconds']:g})"
    )
    parser.add_argument("--connections", type=int, help=f"wrk connections (1..1024; {FULL['connections']})")
    parser.add_argument("--threads", type=int, default=1, choices=(1, 2), help="wrk threads")
    parser.add_argument("--players", type=int, help=f"funded players bets spread over (1..100000; {FULL['players']})")
    parser.add_argument("--dir", type=Path, default=None, help="where configs, data and logs go (default: temp)")
    parser.add_argument("--modes", help=f"comma-separated, among {','.join(MODES)} (default all)")
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"comma-separated, among {','.join(BACKENDS)}: where the ledger modes run (default both)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=LOG_LEVELS,
        help="of the no-op server and the ledger alike (default info, as the services run)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the modes this many times over (1..9), alternated; each mode's median round is reported",
    )
    parser.add_argument(
        "--fronts",
        type=int,
        default=DEFAULT_FRONTS,
        help="the ledger's front processes in every ledger mode (0..4; default "
        f"{DEFAULT_FRONTS}: the machine's cores minus one, at most one; 0: one process serves all)",
    )
    parser.add_argument(
        "--ledger-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [ledger] setting for every ledger the run starts (repeatable; VALUE as TOML, e.g. "
        "derived_flush_groups=8): to try a setting without editing code",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: " + ", ".join(f"{k} {v}" for k, v in QUICK.items()) + " (explicit options win)",
    )
    a = parser.parse_args(argv)
    for key, value in (QUICK if a.quick else FULL).items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    modes = tuple(m for m in a.modes.split(",") if m)
    if not modes or not set(modes) <= set(MODES) or len(set(modes)) != len(modes):
        parser.error(f"--modes: distinct names among {','.join(MODES)}")
    backends = tuple(b for b in a.backends.split(",") if b)
    if not backends or not set(backends) <= set(BACKENDS) or len(set(backends)) != len(backends):
        parser.error(f"--backends: distinct names among {','.join(BACKENDS)}")
    bounds = {"seconds": (1, 600), "warmup_seconds": (1, 60), "connections": (1, 1024), "players": (1, 100_000)}
    bounds["rounds"] = (1, 9)
    bounds["fronts"] = (0, 4)
    for name, (low, high) in bounds.items():
        if not low <= getattr(a, name) <= high:
            parser.error(f"--{name.replace('_', '-')} must be within {low}..{high}")
    try:
        settings = ledger_settings(a.ledger_set)
    except ValueError as e:
        parser.error(f"--ledger-set: {e}")
    root = (a.dir or Path(tempfile.mkdtemp(prefix="croupier-bench-"))).resolve()
    return Options(
        a.seconds,
        a.warmup_seconds,
        a.connections,
        a.threads,
        a.players,
        root,
        keep_dir=a.dir is not None,
        modes=modes,
        backends=backends,
        log_level=a.log_level,
        rounds=a.rounds,
        fronts=a.fronts,
        ledger_settings=settings,
    )


def main() -> None:
    opts = parse_args()
    summary = asyncio.run(run(opts))
    met = summary["targets_met"]
    print(
        "targets: "
        + ", ".join(f"{name} {'met' if ok else 'MISSED'}" for name, ok in met.items())
        + f"  bets/s {summary['bets_per_s']}  p99 {summary['p99_ms']} ms  vs noop {summary['ratio_ledger_vs_noop']}x"
        f"  vs one-commit-per-bet {summary['ratio_ledger_vs_single']}x  batch {summary['batch_bets_per_s']} bets/s"
        f"  hot {summary['hot_bets_per_s']} bets/s"
        f"  postgres {summary['pg_bets_per_s']} bets/s (p99 {summary['pg_p99_ms']} ms,"
        f" {summary['ratio_pg_vs_sqlite']}x SQLite; batch {summary['pg_batch_bets_per_s']} bets/s)"
        + ("  (machine busy: not representative)" if summary["setup"]["machine_busy"] else ""),
        flush=True,
    )
    if opts.keep_dir or summary["errors"]:
        print(f"configs, data and logs kept in {opts.root}", flush=True)
    else:
        shutil.rmtree(opts.root)
    print(json.dumps(summary, sort_keys=True), flush=True)
    sys.exit(1 if summary["errors"] else 0)


if __name__ == "__main__":
    main()
