"""The one table of problem codes (`CODES` in shared/errors.py) is consistent with the code: every
code a service can answer with is in it, and every code in it is produced somewhere (a class's
default code, a `code="..."` argument, a member of the domain's `RejectCode`/`RefusalCode`, or the
web plumbing's own).
`request_in_progress` was listed without ever being produced; it is gone (docs/decisions/wire-contract.md)."""

from __future__ import annotations

import re
from pathlib import Path

from shared.errors import CODES, RETRYABLE_CODES, Unavailable

from core_ledger.domain.outcomes import RefusalCode, RejectCode

ROOT = Path(__file__).resolve().parents[2]
PRODUCERS = (
    re.compile(r'code\s*=\s*"([a-z_]+)"'),  # a class default or a code= argument
    re.compile(r'\{404: "([a-z_]+)", 405: "([a-z_]+)"\}'),  # aiohttp's own answers (shared/web.py)
)
ONLY_LOGGED = {"client_disconnected"}  # the caller went away: logged, never answered
VARIABLE_STATUS = {"http_error"}  # any other framework error: documented apart in docs/API.md


def produced() -> set[str]:
    found: set[str] = {c.value for c in RejectCode} | {c.value for c in RefusalCode}  # the domain's refusals
    for package in ("core_ledger", "edge", "shared"):
        for path in (ROOT / package).rglob("*.py"):
            if "contract" in path.parts:
                continue  # the contract names codes; it produces none
            text = path.read_text()
            for pattern in PRODUCERS:
                for match in pattern.findall(text):
                    found.update([match] if isinstance(match, str) else match)
    return found


def test_every_code_produced_is_in_the_table():
    codes = produced()
    assert "standby_unavailable" in codes and "insufficient_funds" in codes  # the scan sees what it should
    assert sorted(codes - set(CODES) - ONLY_LOGGED - VARIABLE_STATUS) == []


def test_every_code_in_the_table_is_produced_somewhere():
    assert sorted(set(CODES) - produced()) == []
    assert "request_in_progress" not in CODES


def test_retryable_codes_are_the_unavailable_ones_and_the_body_that_came_too_slowly():
    """A 503 leaves the outcome to a retry with the same id; a 408 `request_timeout` was answered before any
    handler ran (the body did not arrive in time), so the same request sent again may succeed. No other
    4xx is worth resending unchanged."""
    unavailable = {c for c, spec in CODES.items() if issubclass(spec.cls, Unavailable)}
    assert unavailable | {"request_timeout"} == RETRYABLE_CODES
    assert all(spec.meaning for spec in CODES.values())
