"""The boundary between the domain's refusals and the answers the ledger gives for them.

The domain (core_ledger/domain) names a refusal by its code only; which HTTP status and problem
class carry a code is the error table's business (`shared.errors.CLASS_BY_CODE`). This is the one
place a `Rejection` (not journaled) becomes a `CroupierError`, and a journaled transaction's
answer (`CommittedAnswer`, `RejectedAnswer`: rendered by the domain without HTTP) gets its status
and body: the same bytes the first time and on every replay, apart from `replayed`.
"""

from __future__ import annotations

from typing import Any

from shared.errors import CroupierError, error_from_code, problem, status_for

from core_ledger.domain import Answer, RejectedAnswer, Rejection


def as_error(rejection: Rejection) -> CroupierError:
    """The operating error that answers a non-binding refusal (its code, detail and `field`)."""
    extra = {} if rejection.field is None else {"field": rejection.field}
    return error_from_code(str(rejection.code), rejection.detail, **extra)


def journaled_error(rejected: RejectedAnswer) -> CroupierError:
    """The operating error that answers a journaled refusal, first time and on replays: its code
    and detail, with the `sequence` and `transaction_id` it was journaled at."""
    return error_from_code(
        rejected.code, rejected.detail, sequence=rejected.sequence, transaction_id=rejected.transaction_id
    )


def status_and_body(answer: Answer, *, replayed: bool) -> tuple[int, dict[str, Any]]:
    """A journaled transaction's (status, body): committed 201 (a replay 200), a journaled
    refusal the status and problem+json of its code; `replayed` last, saying which."""
    if isinstance(answer, RejectedAnswer):
        error = journaled_error(answer)
        return status_for(error), {**problem(error), "replayed": replayed}
    return (200 if replayed else 201), {**answer.body, "replayed": replayed}
