"""Operating errors with stable codes, and their RFC 9457 problem+json rendering.

Error tree (status in brackets)::

    CroupierError [500]             backup_failed
    ├── BadRequest [400]            validation_error, malformed_json
    ├── Unauthenticated [401]       unauthenticated
    ├── Forbidden [403]             forbidden
    ├── NotFound [404]              not_found
    ├── MethodNotAllowed [405]      method_not_allowed
    ├── Conflict [409]              round_closed, bet_rolled_back, version_conflict,
    │                               already_claimed, replica_diverged,
    │                               not_fenced, peer_is_primary, peer_unreadable, peer_promoting,
    │                               standby_behind, epoch_exhausted,
    │                               round_refunded, backup_not_configured, wagering_already_claimed,
    │                               session_games_full
    ├── RequestTimeout [408]        request_timeout
    ├── PayloadTooLarge [413]       payload_too_large
    ├── Unprocessable [422]         insufficient_funds, idempotency_key_reused, wagering_not_met,
    │                               bonus_expired, currency_mismatch, balance_limit_exceeded,
    │                               report_limit_exceeded
    ├── Locked [423]                account_frozen
    ├── Unavailable [503]           ledger_unavailable, not_primary, storage_unavailable,
    │                               standby_unavailable, edge_overloaded, too_many_connections
    └── Halted [500]                ledger_halted: NOT retryable. A money invariant broke inside
                                    the writer (a bug or corrupt state): it takes no write until an
                                    operator investigated and restarted it; retrying cannot help.

One table (`STATUS_BY_CLASS`) maps classes to statuses; `status_for` walks the class hierarchy. One
table (`CODES`) maps each code to its class, meaning and retryability.
"""

from __future__ import annotations

from dataclasses import dataclass
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


class RequestTimeout(CroupierError):
    code = "request_timeout"
    title = "Request timeout"


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
    RequestTimeout: 408,
    PayloadTooLarge: 413,
    Unprocessable: 422,
    Locked: 423,
    Unavailable: 503,
    Halted: 500,
    CroupierError: 500,
}


class MethodNotAllowed(CroupierError):
    code = "method_not_allowed"
    title = "Method not allowed"


STATUS_BY_CLASS[MethodNotAllowed] = 405


@dataclass(frozen=True)
class Code:
    """One stable problem `code`: the class that carries it (hence its status), what it means to a
    client, and whether the same request (same idempotency id) may succeed when sent again."""

    cls: type[CroupierError]
    meaning: str
    retryable: bool = False

    @property
    def status(self) -> int:
        return status_for(self.cls(""))


# The one table of problem codes (docs/API.md, "Errors", lists the same). Used to rebuild an
# exception from a stored (journaled) rejection, by clients that map answers back, and for the
# `code` enums of the OpenAPI documents. Every code a service answers with is here, and only those.
CODES: dict[str, Code] = {
    "validation_error": Code(BadRequest, "a field, path or query value is invalid (`field`, `errors`)"),
    "malformed_json": Code(MalformedJson, "the body is not UTF-8 JSON"),
    "unauthenticated": Code(Unauthenticated, "no or unknown bearer token"),
    "forbidden": Code(Forbidden, "the credential's role may not do this"),
    "not_found": Code(NotFound, "no such route, player, transaction, jackpot or round"),
    "method_not_allowed": Code(MethodNotAllowed, "the path does not take this method (`Allow` lists those it takes)"),
    "round_closed": Code(Conflict, "the round has a win or is closed"),
    "bet_rolled_back": Code(Conflict, "the bet was rolled back before it arrived"),
    "version_conflict": Code(Conflict, "`expected_version` is not the account's version"),
    "already_claimed": Code(Conflict, "the bonus was claimed already"),
    "replica_diverged": Code(Conflict, "a standby's journal is not a prefix of the primary's"),
    "not_fenced": Code(Conflict, "unfence asked of a copy that is not fenced"),
    "peer_is_primary": Code(Conflict, "a peer ledger proves a higher epoch as primary"),
    "peer_unreadable": Code(Conflict, "a peer ledger could not be read, so a fence cannot be judged wrong"),
    "peer_promoting": Code(Conflict, "a peer standby is being promoted at this moment"),
    "epoch_exhausted": Code(Conflict, "no epoch fits above the highest one announced (at most 18 digits)"),
    "session_games_full": Code(Conflict, "the player has session_games_max saved games: save into one of them"),
    "standby_behind": Code(Conflict, "the standby holds less than the primary acknowledged"),
    "backup_not_configured": Code(Conflict, "no backup_dir is configured"),
    "backup_failed": Code(CroupierError, "the backup could not be written or did not verify"),
    "checkpoints_not_configured": Code(Conflict, "no checkpoint_key_file is configured"),
    "consumer_limit_reached": Code(Conflict, "event_consumers_max named consumers exist already"),
    "round_refunded": Code(Conflict, "the round was refunded"),
    "wagering_already_claimed": Code(Conflict, "the bet wagered towards a bonus already claimed"),
    "request_timeout": Code(RequestTimeout, "the body did not arrive within http_body_timeout_s: nothing done", True),
    "payload_too_large": Code(PayloadTooLarge, "the body exceeds the size limit (`GET /v1/limits`)"),
    "insufficient_funds": Code(Unprocessable, "the balance does not cover the amount"),
    "idempotency_key_reused": Code(Unprocessable, "the id was used before with another request"),
    "wagering_not_met": Code(Unprocessable, "the bonus's wagering requirement is not met"),
    "bonus_expired": Code(Unprocessable, "the bonus expired"),
    "currency_mismatch": Code(Unprocessable, "the currency is not the account's, round's or jackpot's"),
    "balance_limit_exceeded": Code(Unprocessable, "the balance would exceed its limit"),
    "report_limit_exceeded": Code(Unprocessable, "a sum of the day's finance report would exceed its limit"),
    "report_too_large": Code(Unprocessable, "a report would read more day rows than its bound: narrow it"),
    "account_frozen": Code(Locked, "the player is frozen"),
    "ledger_unavailable": Code(Unavailable, "the ledger cannot take it now (queue full, unreachable)", True),
    "not_primary": Code(Unavailable, "this ledger copy is a standby or fenced: try the primary", True),
    "storage_unavailable": Code(Unavailable, "the store failed transiently", True),
    "standby_unavailable": Code(Unavailable, "no synchronous standby confirmed the commit in time", True),
    "edge_overloaded": Code(Unavailable, "the edge's own queue to the ledger is full: nothing was sent", True),
    "too_many_connections": Code(
        Unavailable, "the server holds http_connections_max client connections: the connection was closed", True
    ),
    "ledger_halted": Code(Halted, "a money invariant broke: no write until an operator restarts it"),
    "internal_error": Code(CroupierError, "a bug; it has been logged"),
}

CLASS_BY_CODE: dict[str, type[CroupierError]] = {code: spec.cls for code, spec in CODES.items()}
RETRYABLE_CODES = frozenset(code for code, spec in CODES.items() if spec.retryable)


def codes_of(*classes: type[CroupierError]) -> list[str]:
    """The codes carried by these classes (exactly: a subclass's codes are not included)."""
    return sorted(code for code, spec in CODES.items() if spec.cls in classes)


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
