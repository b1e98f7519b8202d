"""The boundary between the domain's refusals and the errors the ledger answers with.

The domain (core_ledger/domain) names a refusal by its code only; which HTTP status and problem
class carry a code is the error table's business (`shared.errors.CLASS_BY_CODE`). This is the one
place a `Rejection` becomes a `CroupierError`.
"""

from __future__ import annotations

from shared.errors import CroupierError, error_from_code

from core_ledger.domain import Rejection


def as_error(rejection: Rejection) -> CroupierError:
    """The operating error that answers a non-binding refusal (its code, detail and `field`)."""
    extra = {} if rejection.field is None else {"field": rejection.field}
    return error_from_code(str(rejection.code), rejection.detail, **extra)
