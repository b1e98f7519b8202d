"""Every answer an in-process service gives in the tests is checked against its OpenAPI document.

A pytest plugin (registered in tests/conftest.py): from the start of the session, the services' app
factories (`core_ledger.app`, `edge.app`) serve their routes through a wrapper that adds a response hook to
the app. The hook finds the operation of the answer (method and route), and checks that its status
is documented for that operation, and that a JSON body validates against the documented schema of
that status (the problem `code` against its enum). Violations are collected; the test fails at
teardown listing them. Validators are compiled once per (document, operation, status).

Answers of routes the document does not describe (aiohttp's own 404/405 for unknown paths) and
streamed answers (the journal export) are not checked here; schemathesis covers the live processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

Violation = str
_VIOLATIONS: list[Violation] = []


class AnswerChecker:
    """The compiled schemas of one OpenAPI document."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self._registry: Registry = Registry().with_resource("urn:openapi", Resource(doc, specification=DRAFT202012))
        self._validators: dict[tuple[str, str, str, str], Draft202012Validator | None] = {}

    def _validator(self, method: str, path: str, status: str, media: str) -> Draft202012Validator | None:
        key = (method, path, status, media)
        if key not in self._validators:
            response = self.doc["paths"][path][method]["responses"][status]
            schema = response.get("content", {}).get(media, {}).get("schema")
            self._validators[key] = (
                None if schema is None else Draft202012Validator(_rebase(schema), registry=self._registry)
            )
        return self._validators[key]

    def check(self, method: str, path: str, status: int, media: str, body: bytes | None) -> list[Violation]:
        """What is wrong with this answer (empty: nothing)."""
        op = self.doc["paths"].get(path, {}).get(method.lower())
        if op is None:
            return [f"{method} {path}: not in the OpenAPI document"]
        responses = op["responses"]
        if str(status) not in responses:
            return [f"{method} {path}: status {status} is not documented (documented: {sorted(responses)})"]
        documented = responses[str(status)].get("content", {})
        if media not in documented and documented:
            return [f"{method} {path} {status}: content type {media} is not documented ({sorted(documented)})"]
        if media not in ("application/json", "application/problem+json") or body is None:
            return []
        validator = self._validator(method.lower(), path, str(status), media)
        if validator is None:
            return []
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            return [f"{method} {path} {status}: the body is not JSON"]
        return [f"{method} {path} {status}: {e.json_path}: {e.message}" for e in validator.iter_errors(value)][:5]


def _rebase(schema: Any) -> Any:
    """`#/components/...` refs of the document, made to point into the registered resource."""
    if isinstance(schema, dict):
        return {
            k: ("urn:openapi" + v if k == "$ref" and isinstance(v, str) and v.startswith("#") else _rebase(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_rebase(v) for v in schema]
    return schema


def checking(serve: Callable[..., None], sink: list[Violation]) -> Callable[..., None]:
    """`serve_routes` that also checks every answer of the app it serves against its document."""

    def serve_routes(app: web.Application, routes: list[Any], **kw: Any) -> None:
        from shared.routes import document

        serve(app, routes, **kw)
        checker = AnswerChecker(document(routes, **kw))

        async def check(request: web.Request, response: web.StreamResponse) -> None:
            resource = request.match_info.route.resource
            if resource is None or request.match_info.http_exception is not None:
                return
            if not isinstance(response, web.Response) or response.status == 101:
                return
            body = response.body if isinstance(response.body, bytes) else None
            sink.extend(checker.check(request.method, resource.canonical, response.status, response.content_type, body))

        app.on_response_prepare.append(check)

    return serve_routes


def pytest_configure(config: pytest.Config) -> None:
    """Before any test module builds an app: both services' factories serve through the checker."""
    import core_ledger.app
    import edge.app

    for module in (core_ledger.app, edge.app):
        module.serve_routes = checking(module.serve_routes, _VIOLATIONS)  # type: ignore[attr-defined]  # a test hook


@pytest.fixture(autouse=True)
def _every_answer_matches_the_openapi_document() -> Iterator[None]:
    _VIOLATIONS.clear()
    yield
    unique = sorted(set(_VIOLATIONS))
    _VIOLATIONS.clear()
    assert not unique, "answers that do not match the OpenAPI document:\n" + "\n".join(unique[:30])
