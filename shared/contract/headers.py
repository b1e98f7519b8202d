"""The names of the HTTP headers of the wire contract, in one place (docs/API.md, "Headers")."""

from __future__ import annotations

AUTHORIZATION = "Authorization"  # request: `Bearer <token>`
WWW_AUTHENTICATE = "WWW-Authenticate"  # answer of a 401 (RFC 6750)
ALLOW = "Allow"  # answer of a 405: the methods the path takes
RETRY_AFTER = "Retry-After"  # answer of a 503: seconds to wait (at least 1)
REQUEST_ID = "X-Request-Id"  # request and answer: the request's id (shared/request_ids.py)
LEDGER_EPOCH = "X-Ledger-Epoch"  # answer: the ledger's epoch; request: the highest epoch the caller saw
JOURNAL_HEAD = "X-Journal-Head"  # answer of GET /v1/journal: the primary's head sequence
JOURNAL_ACKNOWLEDGED = "X-Journal-Acknowledged"  # answer of GET /v1/journal: what may have been answered

BEARER_REALM = "croupier"
