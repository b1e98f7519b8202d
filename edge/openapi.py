"""The OpenAPI 3.1 document of the edge, generated from its route table and pydantic models."""

from __future__ import annotations

import re
from typing import Any, Iterable

from shared.models import MONEY_OPS

PROBLEM = {"description": "An error (RFC 9457 problem+json with a stable `code`)",
           "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
PROBLEM_SCHEMA = {
    "type": "object", "required": ["type", "title", "status", "detail", "code"],
    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                   "detail": {"type": "string"}, "code": {"type": "string"}, "field": {"type": "string"},
                   "replayed": {"type": "boolean"}},
}


MONEY_PATHS = frozenset(path for _, _, path in MONEY_OPS.values())


def _operation(route: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    roles = sorted(getattr(route.handler, "croupier_roles", ()))
    public = getattr(route.handler, "croupier_public", False)
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": route.method.lower() + "_" + re.sub(r"[^A-Za-z0-9]+", "_", route.path).strip("_"),
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {}}}},
                      "default": PROBLEM},
        "security": [] if public else [{"bearer": []}],
    }
    if roles:
        op["description"] = "Roles: " + ", ".join(roles)
    params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
              for n in re.findall(r"{(\w+)}", route.path)]
    if params:
        op["parameters"] = params
    if route.method == "POST" and route.path in MONEY_PATHS:
        op["responses"]["201"] = {"description": "Committed by the ledger",
                                  "content": {"application/json": {"schema": {}}}}
    if route.body is not None:
        schema = route.body.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[route.body.__name__] = schema
        ref = {"$ref": f"#/components/schemas/{route.body.__name__}"}
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
    if route.path == "/v1/sync":
        op["responses"]["101"] = {"description": "Switching to the websocket sync protocol"}
    return op


def openapi_document(routes: Iterable[Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}
    paths: dict[str, Any] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    for path, summary in (("/healthz", "Alive"), ("/metrics", "Prometheus metrics (roles metrics, admin_read)"),
                          ("/openapi.json", "This document")):
        paths[path] = {"get": {"summary": summary, "operationId": "get_" + path.strip("/").replace(".", "_"),
                               "responses": {"200": {"description": "OK"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Croupier edge", "version": "1.0.0",
                 "description": "Regional edge: money forwarded to the core ledger, CRDT state served locally."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
