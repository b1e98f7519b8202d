"""Bounded query-string values for the ledger's handlers: integers in a range, booleans, one of a
few choices, ids, and the page limit (at most the configured `page_limit_max`). A bad value is a 400
`validation_error` naming the parameter."""

from __future__ import annotations

from aiohttp import web

from shared.errors import BadRequest
from shared.ids import is_id

from core_ledger.app_keys import CONFIG


def query_int(request: web.Request, name: str, default: int, *, low: int = 0, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: an integer is required", field=name) from None
    if not low <= value <= high:
        raise BadRequest(f"{name}: must be between {low} and {high}", field=name)
    return value


def query_bool(request: web.Request, name: str) -> bool:
    """`true` or `false` (absent: false); anything else is a 400."""
    raw = request.query.get(name, "false")
    if raw not in ("true", "false"):
        raise BadRequest(f"{name}: true or false", field=name)
    return raw == "true"


def query_choice(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    value = request.query.get(name)
    if value is not None and value not in choices:
        raise BadRequest(f"{name}: must be one of {', '.join(choices)}", field=name)
    return value


def query_id(request: web.Request, name: str) -> str | None:
    """An id (shared/ids.py), or None when absent."""
    value = request.query.get(name)
    if value is not None and not is_id(value):
        raise BadRequest(f"{name}: not a valid id (1 to 128 of A-Z a-z 0-9 . _ : -)", field=name)
    return value


def page_limit(request: web.Request) -> int:
    high = request.app[CONFIG].page_limit_max
    return query_int(request, "limit", min(100, high), low=1, high=high)
