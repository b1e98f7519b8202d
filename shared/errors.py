"""Operating errors with stable codes, and their RFC 9457 problem+json rendering.

Error tree (status in brackets)::

    CroupierError [500]             backup_failed
    ├── BadRequest [400]            validation_error, malformed_json
    ├── Unauthenticated [401]       unauthenticated
    ├── Forbidden [403]             forbidden
    ├── NotFound [404]              not_found
    ├── Conflict [409]              round_closed, bet_rolled_back, version_conflict,
    │                               already_claimed, request_in_progress, replica_diverged,
    │                               not_fenced, peer_is_primary, standby_behind, round_refunded,
    │                               backup_not_configured, wagering_already_claimed
    ├── PayloadTooLarge [413]       payload_too_large
    ├── Unprocessable [422]         insufficient_funds, idempotency_key_reused, wagering_not_met,
    │                               bonus_expired, currency_mismatch, balance_limit_exceeded
    ├── Locked [423]                account_frozen
    ├── Unavailable [503]           ledger_unavailable, not_primary, storage_unavailable,
    │                               standby_unavailable
    └── Halted [500]                ledger_halted: NOT retryable. A money invariant broke inside
                                    the writer (a bug or corrupt state): it takes no write until an
                                    operator investigated and restarted it; retrying cannot help.

One table (`STATUS_BY_CLASS`) maps classes to statuses; `status_for` walks the class hierarchy.
"""

from __future__ import annotations

from typing import Any


class CroupierError(Exception):
    """An operating error: expected, named by a stable snake_case `code`."""

    code = "internal_error"
    title = "Internal error"

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra = extra


class BadRequest(CroupierError):
    code = "validation_error"
    title = "Invalid request"


class MalformedJson(BadRequest):
    code = "malformed_json"
    title = "Malformed JSON"


class Unauthenticated(CroupierError):
    code = "unauthenticated"
    title = "Authentication required"


class Forbidden(CroupierError):
    code = "forbidden"
    title = "Forbidden"


class NotFound(CroupierError):
    code = "not_found"
    title = "Not found"


class Conflict(CroupierError):
    title = "Conflict"


class PayloadTooLarge(CroupierError):
    code = "payload_too_large"
    title = "Payload too large"


class Unprocessable(CroupierError):
    title = "Unprocessable"


class Locked(CroupierError):
    code = "account_frozen"
    title = "Account frozen"


class Unavailable(CroupierError):
    code = "ledger_unavailable"
    title = "Service unavailable"

    def __init__(self, detail: str, *, retry_after_s: int = 1, **kw: Any) -> None:
        super().__init__(detail, **kw)
        self.retry_after_s = retry_after_s


class Halted(CroupierError):
    code = "ledger_halted"
    title = "Ledger halted"


STATUS_BY_CLASS: dict[type[CroupierError], int] = {
    BadRequest: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    Unprocessable: 422,
    Locked: 423,
    Unavailable: 503,
    Halted: 500,
    CroupierError: 500,
}

# Codes that a ledger decision can produce, mapped to the class that carries them. Used to
# rebuild an exception from a stored (journaled) rejection and by clients that map answers back.
CLASS_BY_CODE: dict[str, type[CroupierError]] = {
    "validation_error": BadRequest,
    "malformed_json": MalformedJson,
    "unauthenticated": Unauthenticated,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "round_closed": Conflict,
    "bet_rolled_back": Conflict,
    "version_conflict": Conflict,
    "already_claimed": Conflict,
    "request_in_progress": Conflict,
    "replica_diverged": Conflict,
    "not_fenced": Conflict,
    "peer_is_primary": Conflict,
    "standby_behind": Conflict,
    "backup_not_configured": Conflict,
    "backup_failed": CroupierError,  # 500: the backup could not be written or did not verify
    "checkpoints_not_configured": Conflict,
    "consumer_limit_reached": Conflict,
    "round_refunded": Conflict,
    "wagering_already_claimed": Conflict,
    "payload_too_large": PayloadTooLarge,
    "insufficient_funds": Unprocessable,
    "idempotency_key_reused": Unprocessable,
    "wagering_not_met": Unprocessable,
    "bonus_expired": Unprocessable,
    "currency_mismatch": Unprocessable,
    "balance_limit_exceeded": Unprocessable,
    "account_frozen": Locked,
    "ledger_unavailable": Unavailable,
    "not_primary": Unavailable,
    "storage_unavailable": Unavailable,
    "standby_unavailable": Unavailable,
    "ledger_halted": Halted,
}


def status_for(exc: CroupierError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_CLASS:
            return STATUS_BY_CLASS[cls]
    raise AssertionError("CroupierError is always in the table")


def error_from_code(code: str, detail: str, **extra: Any) -> CroupierError:
    cls = CLASS_BY_CODE.get(code, CroupierError)
    if cls is Unavailable:
        return Unavailable(detail, code=code, **extra)
    return cls(detail, code=code, **extra)


def problem(exc: CroupierError) -> dict[str, Any]:
    """The RFC 9457 body for an error (extra members such as `field` or `replayed` included)."""
    body: dict[str, Any] = {
        "type": f"https://croupier.dev/problems/{exc.code}",
        "title": exc.title,
        "status": status_for(exc),
        "detail": exc.detail,
        "code": exc.code,
    }
    body.update(exc.extra)
    return body
