"""The answer to a journaled transaction, rendered from its entry alone (so replays are identical).

Replays render an entry read back from the journal, whose canonical JSON has sorted keys, while the
first answer renders the entry just decided, whose request and results are in the order they were
built. Every member taken from the request or the results is therefore rendered in sorted-key
order, so the first answer and its replays are the same bytes apart from `replayed`.

The domain speaks no HTTP: a journaled refusal is rendered as its code and detail only
(`RejectedAnswer`); the ledger's boundary (core_ledger/rejections.py) gives it the status, title and
problem+json form from the error table, and adds `replayed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from core_ledger.domain.state import ROUND_CLIENT

BODY_KEYS = ("balance", "player", "jackpot", "bonus")  # results shown beside the transaction
JOURNAL_ONLY = frozenset({ROUND_CLIENT})  # results the fold needs that answers do not show


@dataclass(frozen=True)
class CommittedAnswer:
    """A committed transaction's answer body (without `replayed`, which the boundary adds)."""

    body: dict[str, Any]


@dataclass(frozen=True)
class RejectedAnswer:
    """A journaled refusal: its code (a `RejectCode` value, as stored) and detail, and where it sits
    in the journal. Which status and title carry the code is the boundary's business."""

    code: str
    detail: str
    sequence: int
    transaction_id: str | None


Answer = CommittedAnswer | RejectedAnswer


def public_transaction(entry: dict[str, Any]) -> dict[str, Any]:
    tx = entry["transaction"]
    return _public_transaction(entry, *sorted_keys((tx["request"], tx["result"])))


def _public_transaction(entry: dict[str, Any], request: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The transaction as answers show it; `request` and `result` are its own with every mapping
    in sorted-key order (`sorted_keys`, both in one call), so a caller that also shows members of
    the result sorts them once."""
    tx = entry["transaction"]
    out: dict[str, Any] = {
        "id": tx["id"],
        "type": tx["type"],
        "sequence": entry["sequence"],
        "epoch": entry["epoch"],
        "committed_at": tx["committed_at"],
        "via": tx["via"],
        "client_id": tx["client_id"],
        "outcome": tx["outcome"],
    }
    out.update(request)
    if tx["outcome"] == "rejected":
        out["code"] = tx["code"]
    for name, value in result.items():  # sorted by name
        if name not in BODY_KEYS and name not in JOURNAL_ONLY:
            out[name] = value
    # The epoch of the ledger copy that journaled it, always (a jackpot payout's `epoch` above is
    # the jackpot's): with `sequence`, its place in that copy's history (edges order effects by it).
    out["ledger_epoch"] = entry["epoch"]
    return out


def sorted_keys(value: Any) -> Any:
    """`value` with every mapping in it in sorted-key order (the order of the stored journal).

    By one canonical encoding and decoding (as the journal stores it): on the writer's hot path this
    runs for every answer, and orjson does it several times faster than a recursive copy in Python.
    Journal values are JSON values (integers, text, null, booleans, lists and mappings), so what
    comes back equals what went in."""
    if isinstance(value, dict | list | tuple):  # a tuple comes back as a list (a JSON array)
        return orjson.loads(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
    return value


def render(entry: dict[str, Any]) -> Answer:
    """The answer a journaled entry gives, the first time and on every replay."""
    tx = entry["transaction"]
    if tx["outcome"] == "rejected":
        return RejectedAnswer(tx["code"], tx["detail"], entry["sequence"], tx["id"])
    request, result = sorted_keys((tx["request"], tx["result"]))  # one encoding and decoding, not two
    body: dict[str, Any] = {"transaction": _public_transaction(entry, request, result)}
    for name in BODY_KEYS:
        if name in result:
            body[name] = result[name]
    return CommittedAnswer(body)
