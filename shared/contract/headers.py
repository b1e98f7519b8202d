"""The names of the HTTP headers of the wire contract, in one place (docs/API.md, "Headers")."""

from __future__ import annotations

AUTHORIZATION = "Authorization"  # request: `Bearer <token>`
WWW_AUTHENTICATE = "WWW-Authenticate"  # answer of a 401 (RFC 6750)
ALLOW = "Allow"  # answer of a 405: the methods the path takes
RETRY_AFTER = "Retry-After"  # answer of a 503: seconds to wait (at least 1)
REQUEST_ID = "X-Request-Id"  # request and answer: the request's id (shared/request_ids.py)
LEDGER_EPOCH = "X-Ledger-Epoch"  # answer: the ledger's epoch; request: the highest epoch the caller saw
# answer: "primary", or why this copy takes no write: "standby", "passive" (waits for the writer
# lease), "fenced" (a primary that lost a failover). Edges read money only from a "primary".
LEDGER_ROLE = "X-Ledger-Role"
JOURNAL_HEAD = "X-Journal-Head"  # answer of GET /v1/journal: the primary's head sequence
JOURNAL_ACKNOWLEDGED = "X-Journal-Acknowledged"  # answer of GET /v1/journal: what may have been answered

BEARER_REALM = "croupier"

EPOCH_DIGITS_MAX = 18  # an epoch of more digits would not fit the ledger's integers


def epoch_of(raw: str) -> int | None:
    """The epoch an `X-Ledger-Epoch` value names: ASCII digits, at most EPOCH_DIGITS_MAX of them;
    None for anything else. (`str.isdigit` alone also takes "²", which `int` refuses, and "١٢",
    which `int` reads as 12.)"""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > EPOCH_DIGITS_MAX:
        return None
    return int(raw)
