"""Seed a ledger store fast with real, sealed, chained entries: for the scale benchmarks.

Journaling a million entries through the writer (one group of commands at a time, each group's
rows loaded from the store before it is judged) runs at the writer's speed and slows as the
database grows. This seeder folds the commands with the same pure domain code the writer runs
(`decide`, `sealed`, `fold` on a `State`), so every entry is what the writer would have journaled
and the chain verifies, and hands the store one `Store.commit` per group of `group_entries`
entries: no HTTP, no per-group load queries, one big transaction each. Folding the next group
overlaps the commit of the previous one (the commit runs in the store's own thread or server).

It starts from an EMPTY store and knows every row it wrote (`State(complete=True)`), so it reads
nothing back. Memory stays bounded by one group: the commands come player by player (a player's
creation, deposit and all their bets, `seed_commands`), a group ends only between two players,
and after each commit the rows of the players just written are dropped (their ids are never used
again); only the system accounts, the jackpots and the games are kept.

A command the domain refuses or rejects is a bug of the seed plan: the seeder raises instead of
journaling it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.gc_pause import CollectionsPaused

from core_ledger.domain import ADMIN_SCOPE, Command, Context, Replay, State, decide, fold, sealed
from core_ledger.domain.accounts import is_player_account
from core_ledger.domain.outcomes import Outcome
from core_ledger.store import Head, JournalRow, Store

# Tables whose rows outlive a group: shared by every player (the rest belong to one player, or are
# write-only indexes and idempotency records of ids never used again).
KEPT_TABLES = frozenset({"jackpots", "games", "accounts"})
GROUP_ENTRIES_DEFAULT = 20_000
YIELD_EVERY = 1000  # folds between two turns of the event loop
BETS_PER_ROUND = 4  # then a win closes the round
SEED_PRINCIPAL = "edge-dev"  # an edge credential of every harness cluster (its `edge` token)
ADMIN_PRINCIPAL = "admin_write"
CASHIER_PRINCIPAL = "cashier"


class SeedRefused(RuntimeError):
    """The domain refused or rejected a seed command: the seed plan is wrong."""


@dataclass(frozen=True)
class SeedPlan:
    """`size` entries: a jackpot, `players` players (created and funded: two entries each), and
    bets over them (rounds of BETS_PER_ROUND bets, each closed by a win) up to `size`, spread evenly
    (the first players take one more when it does not divide)."""

    size: int
    players: int
    currency: str
    deposit_minor: int
    bet_minor: int
    game_ids: tuple[str, ...]
    jackpot_id: str
    jackpot_games: tuple[str, ...]
    player_prefix: str = "bench-p"  # the naming bench/wrk/bets.lua uses

    def __post_init__(self) -> None:
        if self.players < 1 or self.size < 1 + 2 * self.players:
            raise ValueError(f"{self.size} entries cannot hold a jackpot and {self.players} funded players")


def seed_commands(plan: SeedPlan) -> Iterator[tuple[int, Command]]:
    """(player index, command), player after player; the jackpot comes first, as player -1."""
    yield (
        -1,
        Command(
            "jackpot_create",
            {
                "jackpot_id": plan.jackpot_id,
                "currency": plan.currency,
                "seed_minor": 100_000,
                "contribution_ppm": 10_000,
                "game_ids": list(plan.jackpot_games),
            },
            ADMIN_PRINCIPAL,
            (ADMIN_SCOPE, f"jackpot:{plan.jackpot_id}"),
        ),
    )
    plays_each, plays_extra = divmod(plan.size - 1 - 2 * plan.players, plan.players)
    for p in range(plan.players):
        pid = f"{plan.player_prefix}{p}"
        yield (
            p,
            Command(
                "player_create",
                {"player_id": pid, "currencies": [plan.currency]},
                ADMIN_PRINCIPAL,
                (ADMIN_SCOPE, f"player:{pid}"),
            ),
        )
        dep = f"bench-dep-{pid}"
        request = {"id": dep, "player_id": pid, "currency": plan.currency, "amount_minor": plan.deposit_minor}
        yield p, Command("deposit", request, CASHIER_PRINCIPAL, (CASHIER_PRINCIPAL, dep))
        for n in range(plays_each + (1 if p < plays_extra else 0)):
            yield p, _play(plan, p, pid, n)


def _play(plan: SeedPlan, p: int, pid: str, n: int) -> Command:
    rnd, step = divmod(n, BETS_PER_ROUND + 1)
    round_id = f"seed-p{p}-r{rnd}"
    if step < BETS_PER_ROUND:
        tx_id = f"seed-bet-{p}-{n}"
        request: dict[str, Any] = {
            "id": tx_id,
            "player_id": pid,
            "currency": plan.currency,
            "amount_minor": plan.bet_minor,
            "round_id": round_id,
            "game_id": plan.game_ids[(p + rnd) % len(plan.game_ids)],
        }
        return Command("bet", request, SEED_PRINCIPAL, (SEED_PRINCIPAL, tx_id), SEED_PRINCIPAL)
    tx_id = f"seed-win-{p}-{n}"
    request = {
        "id": tx_id,
        "player_id": pid,
        "currency": plan.currency,
        "amount_minor": plan.bet_minor,
        "round_id": round_id,
        "close_round": True,
    }
    return Command("win", request, SEED_PRINCIPAL, (SEED_PRINCIPAL, tx_id), SEED_PRINCIPAL)


class JournalFolder:
    """Folds commands into sealed entries and the rows they change, as the writer's judge does."""

    def __init__(self, head: Head | None = None) -> None:
        self.state = State(complete=True)
        self.head = head or Head()
        self.journal: list[JournalRow] = []

    def fold(self, command: Command, ctx: Context) -> None:
        outcome = decide(self.state, command, ctx)
        if isinstance(outcome, Replay):
            raise SeedRefused(f"{command.type} {command.key} was already journaled")
        tx = outcome.transaction
        if tx["outcome"] != Outcome.COMMITTED.value:
            raise SeedRefused(f"{command.type} {command.key} was rejected: {tx.get('code')} {tx.get('detail')}")
        entry, text = sealed(
            tx, outcome.postings, sequence=self.head.sequence + 1, epoch=self.head.epoch, prev_hash=self.head.hash
        )
        fold(self.state, entry)
        self.journal.append(JournalRow(entry["sequence"], tx["id"], text))
        self.head = Head(entry["sequence"], entry["hash"], self.head.epoch)

    def take(self) -> tuple[list[JournalRow], dict[str, list[tuple[Any, Any]]], Head]:
        """What to commit since the last take; then forget every player's rows (see the module)."""
        journal, self.journal = self.journal, []
        rows = self.state.take_dirty()
        for table, stored in self.state.tables.items():
            if table not in KEPT_TABLES:
                stored.clear()
        accounts = self.state.tables["accounts"]
        for key in [k for k in accounts if is_player_account(k[0])]:
            del accounts[key]
        return journal, rows, self.head


async def seed_store(
    store: Store,
    commands: Iterable[tuple[int, Command]],
    *,
    group_entries: int = GROUP_ENTRIES_DEFAULT,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: Callable[[int, float], None] | None = None,
) -> Head:
    """Journal `commands` (player-ordered, see `seed_commands`) into the open, EMPTY `store`, one
    commit per group of about `group_entries` entries (a group ends between players). The head."""
    stored = await store.head()
    if stored.sequence != 0:
        raise SeedRefused(f"the store already holds {stored.sequence} entries: the seeder starts from an empty one")
    folder = JournalFolder()
    started = time.perf_counter()
    committing: asyncio.Task[None] | None = None
    ctx, last_player = Context(clock()), -1
    with CollectionsPaused() as gc_points:  # a collection per group, not one per 700 allocations
        for player, command in commands:
            if player != last_player and len(folder.journal) >= group_entries:
                if committing is not None:
                    await committing
                committing = asyncio.create_task(store.commit(*folder.take()))
                await asyncio.sleep(0)  # the commit starts (in the store's thread or server) before the next fold
                gc_points.collect()
                ctx = Context(clock())
                if progress is not None:
                    progress(folder.head.sequence, time.perf_counter() - started)
            last_player = player
            folder.fold(command, ctx)
            if len(folder.journal) % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let a PostgreSQL commit in flight talk to its server
        if committing is not None:
            await committing
        if folder.journal:
            await store.commit(*folder.take())
    return folder.head
