"""Finance reports over committed state (no HTTP here; handlers in core_ledger/reports_http.py).

- GGR/NGR: the rows of `report_play_days` within a day range, filtered by their key columns and
  summed by the chosen grouping (always by currency: amounts of two currencies are never added).
- Cash: the rows of `report_cash_days` the same way.
- Liabilities: per currency, from the balances of the system accounts and jackpot pools as of now
  (the same arithmetic as the `ledger_liabilities_minor` gauges, `liabilities.liabilities`).

Every report is read in ONE snapshot with the journal head, and names that head (`up_to_sequence`):
its figures include every entry up to it and none after. The report tables are maintained by the
writer (core_ledger/domain/reports.py), so a report reads the day rows of its range (summed by the
store), never the journal; an answer of more than `REPORT_ROWS_MAX` rows, or with a figure past
64 bits (`FIGURE_ABS_MAX`), is refused (`report_too_large`): narrow the range, filter, or regroup.
See docs/decisions/reports-maintained-by-the-writer.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from shared.errors import Unprocessable

from core_ledger.domain.accounts import JACKPOT_PREFIX, system_account
from core_ledger.domain.reports import CASH_SUMS, CASH_TABLE, NONE, PLAY_SUMS, PLAY_TABLE, ggr, ngr
from core_ledger.domain.state import TABLES
from core_ledger.liabilities import SYSTEM_KINDS, liabilities
from core_ledger.store import Store

REPORT_ROWS_MAX: Final = 100_000  # rows one report may answer (then `report_too_large`)
# A figure an answer may hold: a 64-bit integer, as every JSON encoder and client reads one. Each
# stored sum is within ±2^61 (`domain.reports.REPORT_SUM_ABS_MAX`), but a sum of many such rows is
# not: such an answer is refused (`report_too_large`) rather than failing or rounding.
FIGURE_ABS_MAX: Final = 2**63 - 1
ACCOUNTS_MAX: Final = 100_000  # system accounts and pools of one kind (they are few)
PLAY_DIMENSIONS: Final = TABLES[PLAY_TABLE]  # day, currency, game_id, client_id
CASH_DIMENSIONS: Final = TABLES[CASH_TABLE]  # day, currency
LIABILITY_MEMBERS: Final = (
    "player_balances_minor",
    "jackpot_liability_minor",
    "bonus_liability_minor",
    "house_position_minor",
    "cash_held_minor",
)


@dataclass(frozen=True)
class Report:
    """A report's rows (each a flat dict of its dimensions and figures), the columns in order, and
    the journal sequence its figures include everything up to."""

    name: str
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    up_to_sequence: int


class LedgerReports:
    def __init__(self, store: Store, *, rows_max: int = REPORT_ROWS_MAX) -> None:
        self.store = store
        self.rows_max = rows_max

    async def _sums(
        self,
        table: str,
        day_from: str,
        day_to: str,
        equals: dict[str, str],
        group_by: tuple[str, ...],
        members: tuple[str, ...],
    ) -> tuple[list[dict[str, Any]], int]:
        """The sums of each group (the store adds the day rows up in one snapshot with the head)."""
        found, head = await self.store.report_sums(
            table,
            day_from=day_from,
            day_to=day_to,
            equals=equals,
            group_by=group_by,
            members=members,
            limit=self.rows_max + 1,
        )
        if len(found) > self.rows_max:
            raise Unprocessable(
                f"the report would answer more than {self.rows_max} rows: narrow the range, filter by currency, "
                "game_id or client_id, or group by less",
                code="report_too_large",
            )
        rows = []
        for group, sums in found:
            row: dict[str, Any] = {d: (v if v != NONE else None) for d, v in zip(group_by, group, strict=True)}
            row.update(sums)
            rows.append(row)
        return rows, head

    async def ggr(self, *, day_from: str, day_to: str, equals: dict[str, str], group_by: tuple[str, ...]) -> Report:
        """Gaming figures, GGR and NGR (see core_ledger/domain/reports.py for what counts)."""
        rows, head = await self._sums(PLAY_TABLE, day_from, day_to, equals, group_by, PLAY_SUMS)
        for row in rows:
            row["ggr_minor"] = ggr(row)
            row["ngr_minor"] = ngr(row)
        return _checked(Report("ggr", (*group_by, *PLAY_SUMS, "ggr_minor", "ngr_minor"), rows, head))

    async def cash(self, *, day_from: str, day_to: str, equals: dict[str, str], group_by: tuple[str, ...]) -> Report:
        """Deposits and withdrawals (net: cash in minus cash out), adjustments and jackpot seeds."""
        rows, head = await self._sums(CASH_TABLE, day_from, day_to, equals, group_by, CASH_SUMS)
        for row in rows:
            row["net_cash_minor"] = row["deposits_minor"] - row["withdrawals_minor"]
        return _checked(Report("cash", (*group_by, *CASH_SUMS, "net_cash_minor"), rows, head))

    async def liabilities(self, *, currency: str | None) -> Report:
        """Per currency, as of now: what players hold, the jackpot pools (owed to future winners),
        the bonus money credited to players (part of their balances), the house's balance and the
        money the cashier took in net (deposits minus withdrawals, all time)."""
        prefixes = [f"{kind}:" for kind in SYSTEM_KINDS] + [JACKPOT_PREFIX]
        accounts, head = await self.store.accounts_by_prefix(prefixes, ACCOUNTS_MAX)
        system = {a: int(d["balance_minor"]) for a, d in accounts.items() if not a.startswith(JACKPOT_PREFIX)}
        pools = {
            a[len(JACKPOT_PREFIX) :]: int(d["balance_minor"])
            for a, d in accounts.items()
            if a.startswith(JACKPOT_PREFIX)
        }
        # A jackpot's currency never changes, and every pool read above has its jackpot row by now.
        jackpots, _ = await self.store.page("jackpots", after=None, limit=ACCOUNTS_MAX)
        currency_of = {jackpot_id: doc["currency"] for (jackpot_id,), doc in jackpots}
        owed = liabilities(system, [(currency_of[j], balance) for j, balance in pools.items() if j in currency_of])
        rows = []
        for cur in sorted({c for _, c in owed}):
            if currency is not None and cur != currency:
                continue
            rows.append(
                {
                    "currency": cur,
                    "player_balances_minor": owed[("player_balances", cur)],
                    "jackpot_liability_minor": owed[("jackpot_pools", cur)],
                    "bonus_liability_minor": owed[("bonus_granted", cur)],
                    "house_position_minor": system.get(system_account("house", cur), 0),
                    "cash_held_minor": -system.get(system_account("cashier", cur), 0),
                }
            )
        return Report("liabilities", ("currency", *LIABILITY_MEMBERS), rows, head)


def _checked(report: Report) -> Report:
    """The report, unless a figure of it leaves ±FIGURE_ABS_MAX (then `report_too_large`)."""
    for row in report.rows:
        for name, value in row.items():
            if isinstance(value, int) and abs(value) > FIGURE_ABS_MAX:
                raise Unprocessable(
                    f"{name} of a row would pass {FIGURE_ABS_MAX} minor units: narrow the range, or group by more",
                    code="report_too_large",
                )
    return report
