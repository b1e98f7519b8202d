"""The ledger writer's cost per bet in CPU instructions: a figure the machine's load does not move.

On a shared 2-core machine the same code measures 20 to 40% apart in CPU time from one minute to
the next, so a change worth 5% cannot be seen in `ledger_writer.py`'s milliseconds. Instructions
can: this runs the writer (`LedgerService`, no HTTP, bets shaped as in `ledger_writer.py`) twice
under `valgrind --tool=cachegrind --cache-sim=no`, once with `--base` bets and once with `--base`
+ `--bets`, after the same seed and warm-up, and reports

    instructions_per_bet = (instructions of the longer run - of the shorter) / bets

Start-up, imports, seeding and warm-up cancel out; what is left is what a bet costs in every
thread of the process (the event loop and, on SQLite, the SQLite threads; not the kernel: an
fsync's wait and the disk are not instructions). The figure repeats within about 1% between runs
(decisions/writer-loop-instructions-per-bet.md uses it for every change to the writer's loop).

    .venv/bin/python bench/writer_instructions.py [--store sqlite|memory] [--players 50]
        [--concurrency 4] [--bets 2000] [--base 500]

`--concurrency` sets the bets in flight, hence the commit groups' size: 1 gives groups of one bet
(what a group costs, `--concurrency 16` against 1 splits a bet's cost from its group's), 64 the
64-connection shape of `ledger_throughput.py`. `--store memory` leaves SQLite out (the domain and
the writer only). Before counting, the longer run is made once without valgrind and verified as
`ledger_writer.py` verifies (the chain, the derived rows against a rebuild, one row per bet).
The last line printed is one JSON object. Needs valgrind (`make tools` installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from shared import gc_tuning

from core_ledger.store import SqliteStore, Store
from core_ledger.store.memory import MemoryStore
from ledger_writer import Bets, drive, seed, verify, writer_service

STORES = ("sqlite", "memory")
WARMUP_BETS = 500  # before either count: the overlay, the key filter and the caches are warm
INSTRUCTIONS = re.compile(r"I\s+refs:\s+([\d,]+)")


def instructions_of(valgrind_output: str) -> int:
    """The program's instruction count from cachegrind's summary (`==pid== I   refs: 1,234`)."""
    found = INSTRUCTIONS.search(valgrind_output)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{valgrind_output[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_bet(shorter: int, longer: int, bets: int) -> int:
    """Instructions per bet from the counts of two runs `bets` bets apart."""
    if longer <= shorter:
        raise RuntimeError(f"the longer run counted {longer} instructions, the shorter {shorter}: not a difference")
    return round((longer - shorter) / bets)


async def drive_writer(store_kind: str, players: int, concurrency: int, bets: int, *, check: bool = False) -> int:
    """Seed, warm up, then `bets` bets; with `check`, verify them. The journal's head sequence."""
    with tempfile.TemporaryDirectory(prefix="writer-instructions-") as tmp:
        store: Store = SqliteStore(Path(tmp) / "ledger.db") if store_kind == "sqlite" else MemoryStore()
        service = writer_service(store)
        await service.start()
        try:
            await seed(service, players)
            await drive(service, Bets(players, "warm", 1), WARMUP_BETS, concurrency)
            await drive(service, Bets(players, "run", 2), bets, concurrency)
            if check:
                await verify(service, players, WARMUP_BETS + bets)
            return (await service.store.head()).sequence
        finally:
            await service.stop()


def count(store_kind: str, players: int, concurrency: int, bets: int, valgrind: str = "valgrind") -> int:
    """Instructions of one whole run of this script's `--inner` mode under cachegrind."""
    command = [
        valgrind,
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--inner",
        str(bets),
        "--store",
        store_kind,
        "--players",
        str(players),
        "--concurrency",
        str(concurrency),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return instructions_of(done.stderr)


def measure(store_kind: str, players: int, concurrency: int, bets: int, base: int, valgrind: str) -> dict[str, Any]:
    shorter = count(store_kind, players, concurrency, base, valgrind)
    longer = count(store_kind, players, concurrency, base + bets, valgrind)
    return {
        "benchmark": "writer_instructions",
        "store": store_kind,
        "players": players,
        "concurrency": concurrency,
        "bets": bets,
        "base": base,
        "instructions_shorter": shorter,
        "instructions_longer": longer,
        "instructions_per_bet": per_bet(shorter, longer, bets),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=STORES, default="sqlite")
    parser.add_argument("--players", type=int, default=50, help="funded players (1..100000)")
    parser.add_argument("--concurrency", type=int, default=4, help="bets in flight (1..1024)")
    parser.add_argument("--bets", type=int, default=2000, help="bets between the two counts (100..100000)")
    parser.add_argument("--base", type=int, default=500, help="bets of the shorter run (1..100000)")
    parser.add_argument("--inner", type=int, help=argparse.SUPPRESS)  # one run, as valgrind starts it
    args = parser.parse_args()
    if not (1 <= args.players <= 100_000 and 1 <= args.concurrency <= 1024 and 1 <= args.base <= 100_000):
        parser.error("--players, --concurrency or --base out of range")
    if not 100 <= args.bets <= 100_000:
        parser.error("--bets out of range (100..100000)")
    gc_tuning.tune_for_serving()  # as `croupier ledger serve` runs
    if args.inner is not None:
        asyncio.run(drive_writer(args.store, args.players, args.concurrency, args.inner))
        return
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("valgrind is not installed: `make tools` (or apt-get install valgrind)")
    asyncio.run(drive_writer(args.store, args.players, args.concurrency, args.base + args.bets, check=True))
    figures = measure(args.store, args.players, args.concurrency, args.bets, args.base, valgrind)
    print(
        f"{figures['instructions_per_bet']:,} instructions per bet ({args.store}, {args.players} players, "
        f"{args.concurrency} in flight; verified: chain, rebuild, one entry per bet)"
    )
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
