"""The ledger's non-success answers as seen by the edge (pure: bytes and dicts in, errors out).

A problem+json body becomes the same `CroupierError` here (its extra members kept), so a game
server gets the ledger's own code. An attempt that did not reach a decision of the ledger is an
`AttemptFailed` (retried by the caller); `not_primary` is told apart from other failures because it
is an answer of a healthy ledger that is just not the one to use.
"""

from __future__ import annotations

from typing import Any

import orjson

from shared.errors import CroupierError, NotFound, Unavailable, error_from_code

PROBLEM_FIELDS = frozenset({"type", "title", "status", "detail", "code", "request_id"})


class AttemptFailed(Exception):
    """One attempt did not reach a decision of the ledger (retryable)."""


class NotPrimary(AttemptFailed):
    """The ledger answered, but it is not (or no longer) the primary: try the next URL."""


# Whole-batch answers that judge the request itself, not the link: the same batch would get the
# same answer again (edge and ledger versions apart, a bound the ledger lowered, or a bug).
# A ledger's own 500 `internal_error` to a whole batch is a bug with some action in it, not a failure
# of the link: retried as it is, it fails again (and opened the breaker for every caller).
BATCH_REFUSALS = frozenset({400, 413, 422, 500})


class BatchRefused(Exception):
    """The ledger refused a money batch as a whole (as a bad request, or with its own 500: see
    `refuses_batch`). Not a failure of the link, and not retryable as it is: the batch is split
    until the action at fault is alone, and that one gets the ledger's problem."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"ledger batch refused with {status}")
        self.status = status
        self.body = body  # the problem+json answer, or None


def problem_code(raw: bytes) -> str | None:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def json_or_none(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def error_from_problem(status: int, body: Any) -> CroupierError:
    """The ledger's problem+json answer as the same error here (extra members kept). A 404 without
    a problem body (a proxy's, or a route an older ledger lacks) is still `not_found`."""
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        if status == 404:
            return NotFound(f"the ledger answered {status} without a problem body")
        return Unavailable(f"the ledger answered {status} without a problem body")
    extra = {k: v for k, v in body.items() if k not in PROBLEM_FIELDS}
    return error_from_code(body["code"], str(body.get("detail", "")), **extra)


def refuses_batch(status: int, raw: bytes) -> bool:
    """Whether a batch answer refuses the batch itself: a bad request, or the ledger's own 500
    `internal_error` (a proxy's 500 without it is a failure of the link)."""
    if status == 500:
        return problem_code(raw) == "internal_error"
    return status in BATCH_REFUSALS


def refused_outcome(status: int, raw: bytes) -> str:
    """The outcome label of a non-success answer: `not_primary` (a healthy ledger, not the one to
    use: try elsewhere), `busy` (a healthy ledger holding as many client connections as it may
    refused a new one: try it again, the connections already open still serve) or an error."""
    if status == 503:
        code = problem_code(raw)
        if code == "not_primary":
            return "not_primary"
        if code == "too_many_connections":
            return "busy"
    return "error"
