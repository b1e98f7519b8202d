"""The OpenAPI 3.1 document of a service, generated from its route table and the contract models.

Every operation gets: an operationId, a summary, a tag, the roles that may call it (`x-roles`, in
its description too, and `security` naming the one bearer scheme), its parameters, its request
schema (members the service sets itself left out), a response per status it can answer — the
success answer's schema with an example, and per error status an `application/problem+json`
schema whose `code` is an `enum` of exactly the codes that status can carry for this operation —
and the headers every answer carries (`X-Request-Id`, the service's own, `Retry-After` on 503,
`WWW-Authenticate` on 401). Nothing here is written by hand per route: adding a route, a model or
a code changes the document.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from shared.contract import headers
from shared.contract.answers import Health, Problem
from shared.contract.operations import READ_CODES, REQUEST_CODES
from shared.errors import CODES
from shared.ids import ID_PATTERN

if TYPE_CHECKING:
    from shared.routes import Route

REF = "#/components/schemas/{model}"
JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
BEARER = "bearer"

STATUS_TEXT = {
    200: "OK",
    201: "Committed",
    101: "Switching protocols",
    400: "Invalid request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    422: "Unprocessable",
    423: "Locked",
    500: "Internal error",
    503: "Unavailable",
}
TAG_TEXT = {
    "money": "Money writes (idempotent by id)",
    "reads": "Reads of committed state",
    "admin": "Operators (admin_read, admin_write)",
    "replication": "Standbys and the journal",
    "edge-state": "State served by the edge (CRDT)",
    "operations": "Health, readiness, metrics, limits",
}


def _schema_of(
    model: type[BaseModel], schemas: dict[str, Any], *, hidden: frozenset[str] = frozenset(), name: str | None = None
) -> dict[str, Any]:
    """Put `model`'s JSON schema (and the models it uses) in `schemas`; a $ref to it."""
    schema = model.model_json_schema(ref_template=REF)
    for def_name, sub in schema.pop("$defs", {}).items():
        schemas.setdefault(def_name, sub)
    if hidden:
        schema = copy.deepcopy(schema)
        for member in hidden:
            schema.get("properties", {}).pop(member, None)
        schema["required"] = [r for r in schema.get("required", []) if r not in hidden]
    key = name or model.__name__
    schemas[key] = schema
    return {"$ref": REF.format(model=key)}


def _problem_schema(schemas: dict[str, Any]) -> dict[str, Any]:
    ref = _schema_of(Problem, schemas)
    problem = schemas["Problem"]
    problem["required"] = sorted({*problem.get("required", []), "request_id"})
    problem["properties"]["request_id"] = {"type": "string", "description": "The request's X-Request-Id"}
    return ref


def _header(description: str, kind: str = "string") -> dict[str, Any]:
    return {"description": description, "schema": {"type": kind}}


def _answer_headers(service_headers: dict[str, str], status: int) -> dict[str, Any]:
    out = {headers.REQUEST_ID: _header("The request's id (the caller's valid one, else a new one)")}
    for name, text in service_headers.items():
        out[name] = _header(text)
    if status == 503:
        out[headers.RETRY_AFTER] = _header("Seconds to wait before trying again (at least 1)", "integer")
    if status == 401:
        out[headers.WWW_AUTHENTICATE] = _header(
            '`Bearer realm="croupier"` (RFC 6750), with `error` when a token was sent'
        )
    return out


def example_of(model: type[BaseModel]) -> Any | None:
    """The first documented example of `model` (its `json_schema_extra` examples), or None."""
    extra = model.model_config.get("json_schema_extra")
    examples = extra.get("examples") if isinstance(extra, dict) else None
    return examples[0] if isinstance(examples, list) and examples else None


def _codes(route: Route) -> tuple[str, ...]:
    if route.codes is not None:
        return route.codes
    if getattr(route.handler, "croupier_public", False):
        return ()
    return REQUEST_CODES if route.body is not None else READ_CODES


def _tag(route: Route) -> str:
    if route.tag is not None:
        return route.tag
    if route.path.startswith("/admin/"):
        return "admin"
    if route.path in ("/readyz", "/v1/limits"):
        return "operations"
    return "reads"


def _problem_responses(codes: Iterable[str], service_headers: dict[str, str]) -> dict[str, Any]:
    by_status: dict[int, set[str]] = {}
    for code in codes:
        by_status.setdefault(CODES[code].status, set()).add(code)
    out = {}
    for status, named in sorted(by_status.items()):
        enum = sorted(named)
        schema = {
            "allOf": [
                {"$ref": REF.format(model="Problem")},
                {"type": "object", "properties": {"code": {"type": "string", "enum": enum}}},
            ]
        }
        example = {
            "type": f"https://croupier.dev/problems/{enum[0]}",
            "title": STATUS_TEXT.get(status, "Error"),
            "status": status,
            "detail": CODES[enum[0]].meaning,
            "code": enum[0],
            "request_id": "0123456789abcdef0123456789abcdef",
        }
        meanings = "; ".join(
            f"`{c}`: {CODES[c].meaning}" + (" (retryable)" if CODES[c].retryable else "") for c in enum
        )
        out[str(status)] = {
            "description": f"{STATUS_TEXT.get(status, 'Error')}. {meanings}",
            "headers": _answer_headers(service_headers, status),
            "content": {PROBLEM_JSON: {"schema": schema, "example": example}},
        }
    return out


def _success(route: Route, schemas: dict[str, Any], service_headers: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if route.path == "/v1/sync":
        out["101"] = {
            "description": "Switching to the websocket sync protocol",
            "headers": _answer_headers(service_headers, 101),
        }
        return out
    if route.answer is not None:
        content: dict[str, Any] = {"schema": _schema_of(route.answer, schemas)}
        example = example_of(route.answer)
        if example is not None:
            content["example"] = example
        media = {JSON: content}
        # Other representations of the same answer (a report as CSV or NDJSON), by `Accept`.
        extra = route.media if isinstance(route.media, tuple) else ((route.media,) if route.media else ())
        media.update({kind: {"schema": {"type": "string"}} for kind in extra})
    else:
        kinds = route.media if isinstance(route.media, tuple) else (route.media or "application/x-ndjson",)
        media = {kind: {"schema": {"type": "string"}} for kind in kinds}
    statuses = [201] if route.answers_201 else [200]
    if route.replays:
        statuses = sorted({*statuses, 200})
    if route.unready_status is not None:
        statuses.append(route.unready_status)
    for status in statuses:
        text = STATUS_TEXT.get(status, "OK")
        if status == 200 and route.replays and route.answers_201:
            text = "A replay of the first answer (`replayed: true`)"
        if status == route.unready_status:
            text = "Not ready (the same body says why)"
        out[str(status)] = {"description": text, "headers": _answer_headers(service_headers, status), "content": media}
    return out


def operation(route: Route, schemas: dict[str, Any], service_headers: dict[str, str]) -> dict[str, Any]:
    roles = sorted(getattr(route.handler, "croupier_roles", ()))
    public = getattr(route.handler, "croupier_public", False)
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": _operation_id(route.method, route.path),
        "tags": [_tag(route)],
        "security": [] if public else [{BEARER: []}],
        "x-roles": roles,
        "description": "Public (no credential)." if public else "Roles: " + ", ".join(f"`{r}`" for r in roles) + ".",
    }
    params: list[dict[str, Any]] = [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}
        for n in re.findall(r"{(\w+)}", route.path)
    ]
    params += [
        {"name": n, "in": "query", "required": False, "schema": {"type": kind}} for n, kind in route.query.items()
    ]
    if params:
        op["parameters"] = params
    if route.body is not None:
        name = route.body.__name__ + ("Forwarded" if route.hidden_fields else "")
        ref = _schema_of(route.body, schemas, hidden=route.hidden_fields, name=name)
        body: dict[str, Any] = {"schema": ref}
        example = example_of(route.body)
        if isinstance(example, dict):
            body["example"] = {k: v for k, v in example.items() if k not in route.hidden_fields}
        op["requestBody"] = {"required": True, "content": {JSON: body}}
    responses = _success(route, schemas, service_headers)
    codes = _codes(route)
    if codes and not public:
        responses.update(_problem_responses(codes, service_headers))
    op["responses"] = dict(sorted(responses.items()))
    return op


def _operation_id(method: str, path: str) -> str:
    return method.lower() + "_" + re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")


def _common(
    path: str, summary: str, public: bool, schemas: dict[str, Any], service_headers: dict[str, str]
) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "OK", "headers": _answer_headers(service_headers, 200)}
    if path == "/healthz":
        ok["content"] = {JSON: {"schema": _schema_of(Health, schemas), "example": {"status": "ok"}}}
    elif path == "/metrics":
        ok["content"] = {"text/plain": {"schema": {"type": "string"}}}
    else:
        ok["content"] = {JSON: {"schema": {"type": "object"}}}
    responses = {"200": ok}
    if not public:
        responses.update(_problem_responses(("unauthenticated", "forbidden"), service_headers))
    return {
        "summary": summary,
        "operationId": _operation_id("get", path),
        "tags": ["operations"],
        "security": [] if public else [{BEARER: []}],
        "x-roles": [] if public else ["admin_read", "metrics"],
        "description": "Public (no credential)." if public else "Roles: `admin_read`, `metrics`.",
        "responses": responses,
    }


def document(
    routes: Iterable[Route],
    *,
    title: str,
    description: str,
    common: Iterable[tuple[str, str, bool]],
    answer_headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    service_headers = dict(answer_headers or {})
    schemas: dict[str, Any] = {}
    _problem_schema(schemas)
    paths: dict[str, dict[str, Any]] = {}
    tags: set[str] = {"operations"}
    for route in routes:
        op = operation(route, schemas, service_headers)
        tags.update(op["tags"])
        paths.setdefault(route.path, {})[route.method.lower()] = op
    for path, summary, public in common:
        paths[path] = {"get": _common(path, summary, public, schemas, service_headers)}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1.0.0", "description": description},
        "servers": [{"url": "/", "description": "This process (the document is served by the service it describes)"}],
        "tags": [{"name": t, "description": TAG_TEXT.get(t, t)} for t in sorted(tags)],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token of the service's configuration; its role decides what it may call "
                    "(each operation's `x-roles`). A 401 answer carries `WWW-Authenticate: Bearer`.",
                }
            },
        },
    }
