"""The HTTP form of one writer result: a success as JSON, a stored rejection replayed as
problem+json with its original status, a refusal (a `CroupierError`) raised for the error
middleware to render."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shared.errors import CroupierError
from shared.web import dumps


def answer(result: tuple[int, dict[str, Any]] | CroupierError) -> web.Response:
    """The HTTP form of one writer result (a stored rejection replays as problem+json)."""
    if isinstance(result, CroupierError):
        raise result
    status, body = result
    kind = "application/problem+json" if status >= 400 else "application/json"
    return web.Response(body=dumps(body), status=status, content_type=kind)
