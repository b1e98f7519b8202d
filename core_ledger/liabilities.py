"""What the operator owes, per currency, published as `ledger_liabilities_minor{kind,currency}` on a
timer (not per request: a scrape never waits for the database).

Computed from a handful of rows, never from the players: every posting moves money between two
accounts, so the accounts always sum to zero and the players' total in a currency is minus the sum
of the system accounts (`cashier:`, `house:`, `bonus:` + currency) and the jackpot pools in that
currency. Kinds (bounded: three kinds times the currencies in use):

- `player_balances`: the sum of every player balance (what players could withdraw);
- `jackpot_pools`: the sum of the jackpot pools (owed to a future winner);
- `bonus_granted`: bonus money credited to players so far (minus the `bonus:` account; part of
  `player_balances`, not on top of it).

A sampling that fails is logged, counted (`ledger_task_failures_total{task="liabilities"}`) and
retried with backoff; the gauges keep their last values meanwhile.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import structlog

from shared.tasks import OwnedTask

from core_ledger.domain.state import Doc, Key, jackpot_account
from core_ledger.metrics import LedgerMetrics
from core_ledger.store.base import Store
from core_ledger.task_health import TaskHealth

log = structlog.get_logger("croupier.liabilities")

LIABILITY_KINDS = ("player_balances", "jackpot_pools", "bonus_granted")
SYSTEM_KINDS = ("bonus", "cashier", "house")
LIABILITIES_INTERVAL_S = 30.0
PAGE_ROWS = 256
ROWS_MAX = 100_000  # a safety bound on one sampling (system accounts and pools are few)


def liabilities(system: dict[str, int], pools: Iterable[tuple[str, int]]) -> dict[tuple[str, str], int]:
    """(kind, currency) -> minor units, from system account balances by account name and
    (currency, balance) of each jackpot pool."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    others: dict[str, int] = defaultdict(int)  # every non-player account's balance, by currency
    for account, balance in system.items():
        kind, _, currency = account.partition(":")
        others[currency] += balance
        if kind == "bonus":
            out[("bonus_granted", currency)] -= balance
    for currency, balance in pools:
        others[currency] += balance
        out[("jackpot_pools", currency)] += balance
    for currency, balance in others.items():
        out[("player_balances", currency)] = -balance
        out.setdefault(("jackpot_pools", currency), 0)
        out.setdefault(("bonus_granted", currency), 0)
    return dict(out)


async def _accounts_with_prefix(store: Store, prefix: str) -> dict[str, int]:
    found: dict[str, int] = {}
    after = prefix
    while len(found) < ROWS_MAX:
        rows, _ = await store.select("accounts", {}, limit=PAGE_ROWS, after=after)
        for (account,), doc in rows:
            if not account.startswith(prefix):
                return found
            found[account] = int(doc["balance_minor"])
        if len(rows) < PAGE_ROWS:
            return found
        after = rows[-1][0][0]
    raise RuntimeError(f"more than {ROWS_MAX} accounts named {prefix}*")


async def read_liabilities(store: Store) -> dict[tuple[str, str], int]:
    system: dict[str, int] = {}
    for kind in SYSTEM_KINDS:
        system.update(await _accounts_with_prefix(store, f"{kind}:"))
    jackpots: dict[Key, Doc] = await store.dump("jackpots")
    if len(jackpots) > ROWS_MAX:
        raise RuntimeError(f"more than {ROWS_MAX} jackpots")
    keys = [(jackpot_account(jackpot_id),) for (jackpot_id,) in jackpots]
    accounts = (await store.load({"accounts": keys}))["accounts"] if keys else {}
    pools = [
        (doc["currency"], int(accounts[(jackpot_account(jid),)]["balance_minor"]))
        for (jid,), doc in jackpots.items()
        if (jackpot_account(jid),) in accounts
    ]
    return liabilities(system, pools)


class LiabilitiesSampler:
    def __init__(self, store: Store, metrics: LedgerMetrics, interval_s: float = LIABILITIES_INTERVAL_S) -> None:
        self.store = store
        self.metrics = metrics
        self.interval_s = interval_s
        self._task = OwnedTask("ledger-liabilities")
        self.health = TaskHealth("liabilities", metrics, base_delay_s=min(1.0, interval_s), max_delay_s=interval_s)

    async def sample(self) -> None:
        for (kind, currency), minor in (await read_liabilities(self.store)).items():
            self.metrics.liabilities_minor.labels(kind, currency).set(minor)

    def start(self) -> None:
        self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        await self.health.repeat(self.sample, self.interval_s, event="liabilities_failed")
