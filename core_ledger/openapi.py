"""The OpenAPI 3.1 document of the ledger, generated from the route table and pydantic models."""

from __future__ import annotations

from typing import Any, Iterable

from core_ledger.routes import Route

PROBLEM = {"description": "An error (RFC 9457 problem+json with a stable `code`)",
           "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
PROBLEM_SCHEMA = {
    "type": "object", "required": ["type", "title", "status", "detail", "code"],
    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                   "detail": {"type": "string"}, "code": {"type": "string"}, "field": {"type": "string"},
                   "replayed": {"type": "boolean"}},
}


def _operation(route: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    roles = sorted(getattr(route.handler, "croupier_roles", ()))
    public = getattr(route.handler, "croupier_public", False)
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
              for name in _path_params(route.path)]
    params += [{"name": name, "in": "query", "required": False, "schema": {"type": kind}}
               for name, kind in route.query.items()]
    media = "application/x-ndjson" if route.ndjson else "application/json"
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.method.lower()}_{route.path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
        "responses": {"200": {"description": "OK", "content": {media: {"schema": {}}}}, "default": PROBLEM},
        "security": [] if public else [{"bearer": []}],
    }
    if roles:
        op["description"] = "Roles: " + ", ".join(roles)
    if params:
        op["parameters"] = params
    if route.body is not None:
        schema = route.body.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[route.body.__name__] = schema
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}}}}
        op["responses"]["201"] = {"description": "Committed", "content": {"application/json": {"schema": {}}}}
    return op


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def document(routes: Iterable[Route]) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Croupier core ledger", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
