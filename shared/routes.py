"""Route declarations both services use, and the OpenAPI 3.1 document generated from them.

A service lists its routes once (`Route`); `serve_routes` registers them with the app and serves
the document at `/openapi.json`, so what is served and what is documented cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from shared import auth
from shared.errors import BadRequest
from shared.ids import is_id
from shared.web import Handler, json_response

PROBLEM = {"description": "An error (RFC 9457 problem+json with a stable `code`)",
           "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
PROBLEM_SCHEMA = {
    "type": "object", "required": ["type", "title", "status", "detail", "code", "request_id"],
    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                   "detail": {"type": "string"}, "code": {"type": "string"}, "field": {"type": "string"},
                   "replayed": {"type": "boolean"},
                   "request_id": {"type": "string", "description": "The request's X-Request-Id"}},
}
# Served by shared.web.make_app (and /openapi.json by serve_routes) on every process.
COMMON_PATHS = (("/healthz", "Alive", True), ("/metrics", "Prometheus metrics (roles metrics, admin_read)", False),
                ("/openapi.json", "This document", True))


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

    @property
    def answers_201(self) -> bool:
        return self.created if self.created is not None else (self.method == "POST" and self.body is not None)


def path_id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not is_id(value):
        raise BadRequest(f"{name}: not a valid id", field=name)
    return value


def _operation_id(method: str, path: str) -> str:
    return method.lower() + "_" + re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")


def _operation(route: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    roles = sorted(getattr(route.handler, "croupier_roles", ()))
    public = getattr(route.handler, "croupier_public", False)
    media = "application/x-ndjson" if route.ndjson else "application/json"
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": _operation_id(route.method, route.path),
        "responses": {"200": {"description": "OK", "content": {media: {"schema": {}}}}, "default": PROBLEM},
        "security": [] if public else [{"bearer": []}],
    }
    if roles:
        op["description"] = "Roles: " + ", ".join(roles)
    params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
              for n in re.findall(r"{(\w+)}", route.path)]
    params += [{"name": n, "in": "query", "required": False, "schema": {"type": kind}}
               for n, kind in route.query.items()]
    if params:
        op["parameters"] = params
    if route.body is not None:
        schema = route.body.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[route.body.__name__] = schema
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}}}}
    if route.answers_201:
        op["responses"]["201"] = {"description": "Committed", "content": {"application/json": {"schema": {}}}}
    if route.path == "/v1/sync":
        op["responses"]["101"] = {"description": "Switching to the websocket sync protocol"}
    return op


def document(routes: Iterable[Route], *, title: str, description: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    for path, summary, public in COMMON_PATHS:
        op: dict[str, Any] = {"summary": summary, "operationId": _operation_id("get", path),
                              "responses": {"200": {"description": "OK"}, "default": PROBLEM},
                              "security": [] if public else [{"bearer": []}]}
        paths[path] = {"get": op}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1.0.0", "description": description},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def serve_routes(app: web.Application, routes: list[Route], *, title: str, description: str) -> None:
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler)
    doc = document(routes, title=title, description=description)

    @auth.public
    async def openapi_json(request: web.Request) -> web.Response:
        return json_response(doc)

    app.router.add_get("/openapi.json", openapi_json)
