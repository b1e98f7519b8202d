"""Finance reports over a large journal: what a report costs at 100k, 1M and 10M entries.

Reports read the report tables the writer maintains (`report_play_days`, `report_cash_days`: one
row per UTC day x currency x game x client), never the journal, so their cost should follow the
number of those rows, not the journal's length. This seeds a SQLite ledger per size through the
real writer (an in-process `LedgerService`: decide, evolve, seal, group commit of `--seed-group`
commands), with a clock that moves so the entries spread over `--days` UTC days, bets and wins over
`--games` games played through `--clients` game-server clients in two currencies, a deposit now and
then. Then it times each report (`core_ledger.reports.LedgerReports`, the code behind
`GET /admin/v1/reports/...`), the median of `--repeat` runs:

- `ggr_all_rows`: every day row of the whole range (the largest answer);
- `ggr_by_currency`: the whole range summed per currency;
- `ggr_one_day`, `ggr_one_game`: one day; one game over the whole range;
- `cash_all_rows`, `liabilities`.

and checks the figures against the journal (every bet and win counted once). The seeding is the
slow part (the writer's own speed); the per-bet write cost of keeping the report tables is
measured by `bench/ledger_writer.py` (run it before and after a change).

    .venv/bin/python bench/reports.py [--sizes 1e5,1e6,1e7] [--days 365] [--games 20] [--clients 4]

The last line printed is one JSON object: per size `seed_s`, `report_rows`, `db_bytes` and each
report's `<name>_ms`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from prometheus_client import CollectorRegistry

from core_ledger.domain import ADMIN_SCOPE, Command
from core_ledger.domain.records import Entry
from core_ledger.domain.reports import CASH_TABLE, PLAY_TABLE, add_report_sums
from core_ledger.domain.state import ROUND_CLIENT, Key, State, round_address
from core_ledger.metrics import LedgerMetrics
from core_ledger.reports import PLAY_DIMENSIONS, LedgerReports
from core_ledger.service import LedgerService
from core_ledger.store import Head
from core_ledger.store.sqlite import SqliteStore
from core_ledger.writer import WriterLimits

CURRENCIES = ("EUR", "USD")
PLAYERS = 2000
DEPOSIT_MINOR = 10**12
START = datetime(2026, 1, 1, tzinfo=UTC)
ADMIN = "admin_write"
SEED_GROUPS_IN_FLIGHT = 2


def parse_size(text: str) -> int:
    return int(float(text))


class Seed:
    """The commands of one size and the moment each is committed (the clock the writer reads)."""

    def __init__(self, size: int, days: int, games: int, clients: int) -> None:
        self.size, self.days, self.games, self.clients = size, days, games, clients
        self.now = START
        self.step = timedelta(seconds=days * 86_400 / max(1, size))
        self.bets = self.wins = 0
        self.game_of_round: dict[tuple[str | None, str], str] = {}

    def clock(self) -> datetime:
        return self.now

    def commands(self) -> Iterator[Command]:
        for i in range(PLAYERS):
            pid = f"rp{i}"
            yield Command(
                "player_create",
                {"player_id": pid, "currencies": list(CURRENCIES)},
                ADMIN,
                (ADMIN_SCOPE, f"player:{pid}"),
            )
            for cur in CURRENCIES:
                dep = f"rdep-{pid}-{cur}"
                yield Command(
                    "deposit",
                    {"id": dep, "player_id": pid, "currency": cur, "amount_minor": DEPOSIT_MINOR},
                    "cashier",
                    ("cashier", dep),
                )
        n = 0
        while n < self.size - 3 * PLAYERS:
            player = n % PLAYERS
            turn = n // PLAYERS
            cur, client = CURRENCIES[turn % 2], f"gs-{(player // self.games + turn) % self.clients}"
            game, round_id = f"game-{(player * 7 + turn) % self.games}", f"r-{player}-{turn}"
            pid = f"rp{player}"
            bet_id, win_id = f"b{n}", f"w{n}"
            yield Command(
                "bet",
                {
                    "id": bet_id,
                    "player_id": pid,
                    "currency": cur,
                    "amount_minor": 100,
                    "round_id": round_id,
                    "game_id": game,
                },
                client,
                (client, bet_id),
                client,
            )
            yield Command(
                "win",
                {
                    "id": win_id,
                    "player_id": pid,
                    "currency": cur,
                    "amount_minor": 90,
                    "round_id": round_id,
                    "close_round": True,
                },
                client,
                (client, win_id),
                client,
            )
            self.bets += 1
            self.wins += 1
            n += 2


async def seed(store: SqliteStore, plan: Seed, group: int) -> float:
    limits = WriterLimits(commit_batch_max=group, queue_depth_max=SEED_GROUPS_IN_FLIGHT * 2 + 2)
    service = LedgerService(store, limits, clock=plan.clock, metrics=LedgerMetrics(CollectorRegistry()))
    started = time.perf_counter()
    await service.start()
    in_flight: set[asyncio.Task[list[Any]]] = set()
    try:
        commands = plan.commands()
        done, last = 0, started
        while chunk := [c for _, c in zip(range(group), commands, strict=False)]:
            task = asyncio.create_task(service.submit(chunk))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            if len(in_flight) >= SEED_GROUPS_IN_FLIGHT:
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            plan.now += plan.step * len(chunk)
            done += len(chunk)
            if time.perf_counter() - last > 10:
                last = time.perf_counter()
                print(f"  seeded {done:,} of {plan.size:,} ({done / (last - started):,.0f}/s)", flush=True)
        if in_flight:
            await asyncio.wait(in_flight)
    finally:
        await service.stop()
    return time.perf_counter() - started


def folded_entries(plan: Seed) -> Iterator[tuple[Entry, tuple[str, Key, Any] | None]]:
    """`--fold-only`: the committed entries the seed's bets and wins would journal (as much of them
    as the report fold reads), each with the round row its fold reads (a win's round)."""
    for command in plan.commands():
        if command.type not in ("bet", "win"):
            continue
        r, client = command.request, command.key[0] if command.key else None
        at = plan.now.isoformat(timespec="microseconds").replace("+00:00", "Z")
        plan.now += plan.step
        result: dict[str, Any] = {ROUND_CLIENT: client}
        if command.type == "bet":
            result.update({"jackpot_contributions": [], "bonus_wagering": []})
        tx = {"type": command.type, "id": r["id"], "client_id": client, "outcome": "committed", "committed_at": at}
        entry = cast(Entry, {"transaction": {**tx, "request": r, "result": result}, "postings": []})
        round_row = None
        if command.type == "win":
            table, key = round_address(client, r["player_id"], r["round_id"])
            round_row = (table, key, {"game_id": plan.game_of_round.pop((client, r["round_id"]))})
        else:
            plan.game_of_round[(client, r["round_id"])] = r["game_id"]
        yield entry, round_row


async def fold_only(store: SqliteStore, plan: Seed) -> tuple[float, float]:
    """Fold the entries with the real fold (`domain.reports.add_report_sums`) in memory and commit
    the report tables they fill; the journal stays empty (reports never read it). Returns the
    seconds of the fold alone and of the whole seeding."""
    started = time.perf_counter()
    state, fold_s = State(complete=True), 0.0
    for entry, round_row in folded_entries(plan):
        if round_row is not None:
            state.fill(round_row[0], round_row[1], round_row[2])
        t = time.perf_counter()
        add_report_sums(state, entry)
        fold_s += time.perf_counter() - t
        if round_row is not None:
            del state.tables[round_row[0]][round_row[1]]
    await store.open()
    try:
        for table in (PLAY_TABLE, CASH_TABLE):
            rows = list(state.rows(table).items())
            for start in range(0, len(rows), 5000):
                await store.commit([], {table: rows[start : start + 5000]}, Head())
    finally:
        await store.close()
    return fold_s, time.perf_counter() - started


async def timed(repeat: int, work: Any) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = await work()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2), result


async def measure(size: int, opts: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    db = workdir / f"ledger-{size}.db"
    plan = Seed(size, opts.days, opts.games, opts.clients)
    store, fold_s = SqliteStore(db), 0.0
    if opts.fold_only:
        fold_s, seed_s = await fold_only(store, plan)
    else:
        # The writer reads the clock once per group: enough groups that every day gets some.
        seed_s = await seed(store, plan, min(opts.seed_group, max(50, size // (opts.days * 2))))
    await store.open()
    try:
        reports = LedgerReports(store, rows_max=10_000_000)
        head = (await store.head()).sequence
        first, last = START.date().isoformat(), plan.now.date().isoformat()
        one_day = (START + timedelta(days=opts.days // 2)).date().isoformat()
        db_bytes = (await asyncio.to_thread(db.stat)).st_size
        out: dict[str, Any] = {
            "entries": head or plan.bets + plan.wins,
            "seed_s": round(seed_s, 1),
            "db_bytes": db_bytes,
        }
        if opts.fold_only:
            out["fold_us_per_entry"] = round(fold_s / max(1, plan.bets + plan.wins) * 1e6, 2)
        out["report_rows"] = len(await store.dump(PLAY_TABLE)) + len(await store.dump(CASH_TABLE))
        cases = {
            "ggr_all_rows": lambda: reports.ggr(day_from=first, day_to=last, equals={}, group_by=PLAY_DIMENSIONS),
            "ggr_by_currency": lambda: reports.ggr(day_from=first, day_to=last, equals={}, group_by=("currency",)),
            "ggr_one_day": lambda: reports.ggr(day_from=one_day, day_to=one_day, equals={}, group_by=PLAY_DIMENSIONS),
            "ggr_one_game": lambda: reports.ggr(
                day_from=first, day_to=last, equals={"game_id": "game-0"}, group_by=("currency",)
            ),
            "cash_all_rows": lambda: reports.cash(day_from=first, day_to=last, equals={}, group_by=("day", "currency")),
            "liabilities": lambda: reports.liabilities(currency=None),
        }
        for name, work in cases.items():
            out[f"{name}_ms"], report = await timed(opts.repeat, work)
            if name == "ggr_by_currency":
                assert report.up_to_sequence == head
                assert sum(r["bet_count"] for r in report.rows) == plan.bets, "every bet counted once"
                assert sum(r["win_count"] for r in report.rows) == plan.wins, "every win counted once"
            if name == "ggr_all_rows":
                out["ggr_all_rows_answer_rows"] = len(report.rows)
        return out
    finally:
        await store.close()
        if not opts.keep:
            await asyncio.to_thread(remove_db, workdir, size)


def remove_db(workdir: Path, size: int) -> None:
    for leftover in workdir.glob(f"ledger-{size}.db*"):
        leftover.unlink()


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="croupier-reports-bench-"))
    try:
        results = {}
        for size in opts.sizes:
            print(f"size {size:,}", flush=True)
            results[str(size)] = await measure(size, opts, workdir)
            print(json.dumps(results[str(size)]), flush=True)
        return {"days": opts.days, "games": opts.games, "clients": opts.clients, "sizes": results}
    finally:
        if not opts.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e5,1e6,1e7", help="journal entries per size, comma-separated")
    parser.add_argument("--days", type=int, default=365, help="UTC days the entries spread over")
    parser.add_argument("--games", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed-group", type=int, default=2000, help="commands per seeding commit")
    parser.add_argument("--repeat", type=int, default=5, help="runs per report (the median is reported)")
    parser.add_argument("--keep", action="store_true", help="keep the seeded databases")
    parser.add_argument(
        "--fold-only",
        action="store_true",
        help="fill only the report tables, by folding the bets and wins in memory with the real fold (no journal)",
    )
    opts = parser.parse_args()
    opts.sizes = [parse_size(s) for s in opts.sizes.split(",")]
    print(json.dumps(asyncio.run(run(opts))))


if __name__ == "__main__":
    main()
