"""SQLite: one page of the transaction index (`tx_summaries`), in one read transaction.

Since schema migration 9 the index has no B-tree by player or by round: each cost every bet a page
written at random (docs/decisions/operator-index-from-history-and-rounds.md). A page filtered on
them is found where every bet already writes:
- a player: the balance history (`history`, keyed by account then sequence) of each of the
  player's accounts, one index range each in journal order, merged; plus the partial index of the
  entries that may post nothing to the player (`SUMMARY_POSTING_TYPES`: refused entries, admin
  entries, rollbacks...);
- a round: the sequences the rows of the rounds of that id note (`client_rounds` and `rounds`, by
  their `round_id` index); plus the partial index of the entries that may not be noted there
  (`SUMMARY_NOTED_TYPES`).
Those sources give a superset of the wanted sequences; every filter is then checked on the
index row itself, so a page holds exactly what the filter on `tx_summaries` alone gives.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

from core_ledger.domain.accounts import PLAYER_PREFIX, player_of
from core_ledger.store.base import SUMMARY_NOTED_TYPES, SUMMARY_POSTING_TYPES, summary_filter, summary_unless

# The rows of the partial indexes (their WHERE; a query repeats it to use the index).
UNPOSTED = summary_unless(SUMMARY_POSTING_TYPES, str)
UNNOTED = summary_unless(SUMMARY_NOTED_TYPES, str)

Found = list[tuple[int, str]]  # (sequence, the row's document as JSON text)


def _fetch(db: sqlite3.Connection, sql: str, params: list[Any]) -> list[Any]:
    with closing(db.execute(sql, params)) as cur:
        return cur.fetchall()


def summaries_sync(
    db: sqlite3.Connection,
    doc: str,
    head_sql: str,
    equals: dict[str, str],
    after_sequence: int,
    limit: int,
    time_from: str | None,
    time_until: str | None,
) -> tuple[Found, int]:
    """The rows of a transaction index page and the head, in one snapshot. `doc`: the SQL of a
    row's document in `tx_summaries` aliased `t`; `head_sql`: the SQL of the head sequence."""
    clauses, params = summary_filter(equals, after_sequence, time_from, time_until, lambda m: f"t.{m}", lambda _: "?")
    # The first clause is `sequence > ?`, unqualified: each query below places it itself.
    checks, check_params = clauses[1:], params[1:]
    db.execute("BEGIN")
    try:
        # A round first when both are given: a round's notes are few, a player's history may be long.
        if "round_id" in equals:
            found = _of_round(db, doc, equals["round_id"], after_sequence, limit, checks, check_params)
        elif "player_id" in equals:
            found = _of_player(db, doc, equals["player_id"], after_sequence, limit, checks, check_params)
        else:
            found = _fetch(
                db,
                f"SELECT t.sequence, {doc} FROM tx_summaries AS t WHERE {' AND '.join(['t.sequence > ?', *checks])} "
                "ORDER BY t.sequence LIMIT ?",
                [after_sequence, *check_params, limit],
            )
        [(head,)] = _fetch(db, f"SELECT {head_sql}", [])
    finally:
        db.execute("ROLLBACK")
    return [(int(s), str(d)) for s, d in found], int(head or 0)


def _all(checks: list[str]) -> str:
    return " AND ".join(checks) or "1"


def history_arm_sql(doc: str, checks: list[str]) -> str:
    """Rows of one account's history after a sequence that pass `checks`, in journal order; params:
    account, sequence, the checks', limit."""
    return (
        f"SELECT t.sequence, {doc} FROM history AS h JOIN tx_summaries AS t ON t.sequence = h.sequence "
        f"WHERE h.account = ? AND h.sequence > ? AND {_all(checks)} ORDER BY h.sequence LIMIT ?"
    )


def unposted_arm_sql(doc: str, checks: list[str]) -> str:
    """Rows of a player in the partial index after a sequence that pass `checks`; params: player,
    sequence, the checks', limit."""
    return (
        f"SELECT t.sequence, {doc} FROM tx_summaries AS t "
        f"WHERE t.player_id = ? AND {UNPOSTED} AND t.sequence > ? AND {_all(checks)} "
        "ORDER BY t.sequence LIMIT ?"
    )


def round_sql(doc: str, checks: list[str]) -> str:
    """Rows whose sequence the rounds of an id note or that the partial index holds for it, after a
    sequence, that pass `checks`; params: round id three times, sequence twice, the checks', limit."""
    noted = " UNION ALL ".join(
        f"SELECT j.value ->> '$.sequence' FROM {table} AS r, json_each(r.transactions) AS j WHERE r.round_id = ?"
        for table in ("client_rounds", "rounds")
    )
    return (
        f"SELECT t.sequence, {doc} FROM tx_summaries AS t WHERE t.sequence IN ({noted} UNION ALL "
        f"SELECT sequence FROM tx_summaries WHERE round_id = ? AND {UNNOTED} AND sequence > ?) "
        f"AND t.sequence > ? AND {_all(checks)} ORDER BY t.sequence LIMIT ?"
    )


def _of_player(
    db: sqlite3.Connection,
    doc: str,
    player_id: str,
    after: int,
    limit: int,
    checks: list[str],
    check_params: list[Any],
) -> Found:
    """Up to `limit` rows from each of the player's accounts' history and from the partial index,
    each in journal order; the first `limit` of their union."""
    prefix = f"{PLAYER_PREFIX}{player_id}:"
    accounts = [
        a
        for (a,) in _fetch(
            db, "SELECT account FROM accounts WHERE account >= ? AND account < ?", [prefix, prefix[:-1] + ";"]
        )
        if player_of(a) == player_id  # not the accounts of a player whose id extends this one's with ":"
    ]
    found: dict[int, str] = {}
    for account in accounts:
        found.update(_fetch(db, history_arm_sql(doc, checks), [account, after, *check_params, limit]))
    found.update(_fetch(db, unposted_arm_sql(doc, checks), [player_id, after, *check_params, limit]))
    return sorted(found.items())[:limit]


def _of_round(
    db: sqlite3.Connection,
    doc: str,
    round_id: str,
    after: int,
    limit: int,
    checks: list[str],
    check_params: list[Any],
) -> Found:
    return _fetch(db, round_sql(doc, checks), [round_id, round_id, round_id, after, after, *check_params, limit])
