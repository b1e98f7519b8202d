"""Ledger writer cost per bet, without HTTP: CPU per thread and bytes written, in one process.

`ledger_throughput.py` measures the whole server over loopback, where the shared machine's noise
and the HTTP stack blur the ledger's own cost. This drives `LedgerService` on SQLite directly
(WAL, synchronous=FULL, group commit) with CONCURRENCY submitters of one bet each, shaped like
`bench/wrk/bets.lua` (funded players, small rounds, two of three games feed a jackpot), and reports
what a change to the domain or the store moves: CPU per bet of the event-loop thread and of each
SQLite thread (user and system), KiB written per bet (`wchar`: WAL, checkpoints) and bets/s, and
where the rows went: the bytes each table and index of the SQLite file holds, per journal entry
(`stored_bytes_per_entry`, from the `dbstat` table when SQLite was built with it).
After the run it verifies what it measured (`verify`): the chain, the derived rows against a rebuild
from the journal (balances equal the journal), and exactly one entry per bet (no duplicate, none lost).

    .venv/bin/python bench/ledger_writer.py [--bets 20000] [--players 1000] [--concurrency 64] [--postgres] [--keep DIR]
        [--wal-frames] [--steps]

`--players 50 --concurrency 16` is the shape of ledger_throughput.py's hot mode (the peer ledger's:
few players, few clients): small groups, where what a group costs, not what a bet costs, dominates.

With `--postgres` the same bets then run on a throwaway PostgreSQL (`pg_local.py`: fsync on) in the
same run: `pg_bets_per_s` and `ratio_pg_vs_sqlite` (that server's own CPU and writes are not counted).
With `--keep DIR` the SQLite database is copied to the new directory DIR after the run (to look at real rows).
With `--wal-frames` the measured bets run without checkpoints and the frames they append to the WAL
are counted per table and index (`wal_frames_per_bet`: where the pages a commit writes come from;
`written_kib_per_bet` then leaves out the checkpoints' copies, so compare it only with such runs).

With `--steps` the writer's steps (decide, evolve and its answer, sealing, the commit and its
parts) are timed in place around each call over the measured bets (`steps_per_bet`, microseconds of
wall time per bet, `bench/step_times.py`): where the time goes, exactly, for a few chosen calls,
where a profiler samples. The wrappers cost a little, so compare throughput only between runs
without it.

The last line printed is one JSON object with every figure. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sqlite3
import tempfile
import time
from contextlib import ExitStack, closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from shared import gc_tuning
from shared.auth import Principal

from core_ledger.domain import ADMIN_SCOPE, Command
from core_ledger.http import money_command
from core_ledger.journal_checks import rebuild_differences, verify_store
from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.store import SqliteStore, Store
from core_ledger.store.postgres import PostgresStore
from core_ledger.wal_checkpoints import WAL_CHECKPOINT_INTERVAL_S, WalCheckpointer
from core_ledger.writer import WriterLimits
from pg_local import local_postgres
from step_times import timed_steps

CONCURRENCY = 64  # bets in flight by default, as wrk's connections in ledger_throughput.py
GAME_IDS = ("slots-1", "slots-2", "roulette-1")
JACKPOT_GAMES = ["slots-1", "slots-2"]
BETS_PER_ROUND = 5
BET_MINOR = 100
DEPOSIT_MINOR = 10**9  # no bet is refused for funds
SEED_GROUP = 100  # players created (and funded) per submitted group
WARMUP_BETS = 3000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu_s() -> dict[str, tuple[float, float]]:
    """(user, system) CPU seconds of each thread of this process, by thread id."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out[tid] = (int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS)
    return out


def stored_bytes_per_entry(path: Path, entries: int) -> dict[str, float]:
    """Bytes of each table and index of the SQLite file `path` per journal entry, largest first
    ({} when this SQLite lacks the `dbstat` table). Where the rows go; what a commit WRITES is
    more (a page is written whole, and again when the WAL is checkpointed)."""
    with closing(sqlite3.connect(path)) as db:
        try:
            sizes = db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
        except sqlite3.OperationalError:  # built without SQLITE_ENABLE_DBSTAT_VTAB
            return {}
    return {str(name): round(size / entries, 1) for name, size in sizes if size / entries >= 1}


WAL_HEADER_BYTES, WAL_FRAME_HEADER_BYTES = 32, 24


def wal_frames_by_btree(path: Path, bets: int) -> dict[str, float]:
    """WAL frames per bet by the table or index whose page each frame holds, largest first: every
    frame of the WAL file `path`-wal (what a commit writes is one frame per page it touched; a
    checkpoint later copies each page once more). Pages are mapped to their B-tree through
    `dbstat` ({} when this SQLite lacks it)."""
    with open(f"{path}-wal", "rb") as f:
        header = f.read(WAL_HEADER_BYTES)
        page_size = int.from_bytes(header[8:12], "big")
        pages = []
        while len(frame := f.read(WAL_FRAME_HEADER_BYTES + page_size)) == WAL_FRAME_HEADER_BYTES + page_size:
            pages.append(int.from_bytes(frame[:4], "big"))
    with closing(sqlite3.connect(path)) as db:
        try:
            owner = dict(db.execute("SELECT pageno, name FROM dbstat").fetchall())
        except sqlite3.OperationalError:  # built without SQLITE_ENABLE_DBSTAT_VTAB
            return {}
    counts: dict[str, int] = {}
    for page in pages:
        name = str(owner.get(page, "(freed)"))
        counts[name] = counts.get(name, 0) + 1
    return {name: round(n / bets, 3) for name, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n / bets >= 0.005}


def written_bytes() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("wchar"))


class Bets:
    """Bet commands like bets.lua's: a random player per bet, rounds of BETS_PER_ROUND bets."""

    def __init__(self, players: int, prefix: str, seed: int) -> None:
        self.players, self.prefix, self.rng = players, prefix, random.Random(seed)
        self.count, self.by_player = 0, [0] * players
        self.edge = Principal("edge", "edge")

    def next(self) -> Command:
        p = self.rng.randrange(self.players)
        n, self.count = self.by_player[p], self.count + 1
        self.by_player[p] += 1
        r = n // BETS_PER_ROUND
        return money_command(
            "bet",
            {
                "id": f"{self.prefix}-{self.count}",
                "player_id": f"bench-p{p}",
                "currency": "EUR",
                "amount_minor": BET_MINOR,
                "round_id": f"{self.prefix}-p{p}-r{r}",
                "game_id": GAME_IDS[(p + r) % len(GAME_IDS)],
            },
            self.edge,
        )


def writer_service(store: Store) -> LedgerService:
    """The ledger's writer on `store`, without HTTP: default limits, the wall clock, own metrics."""
    return LedgerService(
        store, WriterLimits(), clock=lambda: datetime.now(UTC), metrics=LedgerMetrics(CollectorRegistry())
    )


async def seed(service: LedgerService, players: int) -> None:
    def admin(kind: str, fields: dict[str, Any], key: str) -> Command:
        return Command(kind, fields, "admin", (ADMIN_SCOPE, key))

    await service.submit(
        [
            admin(
                "jackpot_create",
                {
                    "jackpot_id": "mega",
                    "currency": "EUR",
                    "seed_minor": 100_000,
                    "contribution_ppm": 10_000,
                    "game_ids": JACKPOT_GAMES,
                },
                "mega",
            )
        ]
    )
    cashier = Principal("cashier", "cashier")
    for start in range(0, players, SEED_GROUP):
        ids = [f"bench-p{i}" for i in range(start, min(start + SEED_GROUP, players))]
        await service.submit([admin("player_create", {"player_id": p, "currencies": ["EUR"]}, p) for p in ids])
        await service.submit(
            [
                money_command(
                    "deposit",
                    {"id": f"dep-{p}", "player_id": p, "currency": "EUR", "amount_minor": DEPOSIT_MINOR},
                    cashier,
                )
                for p in ids
            ]
        )


async def drive(service: LedgerService, bets: Bets, total: int, concurrency: int = CONCURRENCY) -> None:
    """`total` bets, `concurrency` at a time, each submitted alone (as one HTTP request would be)."""
    left = [total]

    async def submitter() -> None:
        while left[0] > 0:
            left[0] -= 1
            [result] = await service.submit([bets.next()])
            assert isinstance(result, tuple) and result[0] == 201, result

    await asyncio.gather(*(submitter() for _ in range(concurrency)))


async def verify(service: LedgerService, players: int, bets: int) -> dict[str, Any]:
    """After the run: the chain verifies, every derived row (balances included) equals a rebuild
    from the journal, and the journal holds the seed and exactly one entry per bet submitted."""
    store = service.store
    chain = await verify_store(store)
    differences = await rebuild_differences(store)
    stored_bets = len(await store.dump("bets"))
    expected_head = 1 + 2 * players + bets  # the jackpot, each player created and funded, the bets
    ok = chain["ok"] and not differences and stored_bets == bets and chain["head_sequence"] == expected_head
    if not ok:
        raise RuntimeError(
            f"verification failed: chain {chain}, tables differing from the journal {differences}, "
            f"{stored_bets} bet rows for {bets} bets, head {chain['head_sequence']} != {expected_head}"
        )
    return {
        "ok": ok,
        "chain_ok": chain["ok"],
        "entries_checked": chain["entries_checked"],
        "tables_equal_rebuild": not differences,
        "bet_rows": stored_bets,
    }


async def run(
    total: int,
    players: int,
    root: Path,
    warmup: int = WARMUP_BETS,
    *,
    store: Store | None = None,
    concurrency: int = CONCURRENCY,
    wal_frames: bool = False,
    steps: bool = False,
) -> dict[str, Any]:
    """The bets on `store` (default: SQLite in `root`). With `wal_frames` (SQLite only) the measured
    bets run without checkpoints and what they appended to the WAL is counted by B-tree
    (`wal_frames_per_bet`); bytes written then leave out the checkpoints' copies. With `steps`
    (SQLite) the writer's steps are timed in place over the measured bets (`steps_per_bet`)."""
    sqlite_store: SqliteStore | None = None
    if store is None:
        store = sqlite_store = SqliteStore(root / "ledger.db")
    service = writer_service(store)
    await service.start()
    # The ledger's background WAL checkpoints, as it runs them (not while WAL frames are counted).
    checkpoints = None if wal_frames else WalCheckpointer.for_store(store, service.metrics, WAL_CHECKPOINT_INTERVAL_S)
    if checkpoints is not None:
        checkpoints.start()
    frames: dict[str, float] = {}
    timing, steps_per_bet = ExitStack(), {}
    try:
        step_times = timing.enter_context(timed_steps()) if steps else None
        await seed(service, players)
        await drive(service, Bets(players, "warm", 1), warmup, concurrency)
        if wal_frames and sqlite_store is not None:
            await sqlite_store._w.run(_no_checkpoints)  # the writer's connection: a bench-only reach inside
        # Derived rows the store holds behind the journal (core_ledger/store/held_rows.py): the warm-up's
        # written before measuring, the measured bets' written inside the measurement.
        await store.flush_derived()
        if step_times is not None:
            step_times.reset()
        cpu_before, written_before, started = thread_cpu_s(), written_bytes(), time.perf_counter()
        await drive(service, Bets(players, "run", 2), total, concurrency)
        await store.flush_derived()
        wall = time.perf_counter() - started
        written, cpu_after = written_bytes() - written_before, thread_cpu_s()
        if step_times is not None:
            steps_per_bet = step_times.per_bet(total)
            timing.close()  # the verification's calls are not the bets
        if wal_frames and sqlite_store is not None:
            frames = wal_frames_by_btree(root / "ledger.db", total)
        verified = await verify(service, players, warmup + total)
    finally:
        timing.close()
        if checkpoints is not None:
            await checkpoints.stop()
        await service.stop()
    main_tid = str(os.getpid())
    threads = {
        ("loop" if tid == main_tid else f"thread-{tid}"): {
            "user_ms_per_bet": round(1000 * (u - cpu_before.get(tid, (0, 0))[0]) / total, 4),
            "system_ms_per_bet": round(1000 * (s - cpu_before.get(tid, (0, 0))[1]) / total, 4),
        }
        for tid, (u, s) in cpu_after.items()
    }
    cpu = sum(t["user_ms_per_bet"] + t["system_ms_per_bet"] for t in threads.values())
    stored = {} if sqlite_store is None else stored_bytes_per_entry(root / "ledger.db", service.head.sequence)
    return {
        "benchmark": "ledger_writer",
        "bets": total,
        "players": players,
        "concurrency": concurrency,
        "bets_per_s": round(total / wall, 1),
        "cpu_ms_per_bet": round(cpu, 4),
        "written_kib_per_bet": round(written / 1024 / total, 2),
        "head_sequence": service.head.sequence,
        "threads": threads,
        "verify": verified,
        "stored_bytes_per_entry": stored,
        "load_average_1m": os.getloadavg()[0],
        **({"steps_per_bet": steps_per_bet} if steps_per_bet else {}),
        **(
            {"wal_frames_per_bet": frames, "wal_frames_total_per_bet": round(sum(frames.values()), 2)} if frames else {}
        ),
    }


def _no_checkpoints(db: sqlite3.Connection) -> None:
    """Checkpoint the WAL now (it restarts from its start), then never during the measured bets."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("PRAGMA wal_autocheckpoint=0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bets", type=int, default=20_000, help="measured bets (1000..1000000)")
    parser.add_argument("--players", type=int, default=1000, help="funded players (1..100000)")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="bets in flight (1..1024)")
    parser.add_argument("--postgres", action="store_true", help="also run on a throwaway PostgreSQL (fsync on)")
    parser.add_argument(
        "--keep", type=Path, help="a new directory to keep the SQLite database in (to look at its rows)"
    )
    parser.add_argument(
        "--wal-frames",
        action="store_true",
        help="no checkpoint during the measured bets; count the WAL frames they wrote per table and index",
    )
    parser.add_argument(
        "--steps",
        action="store_true",
        help="time the writer's steps in place (decide, evolve, seal, the commit's parts) per bet",
    )
    args = parser.parse_args()
    if not (1000 <= args.bets <= 1_000_000 and 1 <= args.players <= 100_000 and 1 <= args.concurrency <= 1024):
        parser.error("--bets, --players or --concurrency out of range")
    gc_tuning.tune_for_serving()  # as `croupier ledger serve` runs
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep {args.keep}: already exists")
    with tempfile.TemporaryDirectory(prefix="ledger-writer-") as tmp:
        figures = asyncio.run(
            run(
                args.bets,
                args.players,
                Path(tmp),
                concurrency=args.concurrency,
                wal_frames=args.wal_frames,
                steps=args.steps,
            )
        )
        if args.keep is not None:
            shutil.copytree(tmp, args.keep)
            figures["kept"] = str(args.keep / "ledger.db")
        if args.postgres:
            pg_root = Path(tempfile.mkdtemp(prefix="ledger-writer-pg-"))  # its own: the server's user enters it
            try:
                with local_postgres(pg_root) as dsn:
                    pg = asyncio.run(
                        run(
                            args.bets,
                            args.players,
                            Path(tmp),
                            store=PostgresStore(dsn, schema="bench"),
                            concurrency=args.concurrency,
                        )
                    )
            finally:
                shutil.rmtree(pg_root, ignore_errors=True)
            figures["pg_bets_per_s"] = pg["bets_per_s"]
            figures["ratio_pg_vs_sqlite"] = round(pg["bets_per_s"] / figures["bets_per_s"], 3)
            figures["postgres"] = {k: pg[k] for k in ("bets_per_s", "cpu_ms_per_bet", "threads", "verify")}
            print(
                f"postgres: bets/s {pg['bets_per_s']}  ratio to SQLite {figures['ratio_pg_vs_sqlite']}  "
                f"(this process's cpu/bet {pg['cpu_ms_per_bet']} ms)"
            )
    print(
        f"bets/s {figures['bets_per_s']}  cpu/bet {figures['cpu_ms_per_bet']} ms  "
        f"written/bet {figures['written_kib_per_bet']} KiB  verified: chain, rebuild, one entry per bet"
    )
    stored = list(figures["stored_bytes_per_entry"].items())[:12]
    print("stored bytes per journal entry: " + ", ".join(f"{name} {size:.0f}" for name, size in stored))
    if "wal_frames_per_bet" in figures:
        print(
            f"WAL frames per bet {figures['wal_frames_total_per_bet']} (no checkpoint while measuring): "
            + ", ".join(f"{name} {n}" for name, n in list(figures["wal_frames_per_bet"].items())[:12])
        )
    if "steps_per_bet" in figures:
        print("steps, wall time per bet (each includes those indented under it):")
        for label, step in figures["steps_per_bet"].items():
            indent = "  " * (1 + step["depth"])
            print(f"{indent}{label:{44 - len(indent)}s} {step['us_per_bet']:7.2f} us  ({step['calls']:,} calls)")
    for name, t in figures["threads"].items():
        print(f"  {name:14s} user {t['user_ms_per_bet']:.4f} ms/bet  system {t['system_ms_per_bet']:.4f} ms/bet")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
