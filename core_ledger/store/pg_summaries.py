"""PostgreSQL: one page of the transaction index (`tx_summaries`) filtered on a player or a round,
inside the caller's snapshot. The same sources as SQLite's (`sqlite_summaries`, schema migration 9):
a player's rows from the history of each of the player's accounts plus the partial index of the
entries that may post nothing to the player; a round's rows from the sequences the rounds of that
id note plus the partial index of the entries they may not note. Every filter is then checked on
the index row itself, so a page is exactly what the filter on `tx_summaries` alone gives.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from core_ledger.domain.accounts import PLAYER_PREFIX, player_of
from core_ledger.store.base import SUMMARY_NOTED_TYPES, SUMMARY_POSTING_TYPES, summary_filter, summary_unless


def summary_member(name: str, alias: str = "") -> str:
    """A member of a transaction index row, as the SQL expression its indexes are built on."""
    return f"(({alias}doc::jsonb) ->> '{name}')"


# The rows of the partial indexes (their WHERE; a query repeats it to use the index).
UNPOSTED = summary_unless(SUMMARY_POSTING_TYPES, summary_member)
UNNOTED = summary_unless(SUMMARY_NOTED_TYPES, summary_member)


def _t(name: str) -> str:
    return summary_member(name, "t.")


def history_arm_sql(checks: list[str], account: str, limit: str) -> str:
    """Rows of one account's history after the sequence $1 that pass `checks`, in journal order."""
    return (
        "SELECT t.sequence, t.doc FROM history AS h JOIN tx_summaries AS t ON t.sequence = h.sequence "
        f"WHERE h.account = {account} AND h.sequence > $1 AND {' AND '.join(checks)} "
        f"ORDER BY h.sequence LIMIT {limit}"
    )


def unposted_arm_sql(checks: list[str], player: str, limit: str) -> str:
    """Rows of a player in the partial index after the sequence $1 that pass `checks`."""
    return (
        f"SELECT t.sequence, t.doc FROM tx_summaries AS t WHERE {_t('player_id')} = {player} "
        f"AND {summary_unless(SUMMARY_POSTING_TYPES, _t)} AND t.sequence > $1 AND {' AND '.join(checks)} "
        f"ORDER BY t.sequence LIMIT {limit}"
    )


def round_sql(checks: list[str], round_id: str, limit: str) -> str:
    """Rows whose sequence the rounds of an id note or that the partial index holds for it, after
    the sequence $1, that pass `checks`."""
    noted = " UNION ALL ".join(
        f"SELECT (n ->> 'sequence')::bigint FROM {table} AS r, "
        f"jsonb_array_elements((r.doc::jsonb) -> 'transactions') AS n WHERE r.round_id = {round_id}"
        for table in ("client_rounds", "rounds")
    )
    return (
        f"SELECT t.sequence, t.doc FROM tx_summaries AS t WHERE t.sequence IN ({noted} UNION ALL "
        f"SELECT sequence FROM tx_summaries WHERE {summary_member('round_id')} = {round_id} AND {UNNOTED} "
        f"AND sequence > $1) AND t.sequence > $1 AND {' AND '.join(checks)} ORDER BY t.sequence LIMIT {limit}"
    )


def filters(
    equals: dict[str, str], after_sequence: int, time_from: str | None, time_until: str | None
) -> tuple[list[str], list[Any]]:
    """The checks of a page on a row `t` and their parameters: $1 is the sequence the page starts
    after, the checks' own from $2."""
    clauses, params = summary_filter(equals, after_sequence, time_from, time_until, _t, lambda i: f"${i}")
    return ["t.sequence > $1", *clauses[1:]], params


async def of_player_or_round(
    conn: asyncpg.Connection,
    equals: dict[str, str],
    after_sequence: int,
    limit: int,
    time_from: str | None,
    time_until: str | None,
) -> list[tuple[int, str]]:
    """A page filtered on a round (or, without one, a player): (sequence, document text) rows. A
    round first when both are given: a round's notes are few, a player's history may be long."""
    checks, params = filters(equals, after_sequence, time_from, time_until)
    key, limit_mark = f"${len(params) + 1}", f"${len(params) + 2}"
    if "round_id" in equals:
        rows = await conn.fetch(round_sql(checks, key, limit_mark), *params, equals["round_id"], limit)
        return [(int(r[0]), str(r[1])) for r in rows]
    player_id = equals["player_id"]
    prefix = f"{PLAYER_PREFIX}{player_id}:"
    accounts = [
        str(r[0])
        for r in await conn.fetch(
            "SELECT account FROM accounts WHERE account >= $1 AND account < $2", prefix, prefix[:-1] + ";"
        )
        if player_of(str(r[0])) == player_id  # not those of a player whose id extends this one's with ":"
    ]
    found: dict[int, str] = {}
    for account in accounts:
        rows = await conn.fetch(history_arm_sql(checks, key, limit_mark), *params, account, limit)
        found.update((int(r[0]), str(r[1])) for r in rows)
    rows = await conn.fetch(unposted_arm_sql(checks, key, limit_mark), *params, player_id, limit)
    found.update((int(r[0]), str(r[1])) for r in rows)
    return sorted(found.items())[:limit]
