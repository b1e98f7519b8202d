"""Route declarations both services use, and the OpenAPI 3.1 document generated from them.

A service lists its routes once (`Route`); `serve_routes` registers them with the app and serves
the document at `/openapi.json`, so what is served and what is documented cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from shared import auth
from shared.contract import openapi
from shared.errors import BadRequest
from shared.ids import is_id
from shared.web import Handler, json_response

# Served by shared.web.make_app (and /openapi.json by serve_routes) on every process:
# (path, summary, public).
COMMON_PATHS = (
    ("/healthz", "Alive", True),
    ("/metrics", "Prometheus metrics (roles metrics, admin_read)", False),
    ("/openapi.json", "This document", True),
)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    query: dict[str, str] = field(default_factory=dict)  # name -> "integer" | "string"
    ndjson: bool = False
    created: bool | None = None  # answers 201; by default: a POST with a body
    answer: type[BaseModel] | None = None  # the success body (None: NDJSON or no JSON body)
    codes: tuple[str, ...] | None = None  # problem codes it can answer (None: by method and body)
    tag: str | None = None  # OpenAPI tag (None: from the path)
    replays: bool = False  # a replay of a journaled write answers 200 with the same body
    hidden_fields: frozenset[str] = frozenset()  # request members this service sets itself (not advertised)
    unready_status: int | None = None  # a readiness probe: this status (same body) while not ready
    media: str | tuple[str, ...] | None = None  # the success media type(s) when not JSON (NDJSON, SSE, CSV...)

    @property
    def answers_201(self) -> bool:
        return self.created if self.created is not None else (self.method == "POST" and self.body is not None)


def path_id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not is_id(value):
        raise BadRequest(f"{name}: not a valid id", field=name)
    return value


def document(
    routes: Iterable[Route], *, title: str, description: str, answer_headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of these routes and the common ones (shared/contract/openapi.py)."""
    return openapi.document(
        routes, title=title, description=description, common=COMMON_PATHS, answer_headers=answer_headers
    )


def serve_routes(
    app: web.Application,
    routes: list[Route],
    *,
    title: str,
    description: str,
    answer_headers: dict[str, str] | None = None,
) -> None:
    """Register `routes` and serve their OpenAPI document at `/openapi.json`. `answer_headers`
    (name -> description) are headers this service sends on every answer (e.g. X-Ledger-Epoch)."""
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler)
    doc = document(routes, title=title, description=description, answer_headers=answer_headers)

    @auth.public
    async def openapi_json(request: web.Request) -> web.Response:
        return json_response(doc)

    app.router.add_get("/openapi.json", openapi_json)
